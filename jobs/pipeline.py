"""Stage ``pipeline``: every stage in one SparkSession against one run directory, then the
run's recommendations published to ``<output.root>/<output.published_name>``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession
from wals_roberta.jobs import embed_items, evaluate, prepare, project_items, recommend, train_wals
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.runs import tables, tracking
from wals_roberta.jobs.runs.errors import RunStateError


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
            tables.register_table(spark, cfg.output.table, target, run_.fmt)
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


def stages(cfg: Config) -> list[tuple[str, Callable[..., dict[str, Any]]]]:
    """The pipeline's stages for this config, in order."""
    steps: list[tuple[str, Callable[..., dict[str, Any]]]] = [
        ("prepare", prepare.run),
        ("train", train_wals.run),
    ]
    if cfg.data.items.text_template is not None:
        steps += [("embed", embed_items.run), ("project", project_items.run)]
    steps.append(("recommend", recommend.run))
    if cfg.split.holdout != "none":
        steps.append(("evaluate", evaluate.run))
    steps.append(("publish", publish_run))
    return steps


def completed_stages(manifest: dict[str, Any], cfg: Config, run_id: str) -> set[str]:
    """Stages a re-run of ``run_id`` may skip: complete under the same config. A run started
    with another config is refused rather than mixed."""
    done = {n for n, s in manifest.get("stages", {}).items() if s.get("status") == "complete"}
    if not manifest.get("stages"):
        return set()
    before = json.loads(json.dumps(manifest.get("config", {})))
    now = json.loads(json.dumps(cfg.to_dict()))
    changed = sorted(_changed_keys(before, now))
    if changed:
        raise RunStateError(
            f"run {run_id} was started with a different config (changed: "
            f"{', '.join(changed[:5])}); resume it with the same config, or start a new run "
            "(another --run-id, or none)"
        )
    return done


def _changed_keys(before: Any, now: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ; keys the earlier config did not have yet (a newer
    version of this package added them) are not a change."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [
            k for key in before for k in _changed_keys(before[key], now.get(key), f"{prefix}{key}.")
        ]
    return [] if before == now else [prefix.rstrip(".")]


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    """Every stage in order. Re-running an existing run id resumes it: stages complete in its
    manifest are skipped up to the first one that is not, and everything from there runs
    again (overwriting whatever a killed attempt left)."""
    run_ = tables.open_run(spark, cfg, run_id, create=True)
    done = completed_stages(tables.read_manifest(spark, run_), cfg, run_.run_id)
    results: dict[str, Any] = {"run_id": run_.run_id, "run_dir": run_.dir}
    resuming = True
    for name, step in stages(cfg):
        if resuming and name in done:
            print(f"[{name}] skipped: complete in run {run_.run_id}", file=sys.stderr, flush=True)
            results[name] = tables.read_manifest(spark, run_)["stages"][name]
            continue
        resuming = False
        results[name] = step(spark, cfg, run_.run_id)
    return results


def main(argv: list[str] | None = None) -> int:
    from wals_roberta.jobs.cli import run_stage

    return run_stage("pipeline", argv)


if __name__ == "__main__":
    raise SystemExit(main())
