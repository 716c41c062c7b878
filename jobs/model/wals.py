"""WALS on the training interactions: MLlib's implicit ALS (the saved ``ALSModel``) or the
conjugate-gradient solver (:mod:`model.wals_cg`), and their factors with the original ids.
Shared by ``train``, ``evaluate``'s trained reference, ``tune`` and the cold validation."""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config, WalsConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.wals_cg import fit_wals_cg
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.session import in_canonical_order, parallelism, use_checkpoint_dir


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
    partitions = max(w.user_blocks, parallelism(train.sparkSession))
    rows = train.select(C.USER_IDX, C.ITEM_IDX, C.RATING)
    return in_canonical_order(rows, partitions, C.USER_IDX, C.ITEM_IDX)


def fit_wals(train: DataFrame, w: WalsConfig, checkpoint_dir: str) -> ALSModel:
    """Fit on ``train(user_idx, item_idx, rating)``, its rows in canonical order. A
    checkpoint directory is always set: without one Spark ignores checkpointInterval and
    long runs overflow the stack."""
    use_checkpoint_dir(train.sparkSession, checkpoint_dir)
    ratings = solver_input(train, w).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return build_als(w).fit(ratings)
    finally:
        ratings.unpersist()


def fit_cg(train: DataFrame, w: WalsConfig, checkpoint_dir: str) -> tuple[DataFrame, DataFrame]:
    """The conjugate-gradient solver (:mod:`model.wals_cg`), ``wals.cg_blocks`` blocks per
    side (default one per core); factors as ``(id, features)`` like an ALSModel's."""
    spark = train.sparkSession
    reliable = use_checkpoint_dir(spark, checkpoint_dir) is not None
    blocks = w.cg_blocks or parallelism(spark)
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
        checkpoint_interval=w.checkpoint_interval if reliable else 0,
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
