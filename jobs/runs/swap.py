"""The published table: a run's table swapped in atomically at
``<output.root>/<published_name>``, a swap cut off between its renames undone, and the
metastore name moved to follow it (``output.table``). Called by :mod:`runs.publishing`
under the output root's lease."""

from __future__ import annotations

import sys
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from wals_roberta.jobs.runs import storage
from wals_roberta.jobs.runs.errors import ConfigError, RunStateError, first_line
from wals_roberta.jobs.runs.storage_faults import guarded
from wals_roberta.jobs.runs.tables import Run, read_layer, read_table

# A published table up to this size is copied file by file through the driver (10^7 list
# rows are about 55 MB); a larger one is rewritten in parallel by the executors.
COPY_FILES_BYTES = 1 << 30


def publish(spark: SparkSession, run: Run, table: str, published_name: str) -> str:
    """Copy a run table to ``<root>/<published_name>`` so readers never see it half written.

    Parquet: the copy is written under a staging name and swapped in by two renames; the
    previous version is removed only after the new one is in place, and a swap cut off
    between the renames is undone by :func:`recover_published` before anything else. Delta:
    one overwrite transaction on the published table. Parquet files are immutable, so a
    whole table (not a layer) of up to COPY_FILES_BYTES is copied file by file (no decode
    and encode, the bytes pass through the driver); a larger one is rewritten by the
    executors, so no single process streams many gigabytes.
    """
    target = storage.join(run.root, published_name)
    if run.fmt == "delta":
        read_table(spark, run, table).write.format("delta").mode("overwrite").option(
            "overwriteSchema", "true"
        ).save(target)
        return target
    recover_published(spark, run.root, published_name)
    staging = storage.join(run.root, f".{published_name}.staging-{run.run_id}")
    previous = storage.join(run.root, f".{published_name}.previous-{run.run_id}")
    storage.delete(spark, staging)
    data = read_table(spark, run, table)  # raises when missing, naming its stage
    try:
        if (
            read_layer(spark, run, table) is None
            and storage.size(spark, run.path(table)) <= COPY_FILES_BYTES
        ):
            storage.copy(spark, run.path(table), staging)
        else:
            with guarded(staging, "write"):
                data.write.format(run.fmt).mode("overwrite").save(staging)
        if not storage.exists(spark, storage.join(staging, "_SUCCESS")):
            raise RunStateError(f"the staged copy {staging} has no _SUCCESS marker; not published")
    except BaseException:
        _quietly(storage.delete, spark, staging)  # e.g. frees a full disk; target untouched
        raise
    if storage.exists(spark, target):
        storage.delete(spark, previous)
        storage.rename(spark, target, previous)
    try:
        storage.rename(spark, staging, target)
    except BaseException:
        # Put the previous table back now rather than at the next run's recovery.
        if not storage.exists(spark, target) and storage.exists(spark, previous):
            _quietly(storage.rename, spark, previous, target)
        _quietly(storage.delete, spark, staging)
        raise
    storage.delete(spark, previous)
    return target


def _quietly(operation: Any, *args: Any) -> None:
    """A clean-up step after a failure: its own failure must not hide the first one."""
    try:
        operation(*args)
    except Exception as exc:  # noqa: BLE001 - reported, the original error follows
        print(f"[publish] clean-up {operation.__name__} failed: {exc}", file=sys.stderr)


def register_table(spark: SparkSession, name: str, run: Run, table: str) -> None:
    """Make the metastore table ``name`` (``output.table``) read the run's ``table`` (its
    complete recommendations, never written again).

    Created once as an external table; each later publish moves it with one ``ALTER TABLE
    ... SET LOCATION``, a single metastore update, so a reader of ``spark.table(name)``
    sees the old lists or the new ones on either kind of session (the published path's swap
    is two renames). ``REFRESH TABLE`` then drops the file listing Spark cached. A table of
    that name whose location is not under the output root is left alone and reported.
    """
    quoted = ".".join(f"`{part}`" for part in name.split("."))  # the name is validated
    path = run.path(table)
    location = path.replace("\\", "\\\\").replace("'", "\\'")
    try:
        if spark.catalog.tableExists(name):
            current = _table_location(spark, quoted)
            root = storage.qualified(spark, run.root) + "/"
            if current is None or not storage.qualified(spark, current).startswith(root):
                raise ConfigError(
                    f"output.table: {name} already exists at {current or 'no location'}, "
                    f"not under the output root {run.root}; drop it or choose another name"
                )
            spark.sql(f"ALTER TABLE {quoted} SET LOCATION '{location}'")
        else:
            spark.sql(f"CREATE TABLE IF NOT EXISTS {quoted} USING {run.fmt} LOCATION '{location}'")
        spark.sql(f"REFRESH TABLE {quoted}")
    except AnalysisException as exc:
        raise ConfigError(f"output.table: cannot register {name}: {first_line(exc)}") from None


def _table_location(spark: SparkSession, quoted: str) -> str | None:
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {quoted}").collect()
    return next((r["data_type"] for r in rows if r["col_name"] == "Location"), None)


def recover_published(spark: SparkSession, root: str, published_name: str) -> str | None:
    """Put the previous published table back when a swap was cut off between its two
    renames (the target missing, a ``.previous-*`` copy present). Returns what it restored."""
    target = storage.join(root, published_name)
    if storage.exists(spark, target):
        return None
    prefix = f".{published_name}.previous-"
    leftovers = [n for n in storage.list_names(spark, root) if n.startswith(prefix)]
    if not leftovers:
        return None
    # A run id starts with its start time, so the newest run's copy sorts last.
    restored = storage.join(root, leftovers[-1])
    storage.rename(spark, restored, target)
    print(f"[publish] restored {target} from {restored}", file=sys.stderr, flush=True)
    return restored
