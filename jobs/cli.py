"""Command line: ``wals-roberta <stage> --config FILE [--set key=value ...] [--run-id ID]``
(also ``python -m wals_roberta.jobs.cli``). Stages import nothing from here (each stage
module's own ``main()`` goes through :mod:`runs.entry`, as this one does), and this module
imports a stage only when it runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from wals_roberta.jobs.runs.entry import add_arguments, run_command

# stage -> (module, function); imported only when the stage runs.
STAGES: dict[str, tuple[str, str]] = {
    "prepare": ("wals_roberta.jobs.prepare", "run"),
    "train": ("wals_roberta.jobs.train_wals", "run"),
    "finetune": ("wals_roberta.jobs.finetune", "run"),
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
    return add_arguments(parser)


def stage_function(stage: str) -> Callable[..., Any]:
    module, function = STAGES[stage]
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.stage, stage_function(args.stage), args)


if __name__ == "__main__":
    raise SystemExit(main())
