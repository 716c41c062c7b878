"""Stage ``embed``: item-text embeddings on executors, with a cache across runs.

Writes ``item_embeddings(item_idx, item_id, text_hash, embedding array<float>)``; the
encoding and its cache across runs are :mod:`model.embedding`.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.model.embedding import embed
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.errors import ConfigError


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    if cfg.data.items.text_template is None:
        raise ConfigError(
            "embed: data.items.text_template is not set, so items have no text; set it, e.g. "
            '"{title} ({year}). Genres: {genres}", and run prepare again'
        )
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    with tables.stage(spark, run_, "embed", cfg) as report:
        embed(spark, cfg, run_, report)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.embed_items``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("embed", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
