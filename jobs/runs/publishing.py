"""Publishing a run: its recommendations swapped in as the published table, registered in
the metastore, old runs pruned, the run logged to MLflow. Every run ends here (the
``publish`` stage, the pipeline, a refresh). The swap, the registration and the pruning
happen under the output root's lease (:mod:`runs.lease`): a second run on the same root
waits for them (``output.lease.on_held: wait``) or fails at once (``fail``)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.runs import lease, swap, tables, tracking


def publish_run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    """Stage ``publish``: swap the run's recommendations in as the published table, register
    it under ``output.table`` when set, prune old runs when ``output.keep_runs`` is set, and
    log the run to MLflow when ``tracking.mlflow`` is on."""
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    with tables.stage(spark, run_, "publish", cfg) as report:
        # One run at a time swaps, registers and prunes on this root (runs.lease).
        with lease.hold(spark, run_.root, run_.run_id, "publish", cfg.output.lease) as held:
            target = swap.publish(spark, run_, "recommendations", cfg.output.published_name)
            report["path"] = target
            report["rows"]["published"] = spark.read.format(run_.fmt).load(target).count()
            if cfg.output.table is not None:
                held.check()
                swap.register_table(spark, cfg.output.table, run_, "recommendations")
                report["table"] = cfg.output.table
            if cfg.output.keep_runs is not None:
                held.check()
                report["pruned_runs"] = tables.prune_runs(
                    spark,
                    run_.root,
                    cfg.output.keep_runs,
                    protect=run_.run_id,
                    fmt=run_.fmt,
                    expiry_seconds=cfg.output.lease.expiry_seconds,
                )
    tables.update_manifest(spark, run_, published={"path": target, "run_id": run_.run_id})
    lease.mark_done(spark, run_.dir)
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
