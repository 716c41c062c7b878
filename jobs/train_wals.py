"""Stage ``train``: implicit ALS (WALS) on the training interactions.

Writes ``user_factors(user_idx, user_id, factors)``, ``item_factors(item_idx, item_id,
factors)`` and, with ``wals.solver: mllib`` (Spark MLlib's ALS, the default), the saved
``ALSModel`` under ``als_model``; ``wals.solver: cg`` solves the same objective by conjugate
gradient (:mod:`model.wals_cg`).
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.wals import (
    checkpoint_dir_for,
    factors_with_ids,
    fit_cg,
    fit_wals,
)
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.entry import stage_main


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    with tables.stage(spark, run_, "train", cfg) as report:
        interactions = tables.read_table(spark, run_, "interactions")
        train = interactions.filter(F.col(C.SPLIT) == C.TRAIN)
        checkpoints = checkpoint_dir_for(cfg, run_)
        if cfg.wals.solver == "cg":
            user_vectors, item_vectors = fit_cg(train, cfg.wals, checkpoints)
        else:
            model = fit_wals(train, cfg.wals, checkpoints)
            model.write().overwrite().save(run_.path("als_model"))
            user_vectors, item_vectors = model.userFactors, model.itemFactors
        users = tables.read_table(spark, run_, "users")
        items = tables.read_table(spark, run_, "items")
        user_factors = factors_with_ids(user_vectors, users, idx_col=C.USER_IDX, id_col=C.USER_ID)
        item_factors = factors_with_ids(item_vectors, items, idx_col=C.ITEM_IDX, id_col=C.ITEM_ID)
        report["rows"]["user_factors"] = tables.write_table(
            spark, run_, "user_factors", user_factors
        )
        report["rows"]["item_factors"] = tables.write_table(
            spark, run_, "item_factors", item_factors
        )
        report["rank"] = cfg.wals.rank
        storage.delete(spark, checkpoints)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.train_wals``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("train", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
