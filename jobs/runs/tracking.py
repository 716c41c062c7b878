"""Optional MLflow logging of a run (``tracking.mlflow``, extra ``wals-roberta[mlflow]``).

Called where every run ends, the ``publish`` stage (after ``pipeline``, after a scheduler's
last task, after ``refresh``): the metrics and report of ``evaluate`` exist by then and the
manifest holds every stage's seconds. One MLflow run per run id, found again by its tag, so
publishing the same run twice adds to that MLflow run instead of making a second one.

Logged: the flattened config as params (``wals.rank``), each segment's metrics with the model
as ``model`` and baselines by name (``all.model.recall_at_20``,
``cold.random.recall_at_20``), the model's ratios to its baselines, segment sizes, stage
seconds and row counts (``stage.train.seconds``, ``stage.train.rows.user_factors``), and
``report.md``, ``recall_at_k.svg``, ``metrics.json``, ``manifest.json`` as artifacts (copied
from the run directory, wherever it lives, to a local temporary directory first).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from wals_roberta.jobs.config import MLFLOW_MISSING, Config
from wals_roberta.jobs.runs import report, storage, tables
from wals_roberta.jobs.runs.errors import ConfigError, first_line

RUN_ID_TAG = "wals_roberta.run_id"
ARTIFACTS = (report.REPORT, report.PLOT, tables.METRICS, tables.MANIFEST)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"wals": {"rank": 8}}`` -> ``{"wals.rank": 8}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The config as MLflow params: dotted keys, strings as they are, other values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flatten(config).items()}


def metric_name(name: str) -> str:
    """MLflow metric names take no ``@``: ``recall@20`` -> ``recall_at_20``."""
    return name.replace("@", "_at_")


def run_metrics(metrics: Mapping[str, Any] | None, manifest: Mapping[str, Any]) -> dict[str, float]:
    """Every number worth plotting across runs, by dotted name (see the module docstring)."""
    out: dict[str, float] = {}
    for segment, result in ((metrics or {}).get("segments") or {}).items():
        for i, (method, values) in enumerate(result["methods"].items()):
            label = "model" if i == 0 else method
            for key, value in values.items():
                out[f"{segment}.{label}.{metric_name(key)}"] = value
        for key, value in result.items():
            if key in ("users", "relevant", "items"):
                out[f"{segment}.{key}"] = value
            elif key.startswith(("lift_", "trained_")):
                out.update({f"{segment}.{key}.{metric_name(k)}": v for k, v in value.items()})
    for stage, entry in (manifest.get("stages") or {}).items():
        out[f"stage.{stage}.seconds"] = entry.get("seconds")
        out[f"stage.{stage}.spark_jobs"] = entry.get("spark_jobs")  # None on Connect: left out
        for table, rows in (entry.get("rows") or {}).items():
            out[f"stage.{stage}.rows.{table}"] = rows
    return {
        k: float(v)
        for k, v in out.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def model_tags(metrics: Mapping[str, Any] | None) -> dict[str, str]:
    """Which method is ``model`` in each segment (``wals``, ``fold_in``)."""
    segments = (metrics or {}).get("segments") or {}
    return {f"{s}.model": next(iter(r["methods"])) for s, r in segments.items() if r["methods"]}


def log_run(spark: SparkSession, cfg: Config, run: tables.Run) -> str | None:
    """Log the run to MLflow when ``tracking.mlflow`` is on; returns the MLflow run id."""
    if not cfg.tracking.mlflow:
        return None
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(MLFLOW_MISSING) from None
    manifest = tables.read_manifest(spark, run)
    metrics = manifest.get("metrics")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    try:
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(cfg.tracking.experiment)
        )
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run.run_id}'", max_results=1
        )
        mlflow_run_id = (
            found[0].info.run_id
            if found
            else client.create_run(
                experiment_id, run_name=run.run_id, tags={RUN_ID_TAG: run.run_id}
            ).info.run_id
        )
        now = int(time.time() * 1000)
        tags = {RUN_ID_TAG: run.run_id, "wals_roberta.run_dir": run.dir, **model_tags(metrics)}
        client.log_batch(
            mlflow_run_id,
            metrics=[
                Metric(k, v, now, 0) for k, v in sorted(run_metrics(metrics, manifest).items())
            ],
            params=[Param(k, v) for k, v in sorted(config_params(cfg.to_dict()).items())],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        with tempfile.TemporaryDirectory(prefix="wals-roberta-artifacts-") as local:
            for name in ARTIFACTS:
                if storage.exists(spark, run.path(name)):
                    text = storage.read_text(spark, run.path(name))
                    (Path(local) / name).write_text(text + "\n", encoding="utf-8")
            client.log_artifacts(mlflow_run_id, local)
        client.set_terminated(mlflow_run_id)
    except ConfigError:
        raise
    except Exception as exc:  # the lists are published already; say how to log again
        raise ConfigError(
            f"tracking.uri: logging run {run.run_id} to MLflow "
            f"({cfg.tracking.uri or 'default tracking URI'}) failed: {first_line(exc)}; the "
            "lists are published, run `publish` again with the same --run-id to log it"
        ) from None
    return mlflow_run_id
