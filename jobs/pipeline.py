"""Stage ``pipeline``: every stage in one SparkSession against one run directory, then the
run's recommendations published to ``<output.root>/<output.published_name>``."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from jobs import embed_items, evaluate, prepare, project_items, recommend, tables, train_wals
from jobs.config import Config


def publish_run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    """Stage ``publish``: swap the run's recommendations in as the published table."""
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    with tables.stage(spark, run_, "publish", cfg) as report:
        target = tables.publish(spark, run_, "recommendations", cfg.output.published_name)
        report["path"] = target
        report["rows"]["published"] = spark.read.format(run_.fmt).load(target).count()
    tables.update_manifest(spark, run_, published={"path": target, "run_id": run_.run_id})
    return report


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    run_ = tables.open_run(spark, cfg, run_id, create=True)
    results: dict[str, Any] = {"run_id": run_.run_id, "run_dir": run_.dir}
    results["prepare"] = prepare.run(spark, cfg, run_.run_id)
    results["train"] = train_wals.run(spark, cfg, run_.run_id)
    if cfg.data.items.text_template is not None:
        results["embed"] = embed_items.run(spark, cfg, run_.run_id)
        results["project"] = project_items.run(spark, cfg, run_.run_id)
    results["recommend"] = recommend.run(spark, cfg, run_.run_id)
    if cfg.split.holdout != "none":
        results["evaluate"] = evaluate.run(spark, cfg, run_.run_id)
    results["publish"] = publish_run(spark, cfg, run_.run_id)
    return results


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import run_stage

    return run_stage("pipeline", argv)


if __name__ == "__main__":
    raise SystemExit(main())
