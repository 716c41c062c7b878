"""Command line: ``wals-roberta <stage> --config FILE [--set key=value ...] [--run-id ID]``
(also ``python -m wals_roberta.jobs.cli``). The one entry point: stage modules import
nothing from here, and this module imports a stage only when it runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

from wals_roberta.jobs.runs.errors import WalsRobertaError

# stage -> (module, function); imported only when the stage runs.
STAGES: dict[str, tuple[str, str]] = {
    "prepare": ("wals_roberta.jobs.prepare", "run"),
    "train": ("wals_roberta.jobs.train_wals", "run"),
    "embed": ("wals_roberta.jobs.embed_items", "run"),
    "project": ("wals_roberta.jobs.project_items", "run"),
    "recommend": ("wals_roberta.jobs.recommend", "run"),
    "evaluate": ("wals_roberta.jobs.evaluate", "run"),
    "publish": ("wals_roberta.jobs.publish", "run"),
    "pipeline": ("wals_roberta.jobs.pipeline", "run"),
    "refresh": ("wals_roberta.jobs.refresh", "run"),
    "tune": ("wals_roberta.jobs.pipeline", "tune_run"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wals-roberta",
        description="Implicit-feedback recommendations on Spark: WALS factors, top-k tables.",
    )
    parser.add_argument("stage", choices=list(STAGES), help="stage to run; pipeline runs all")
    parser.add_argument("--config", required=True, help="YAML config, e.g. conf/demo.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key by its dotted path, e.g. --set wals.rank=128 (repeatable)",
    )
    parser.add_argument(
        "--run-id",
        default=None,
        help="run directory name under <output.root>/runs; prepare and pipeline start a new "
        "one when omitted, other stages use the latest",
    )
    return parser


def stage_function(stage: str) -> Callable[..., Any]:
    module, function = STAGES[stage]
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from wals_roberta.jobs.config import load_config

    try:
        cfg = load_config(args.config, args.overrides)
        from pyspark.sql import SparkSession

        from wals_roberta.jobs.runs.session import build_session

        owns_session = SparkSession.getActiveSession() is None
        spark = build_session(cfg)
        try:
            result = stage_function(args.stage)(spark, cfg, run_id=args.run_id)
        finally:
            if owns_session:
                spark.stop()
    except WalsRobertaError as exc:
        print(f"wals-roberta {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    _print_where(args.stage, result)
    return 0


def _print_where(stage: str, result: Any) -> None:
    if not isinstance(result, dict):
        return
    if "run_dir" in result:
        print(f"run directory: {result['run_dir']}")
    publish = result.get("publish") if stage == "pipeline" else result
    if isinstance(publish, dict) and "path" in publish:
        print(f"published recommendations: {publish['path']}")


if __name__ == "__main__":
    raise SystemExit(main())
