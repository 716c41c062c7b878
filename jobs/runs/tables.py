"""Run directories, table I/O, the run manifest, atomic publishing and the metastore name.

Layout: ``<output.root>/runs/<run_id>/<table>/`` for each table, ``manifest.json`` beside
them, and the published list at ``<output.root>/<published_name>/``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.config.schema import LeaseConfig
from wals_roberta.jobs.runs import lease, storage
from wals_roberta.jobs.runs.errors import ConfigError, RunStateError
from wals_roberta.jobs.runs.session import JobCounter, is_connect, small
from wals_roberta.jobs.runs.storage_faults import check_writable, guarded

MANIFEST = "manifest.json"
METRICS = "metrics.json"

# Which stage writes each table: named in the error when a table is missing.
PRODUCER = {
    "users": "prepare",
    "items": "prepare",
    "interactions": "prepare",
    "user_factors": "train",
    "item_factors": "train",
    "item_embeddings": "embed",
    "item_vectors": "project",
    "projection": "project",
    "recommendations": "recommend",
    "fold_in_factors": "recommend",
}


@dataclass(frozen=True)
class Run:
    """One run directory under the output root."""

    root: str
    run_id: str
    fmt: str

    @property
    def dir(self) -> str:
        return storage.join(self.root, "runs", self.run_id)

    def path(self, name: str) -> str:
        return storage.join(self.dir, name)


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent starts."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def open_run(spark: SparkSession, cfg: Config, run_id: str | None, create: bool) -> Run:
    """The run to work in: ``run_id`` if given, a new one if ``create``, else the latest."""
    root = storage.normalize(cfg.output.root)
    if cfg.output.format == "delta":
        extensions = spark.conf.get("spark.sql.extensions", "") or ""
        if "delta" not in extensions.lower():
            raise ConfigError(
                "output.format=delta needs delta-spark on the session "
                "(spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension); use parquet"
            )
    if run_id is None:
        if create:
            run_id = new_run_id()
        else:
            runs = storage.list_names(spark, storage.join(root, "runs"))
            if not runs:
                raise RunStateError(
                    f"no run under {root}/runs: run `prepare` (or `pipeline`) first, "
                    "or pass --run-id"
                )
            run_id = runs[-1]
    if "/" in run_id or run_id.startswith("."):
        raise ConfigError(f"--run-id: must be a plain name without '/', got {run_id!r}")
    check_writable(spark, root)  # before any work, not at the first write an hour in
    return Run(root=root, run_id=run_id, fmt=cfg.output.format)


def write_table(spark: SparkSession, run: Run, name: str, df: DataFrame) -> int:
    """Overwrite one table of the run; returns its row count (see :func:`write_counted`)."""
    return write_counted(spark, run, name, df)["rows"]


def write_counted(
    spark: SparkSession, run: Run, name: str, df: DataFrame, **counts: Column
) -> dict[str, int]:
    """Overwrite one table of the run; returns ``rows``, its row count, and each of
    ``counts`` (aggregates over the rows, e.g. ``F.count_if(...)``).

    On a classic session they are counted as the rows are written, in the write's own job
    (an observation), instead of by reading the table back; on Spark Connect, by one
    aggregation over the table read back.
    """
    path = run.path(name)
    aggs = [F.count(F.lit(1)).alias("rows"), *(agg.alias(k) for k, agg in counts.items())]
    with guarded(path, "write"):
        if is_connect(spark):
            df.write.format(run.fmt).mode("overwrite").save(path)
            observed = spark.read.format(run.fmt).load(path).agg(*aggs).first().asDict()
        else:
            observation = Observation(f"written-{name}-{uuid.uuid4().hex[:8]}")
            df.observe(observation, *aggs).write.format(run.fmt).mode("overwrite").save(path)
            observed = observation.get
    return {key: int(value or 0) for key, value in observed.items()}


def has_table(spark: SparkSession, run: Run, name: str) -> bool:
    return storage.exists(spark, run.path(name))


def read_table(spark: SparkSession, run: Run, name: str) -> DataFrame:
    """The whole table; a layer (see :func:`write_layer`) is read over its base."""
    if not has_table(spark, run, name):
        producer = PRODUCER.get(name, "an earlier")
        raise RunStateError(
            f"table {name!r} is missing in run {run.run_id} ({run.dir}): "
            f"run the `{producer}` stage first"
        )
    df = spark.read.format(run.fmt).load(run.path(name))
    layer = read_layer(spark, run, name)
    if layer is None:
        return df
    base = Run(root=run.root, run_id=layer["base_run"], fmt=run.fmt)
    if not has_table(spark, base, name):
        raise RunStateError(
            f"table {name!r} of run {run.run_id} holds only the rows that changed since run "
            f"{base.run_id}, and that run's table is gone ({base.dir}); start from a full run"
        )
    return overlay(read_table(spark, base, name), df, layer["keys"], layer["layer_rows"])


# --- layers ---------------------------------------------------------------------------
# A refresh changes a small share of a large table. Instead of rewriting it, the run can
# write a layer: the changed and new rows only, with a marker naming the base run and the
# key columns. Readers get the base's rows whose keys the layer does not hold, plus the
# layer's rows; a base may itself be a layer, up to MAX_LAYERS deep, after which the next
# writer compacts (writes the whole table). Runs that others build on are kept by
# prune_runs. Parquet only: a Delta table is rewritten (its log is its own layering).
LAYER = "_layer.json"  # Spark skips files starting with "_" when reading the table
MAX_LAYERS = 7


def read_layer(spark: SparkSession, run: Run, name: str) -> dict[str, Any] | None:
    """The layer marker of ``run``'s table ``name``, or None for a whole table."""
    path = storage.join(run.path(name), LAYER)
    if run.fmt != "parquet" or not storage.exists(spark, path):
        return None
    return json.loads(storage.read_text(spark, path))


def overlay(
    base: DataFrame, layer: DataFrame, keys: list[str], layer_rows: int | None
) -> DataFrame:
    """``base`` with the rows of ``layer`` in place of the base rows with the same keys; the
    layer's keys are broadcast when ``layer_rows`` is known to be small."""
    replaced = layer.select(*keys)
    if layer_rows is not None:
        replaced = small(replaced, layer_rows)
    return base.join(replaced, keys, "left_anti").unionByName(layer.select(*base.columns))


def write_layer(
    spark: SparkSession, run: Run, name: str, rows: DataFrame, base: Run, keys: list[str]
) -> tuple[int, int]:
    """Write ``rows`` (the table's changed and new rows, one per key) as ``run``'s table
    ``name`` over ``base``'s; the whole table instead when layers are not possible (Delta)
    or ``base`` is already MAX_LAYERS deep. Returns the rows written and the layer depth
    (0: the whole table was written)."""
    base_layer = read_layer(spark, base, name)
    depth = 1 + (base_layer["depth"] if base_layer else 0)
    if run.fmt != "parquet" or depth > MAX_LAYERS:
        whole = overlay(read_table(spark, base, name), rows, keys, None)
        return write_table(spark, run, name, whole), 0
    # Written aside with its marker and renamed into place: a table without its marker
    # would read as if it were whole.
    partial = f"{name}.partial"
    written = write_table(spark, run, partial, rows)
    marker = {"base_run": base.run_id, "keys": keys, "depth": depth, "layer_rows": written}
    storage.write_text(spark, storage.join(run.path(partial), LAYER), json.dumps(marker))
    storage.delete(spark, run.path(name))
    storage.rename(spark, run.path(partial), run.path(name))
    return written, depth


def base_runs(spark: SparkSession, run: Run) -> set[str]:
    """The runs whose tables ``run``'s layers read (directly or through other layers)."""
    out: set[str] = set()
    for name in storage.list_names(spark, run.dir):
        layer = read_layer(spark, run, name)
        if layer is not None and layer["base_run"] not in out:
            out.add(layer["base_run"])
            out |= base_runs(spark, Run(run.root, layer["base_run"], run.fmt))
    return out


# --- manifest -------------------------------------------------------------------------


def read_manifest(spark: SparkSession, run: Run) -> dict[str, Any]:
    """The run's manifest. A writer killed between removing the old file and renaming the
    new one in leaves only the complete ``.tmp`` copy; it is used then."""
    path = run.path(MANIFEST)
    for candidate in (path, path + ".tmp"):
        if storage.exists(spark, candidate):
            try:
                return json.loads(storage.read_text(spark, candidate))
            except json.JSONDecodeError:
                if candidate == path:
                    raise RunStateError(
                        f"the manifest of run {run.run_id} is not valid JSON ({path}); "
                        "start a new run"
                    ) from None
    return {"run_id": run.run_id, "stages": {}}


def update_manifest(spark: SparkSession, run: Run, **sections: Any) -> dict[str, Any]:
    """Merge top-level sections into the manifest (the driver is its only writer)."""
    manifest = read_manifest(spark, run)
    manifest.update(sections)
    storage.write_text(spark, run.path(MANIFEST), json.dumps(manifest, indent=2, default=str))
    return manifest


def versions() -> dict[str, str]:
    import numpy
    import pandas
    import pyarrow
    import pyspark

    from wals_roberta.jobs import __version__

    return {
        "wals_roberta": __version__,
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
    }


@contextmanager
def stage(
    spark: SparkSession, run: Run, name: str, cfg: Config, reads: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    """Time a stage, print its start and finish lines, record it in the manifest.

    The body fills the yielded dict (``rows``: table -> row count, anything else useful).
    ``spark_jobs`` is the number of Spark jobs the stage ran (None on Spark Connect, see
    :class:`~runs.session.JobCounter`). While it runs, the run's heartbeat is kept fresh
    (:func:`runs.lease.heartbeat`), so retention leaves the run, and the runs it ``reads``,
    alone.
    """
    with lease.heartbeat(spark, run.dir, name, cfg.output.lease.expiry_seconds, reads):
        with _timed_stage(spark, run, name, cfg) as report:
            yield report


@contextmanager
def _timed_stage(spark: SparkSession, run: Run, name: str, cfg: Config) -> Iterator[dict[str, Any]]:
    started = time.time()
    print(f"[{name}] start  run={run.run_id}", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"rows": {}}
    manifest = read_manifest(spark, run)
    if "config" not in manifest:
        update_manifest(spark, run, config=cfg.to_dict(), versions=versions())
    # A stage that starts again is no longer complete until it finishes again, so a run
    # killed here is never resumed past half-written tables.
    _record_stage(spark, run, name, started, {"status": "running"})
    jobs = JobCounter(spark, name)
    try:
        try:
            yield report
        except BaseException as exc:
            failed = {"status": "failed", "error": str(exc)[:500], "spark_jobs": jobs.count()}
            _record_stage(spark, run, name, started, failed)
            raise
        report["status"] = "complete"
        report["spark_jobs"] = jobs.count()
    finally:
        jobs.close()
    seconds = _record_stage(spark, run, name, started, report)
    rows = ", ".join(f"{t}={n:,}" for t, n in report["rows"].items())
    print(
        f"[{name}] done   {seconds:.1f} s  {report['spark_jobs']} Spark jobs  {rows}",
        file=sys.stderr,
        flush=True,
    )


def _record_stage(
    spark: SparkSession, run: Run, name: str, started: float, entry: dict[str, Any]
) -> float:
    seconds = round(time.time() - started, 3)
    manifest = read_manifest(spark, run)
    stages = manifest.get("stages", {})
    stages[name] = {**entry, "seconds": seconds, "finished_at": _utc_now()}
    update_manifest(spark, run, stages=stages)
    return seconds


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def prune_runs(
    spark: SparkSession,
    root: str,
    keep: int,
    protect: str,
    fmt: str = "parquet",
    expiry_seconds: float = LeaseConfig.expiry_seconds,
) -> list[str]:
    """Delete all but the ``keep`` newest run directories (by name, i.e. start time for
    generated ids), never ``protect`` (the run just published), a run still being written
    (its heartbeat renewed within ``expiry_seconds``, :func:`runs.lease.being_written`),
    the runs such a run reads, nor a run whose tables a kept run's layers read. Returns
    the deleted ids. Run it under the output root's lease (:func:`runs.lease.hold`)."""
    runs = storage.list_names(spark, storage.join(root, "runs"))
    kept = {protect, *runs[max(len(runs) - keep, 0) :]}
    now = time.time()
    for run_id in runs[: max(len(runs) - keep, 0)]:
        writing, reads = lease.being_written(
            spark, storage.join(root, "runs", run_id), expiry_seconds, now
        )
        if writing:
            kept |= {run_id, *reads}
    needed = set().union(*(base_runs(spark, Run(root, r, fmt)) for r in kept if r in runs))
    doomed = [r for r in runs[: max(len(runs) - keep, 0)] if r not in kept | needed]
    for run_id in doomed:
        storage.delete(spark, storage.join(root, "runs", run_id))
    return doomed
