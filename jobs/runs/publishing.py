"""Publishing a run: its recommendations swapped in as the published table, registered in
the metastore, old runs pruned, the run logged to MLflow. Every run ends here (the
``publish`` stage, the pipeline, a refresh)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.runs import tables, tracking


def publish_run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    """Stage ``publish``: swap the run's recommendations in as the published table, register
    it under ``output.table`` when set, prune old runs when ``output.keep_runs`` is set, and
    log the run to MLflow when ``tracking.mlflow`` is on."""
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    with tables.stage(spark, run_, "publish", cfg) as report:
        target = tables.publish(spark, run_, "recommendations", cfg.output.published_name)
        report["path"] = target
        report["rows"]["published"] = spark.read.format(run_.fmt).load(target).count()
        if cfg.output.table is not None:
            tables.register_table(spark, cfg.output.table, run_, "recommendations")
            report["table"] = cfg.output.table
        if cfg.output.keep_runs is not None:
            report["pruned_runs"] = tables.prune_runs(
                spark, run_.root, cfg.output.keep_runs, protect=run_.run_id, fmt=run_.fmt
            )
    tables.update_manifest(spark, run_, published={"path": target, "run_id": run_.run_id})
    # Publish is where every run ends (pipeline, one task per stage, refresh): the metrics, the
    # report and every stage's seconds are in the run directory by now.
    mlflow_run_id = tracking.log_run(spark, cfg, run_)
    if mlflow_run_id is not None:
        report["mlflow_run_id"] = mlflow_run_id
        tables.update_manifest(
            spark,
            run_,
            tracking={"mlflow_run_id": mlflow_run_id, "experiment": cfg.tracking.experiment},
        )
    return report
