"""Stage ``train``: implicit ALS (WALS) on the training interactions.

Writes ``user_factors(user_idx, user_id, factors)``, ``item_factors(item_idx, item_id,
factors)`` and, with ``wals.solver: mllib`` (Spark MLlib's ALS, the default), the saved
``ALSModel`` under ``als_model``; ``wals.solver: cg`` solves the same objective by conjugate
gradient (:mod:`model.wals_cg`).
"""

from __future__ import annotations

from typing import Any

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from wals_roberta.jobs.config import Config, WalsConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.wals_cg import fit_wals_cg
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.session import in_canonical_order


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


def solver_input(train: DataFrame, w: WalsConfig) -> DataFrame:
    """``(user_idx, item_idx, rating)`` of ``train`` in canonical order, at least one
    partition per user block and per core."""
    partitions = max(w.user_blocks, train.sparkSession.sparkContext.defaultParallelism)
    rows = train.select(C.USER_IDX, C.ITEM_IDX, C.RATING)
    return in_canonical_order(rows, partitions, C.USER_IDX, C.ITEM_IDX)


def fit_wals(train: DataFrame, w: WalsConfig, checkpoint_dir: str) -> ALSModel:
    """Fit on ``train(user_idx, item_idx, rating)``, its rows in canonical order. A
    checkpoint directory is always set: without one Spark ignores checkpointInterval and
    long runs overflow the stack."""
    spark = train.sparkSession
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    ratings = solver_input(train, w).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return build_als(w).fit(ratings)
    finally:
        ratings.unpersist()


def fit_cg(train: DataFrame, w: WalsConfig, checkpoint_dir: str) -> tuple[DataFrame, DataFrame]:
    """The conjugate-gradient solver (:mod:`model.wals_cg`), ``wals.cg_blocks`` blocks per
    side (default one per core); factors as ``(id, features)`` like an ALSModel's."""
    context = train.sparkSession.sparkContext
    context.setCheckpointDir(checkpoint_dir)
    blocks = w.cg_blocks or context.defaultParallelism
    user_factors, item_factors = fit_wals_cg(
        solver_input(train, w),
        rank=w.rank,
        reg=w.reg,
        alpha=w.alpha,
        iterations=w.iterations,
        steps=w.cg_steps,
        user_blocks=blocks,
        item_blocks=blocks,
        seed=w.seed,
        checkpoint_interval=w.checkpoint_interval,
    )
    return tuple(
        df.select(F.col(idx).alias("id"), F.col(C.FACTORS).alias("features"))
        for df, idx in ((user_factors, C.USER_IDX), (item_factors, C.ITEM_IDX))
    )


def fit_factors(
    train: DataFrame, w: WalsConfig, checkpoint_dir: str
) -> tuple[DataFrame, DataFrame]:
    """User and item factors ``(id, features)`` of ``train`` by the configured solver (no
    model saved): what a validation model needs."""
    if w.solver == "cg":
        return fit_cg(train, w, checkpoint_dir)
    model = fit_wals(train, w, checkpoint_dir)
    return model.userFactors, model.itemFactors


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
    from wals_roberta.jobs.cli import run_stage

    return run_stage("train", argv)


if __name__ == "__main__":
    raise SystemExit(main())
