"""Stage ``pipeline``: every stage in one SparkSession against one run directory, then the
run's recommendations published to ``<output.root>/<output.published_name>``. The one module
that puts stages in sequence (``tune`` on a new run is prepare, then tune)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from wals_roberta.jobs import (
    embed_items,
    evaluate,
    finetune,
    prepare,
    project_items,
    publish,
    recommend,
    train_wals,
    tune,
)
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.errors import RunStateError


def stages(cfg: Config) -> list[tuple[str, Callable[..., dict[str, Any]]]]:
    """The pipeline's stages for this config, in order."""
    steps: list[tuple[str, Callable[..., dict[str, Any]]]] = [
        ("prepare", prepare.run),
        ("train", train_wals.run),
    ]
    if cfg.data.items.text_template is not None:
        if cfg.encoder.finetune.enabled is not False:
            steps.append(("finetune", finetune.run))
        steps += [("embed", embed_items.run), ("project", project_items.run)]
    steps.append(("recommend", recommend.run))
    if cfg.split.holdout != "none":
        steps.append(("evaluate", evaluate.run))
    steps.append(("publish", publish.run))
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


def tune_run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    """``wals-roberta tune``: tune on a prepared run (``--run-id``), or prepare a new one
    first."""
    if run_id is None:
        run_id = tables.open_run(spark, cfg, None, create=True).run_id
        prepare.run(spark, cfg, run_id)
    return tune.run(spark, cfg, run_id)


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.pipeline``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("pipeline", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
