"""Stage ``publish``: the run's ``recommendations`` become the published table,
``<output.root>/<output.published_name>`` (and ``output.table`` in the metastore when set).

The swap, the registration, the pruning of old runs and the MLflow log are
:func:`runs.publishing.publish_run`, the step every run ends with (pipeline, one task per
stage, refresh).
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.publishing import publish_run


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    return publish_run(spark, cfg, run_id)


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.publish``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("publish", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
