"""Stage ``train``: Spark MLlib implicit ALS (WALS) on the training interactions.

Writes ``user_factors(user_idx, user_id, factors)``, ``item_factors(item_idx, item_id,
factors)`` and the saved ``ALSModel`` under ``als_model``.
"""

from __future__ import annotations

from typing import Any

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import columns as C
from jobs import storage, tables
from jobs.config import Config, WalsConfig


def build_als(w: WalsConfig) -> ALS:
    """MLlib ALS with implicit preferences: confidence c = 1 + alpha * rating."""
    return ALS(
        rank=w.rank,
        maxIter=w.iterations,
        regParam=w.reg,
        alpha=w.alpha,
        implicitPrefs=True,
        numUserBlocks=w.user_blocks,
        numItemBlocks=w.item_blocks,
        nonnegative=w.nonnegative,
        checkpointInterval=w.checkpoint_interval,
        seed=w.seed,
        userCol=C.USER_IDX,
        itemCol=C.ITEM_IDX,
        ratingCol=C.RATING,
        coldStartStrategy="drop",
        intermediateStorageLevel="MEMORY_AND_DISK",
        finalStorageLevel="MEMORY_AND_DISK",
    )


def fit_wals(train: DataFrame, w: WalsConfig, checkpoint_dir: str) -> ALSModel:
    """Fit on ``train(user_idx, item_idx, rating)``. A checkpoint directory is always set:
    without one Spark ignores checkpointInterval and long runs overflow the stack."""
    spark = train.sparkSession
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    ratings = train.select(C.USER_IDX, C.ITEM_IDX, C.RATING).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return build_als(w).fit(ratings)
    finally:
        ratings.unpersist()


def factors_with_ids(factors: DataFrame, ids: DataFrame, *, idx_col: str, id_col: str) -> DataFrame:
    """ALSModel factors ``(id, features)`` as ``(idx, original id, factors)``."""
    return (
        factors.select(F.col("id").alias(idx_col), F.col("features").alias(C.FACTORS))
        .join(ids, idx_col)
        .select(idx_col, id_col, C.FACTORS)
    )


def checkpoint_dir_for(cfg: Config, run: tables.Run) -> str:
    if cfg.wals.checkpoint_dir:
        return storage.normalize(cfg.wals.checkpoint_dir)
    return storage.join(run.root, "checkpoints", run.run_id)


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    with tables.stage(spark, run_, "train", cfg) as report:
        interactions = tables.read_table(spark, run_, "interactions")
        train = interactions.filter(F.col(C.SPLIT) == C.TRAIN)
        checkpoints = checkpoint_dir_for(cfg, run_)
        model = fit_wals(train, cfg.wals, checkpoints)
        model.write().overwrite().save(run_.path("als_model"))
        users = tables.read_table(spark, run_, "users")
        items = tables.read_table(spark, run_, "items")
        user_factors = factors_with_ids(
            model.userFactors, users, idx_col=C.USER_IDX, id_col=C.USER_ID
        )
        item_factors = factors_with_ids(
            model.itemFactors, items, idx_col=C.ITEM_IDX, id_col=C.ITEM_ID
        )
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
    from jobs.cli import run_stage

    return run_stage("train", argv)


if __name__ == "__main__":
    raise SystemExit(main())
