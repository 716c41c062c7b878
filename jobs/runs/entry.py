"""Running a stage from a command line: its arguments (``--config``, ``--set``,
``--run-id``), the session, and errors as one line with exit status 2.

Used by the CLI (``wals-roberta <stage>``, ``python -m wals_roberta.jobs.cli``) and by each
stage module's own ``main()`` (``python -m wals_roberta.jobs.<module>``), so that neither
imports the other.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from wals_roberta.jobs.runs.errors import WalsRobertaError


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments every stage takes."""
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


def run_command(stage: str, function: Callable[..., Any], args: argparse.Namespace) -> int:
    """Load the config, build (or reuse) the session, run ``function(spark, cfg,
    run_id=...)``; 0, or 2 with the error's one line on stderr."""
    from wals_roberta.jobs.config import load_config

    cfg = None
    try:
        cfg = load_config(args.config, args.overrides)
        from pyspark.sql import SparkSession

        from wals_roberta.jobs.runs.session import build_session, quiet_task_failure_logs

        owns_session = SparkSession.getActiveSession() is None
        spark = build_session(cfg)
        if owns_session:
            quiet_task_failure_logs(spark)
        try:
            result = function(spark, cfg, run_id=args.run_id)
        finally:
            if owns_session:
                spark.stop()
    except WalsRobertaError as exc:
        print(f"wals-roberta {stage}: error: {_with_key(exc, cfg)}", file=sys.stderr)
        return 2
    except Exception as exc:
        # A storage failure no stage step named (a Spark write deep in a stage) is still
        # one line; anything else is a defect and keeps its trace.
        from wals_roberta.jobs.runs.storage_faults import unnamed_storage_error

        named = unnamed_storage_error(cfg, exc) if cfg is not None else None
        if named is None:
            raise
        print(f"wals-roberta {stage}: error: {named}", file=sys.stderr)
        return 2
    print_where(stage, result)
    return 0


def _with_key(exc: WalsRobertaError, cfg: Any) -> WalsRobertaError:
    """A storage error with the config key its path came from (``output.root``, ...)."""
    from wals_roberta.jobs.runs.errors import StorageError
    from wals_roberta.jobs.runs.storage_faults import config_key

    if isinstance(exc, StorageError) and exc.key is None and cfg is not None:
        exc.key = config_key(cfg, exc.path)
    return exc


def stage_main(stage: str, function: Callable[..., Any], argv: list[str] | None) -> int:
    """A stage module's ``main()``: its arguments alone, then :func:`run_command`."""
    parser = add_arguments(
        argparse.ArgumentParser(
            prog=f"wals-roberta {stage}", description=f"Run the {stage} stage of wals-roberta."
        )
    )
    return run_command(stage, function, parser.parse_args(argv))


def print_where(stage: str, result: Any) -> None:
    """Where the run directory and the published lists are, from a stage's result."""
    if not isinstance(result, dict):
        return
    if "run_dir" in result:
        print(f"run directory: {result['run_dir']}")
    publish = result.get("publish") if stage == "pipeline" else result
    if isinstance(publish, dict) and "path" in publish:
        print(f"published recommendations: {publish['path']}")
