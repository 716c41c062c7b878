"""Ridge projection from text embeddings to WALS item factors, fitted on executors.

The model is ``v ≈ [e, 1] W``. Its sufficient statistics (XᵀX, XᵀY, YᵀY and counts, for a
fitting fold and a held-out fold of warm items) are summed per partition on the executors
and reduced: only (d+1)² + (d+1)·r numbers per partition reach the driver, never the
embeddings. Every λ of the grid is solved from one eigendecomposition of XᵀX and scored on
the held-out warm items; the best is refitted on all warm items.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import ProjectionConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.columns import EMBEDDING
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.session import in_canonical_order, parallelism

FIT, HELD_OUT = 0, 1


@dataclass(frozen=True)
class Stats:
    """Sums over items of one fold: XᵀX (with the bias column), XᵀY, YᵀY, Σy, n."""

    xtx: np.ndarray
    xty: np.ndarray
    yty: float
    y_sum: np.ndarray
    n: int

    def __add__(self, other: Stats) -> Stats:
        return Stats(
            self.xtx + other.xtx,
            self.xty + other.xty,
            self.yty + other.yty,
            self.y_sum + other.y_sum,
            self.n + other.n,
        )


def with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((x.shape[0], 1), dtype=x.dtype)])


def fold_stats(x: np.ndarray, y: np.ndarray) -> Stats:
    xb = with_bias(x.astype(np.float64))
    y = y.astype(np.float64)
    return Stats(xb.T @ xb, xb.T @ y, float((y * y).sum()), y.sum(axis=0), len(y))


def ridge_solutions(fit: Stats, lambdas: list[float]) -> list[np.ndarray]:
    """W(λ) = (XᵀX + λI)⁻¹ XᵀY for every λ from one eigendecomposition of XᵀX."""
    evals, evecs = np.linalg.eigh(fit.xtx)
    rotated = evecs.T @ fit.xty
    return [evecs @ (rotated / (evals + lam)[:, None]) for lam in lambdas]


def held_out_sse(w: np.ndarray, held: Stats) -> float:
    """Σ‖y − [x,1]W‖² on the held-out fold, from its statistics alone."""
    return float(held.yty - 2 * np.sum(w * held.xty) + np.sum(w * (held.xtx @ w)))


def r_squared(sse: float, held: Stats) -> float:
    total = held.yty - float((held.y_sum**2).sum()) / max(held.n, 1)
    return 1.0 - sse / total if total > 0 else float("nan")


def choose_lambda(
    fit: Stats, held: Stats, lambdas: list[float]
) -> tuple[float, dict[float, float]]:
    """The λ with the least held-out squared error, and R² for every λ tried."""
    scores = {}
    for lam, w in zip(lambdas, ridge_solutions(fit, lambdas), strict=True):
        scores[lam] = r_squared(held_out_sse(w, held), held)
    best = max(scores, key=lambda lam: scores[lam])
    return best, scores


# --- Spark side ---------------------------------------------------------------------------

STATS_SCHEMA = (
    "fold int, xtx array<double>, xty array<double>, yty double, y_sum array<double>, n long"
)


def _partition_stats(
    batches: Iterator[pd.DataFrame], emb_col: str, target_col: str
) -> Iterator[pd.DataFrame]:
    sums: dict[int, Stats] = {}
    for pdf in batches:
        for fold, part in pdf.groupby("fold"):
            x = np.stack(part[emb_col].to_numpy())
            y = np.stack(part[target_col].to_numpy())
            stats = fold_stats(x, y)
            sums[int(fold)] = sums[int(fold)] + stats if int(fold) in sums else stats
    yield pd.DataFrame(
        [
            {
                "fold": fold,
                "xtx": s.xtx.ravel(),
                "xty": s.xty.ravel(),
                "yty": s.yty,
                "y_sum": s.y_sum,
                "n": s.n,
            }
            for fold, s in sums.items()
        ],
        columns=["fold", "xtx", "xty", "yty", "y_sum", "n"],
    )


def accumulate_stats(
    df: DataFrame, *, emb_col: str, target_col: str, dim: int, rank: int
) -> dict[int, Stats]:
    """Per-fold statistics of ``df(fold, <emb_col>, <target_col>)``: summed per task on the
    executors (one task per core: the partitions are coalesced first), one small row per
    task and fold reduced on the driver; one Spark job."""
    tasks = parallelism(df.sparkSession)
    parts = (
        df.select("fold", emb_col, target_col)
        .coalesce(tasks)
        .mapInPandas(lambda it: _partition_stats(it, emb_col, target_col), STATS_SCHEMA)
    )
    totals: dict[int, Stats] = {}
    for row in parts.collect():
        stats = Stats(
            np.asarray(row["xtx"]).reshape(dim + 1, dim + 1),
            np.asarray(row["xty"]).reshape(dim + 1, rank),
            float(row["yty"]),
            np.asarray(row["y_sum"]),
            int(row["n"]),
        )
        totals[row["fold"]] = totals[row["fold"]] + stats if row["fold"] in totals else stats
    return totals


def project_embeddings(df: DataFrame, w: np.ndarray, *, emb_col: str, out_col: str) -> DataFrame:
    """Add ``out_col = [embedding, 1] W`` (float32 array) with W shipped in the closure."""
    from pyspark.sql.functions import pandas_udf

    weights = w.astype(np.float32)

    @pandas_udf("array<float>")
    def apply(emb: pd.Series) -> pd.Series:
        x = with_bias(np.stack(emb.to_numpy()).astype(np.float32))
        return pd.Series(list(x @ weights))

    return df.withColumn(out_col, apply(F.col(emb_col)))


def weights_frame(spark: SparkSession, w: np.ndarray) -> DataFrame:
    """W as rows ``(row, weights)``: one per embedding dimension, the bias row last."""
    rows = [(i, [float(v) for v in row]) for i, row in enumerate(w.astype(np.float32))]
    return spark.createDataFrame(rows, "row int, weights array<float>").coalesce(1)


def read_weights(spark: SparkSession, run: tables.Run) -> np.ndarray:
    """The W a run's project stage fitted."""
    rows = tables.read_table(spark, run, "projection").orderBy("row").collect()
    return np.array([r["weights"] for r in rows], dtype=np.float32)


def warm_items(
    spark: SparkSession,
    interactions: DataFrame,
    factors: DataFrame,
    embeddings: DataFrame,
    p: ProjectionConfig,
) -> tuple[DataFrame, DataFrame]:
    """``(item_idx, n_train)`` of every trained item, and the warm items the map is fitted
    on: ``(item_idx, factors, n_train, embedding, fold)`` of those with at least
    ``projection.min_interactions`` training pairs and a text, each in the FIT or HELD_OUT
    fold by a seeded hash (cached)."""
    train_counts = (
        interactions.filter(F.col(C.SPLIT) == C.TRAIN)
        .groupBy(C.ITEM_IDX)
        .agg(F.count(F.lit(1)).alias("n_train"))
    )
    fold = F.when(
        F.pmod(F.xxhash64(F.lit(p.seed), F.col(C.ITEM_IDX)), F.lit(1000))
        < F.lit(int(p.holdout_fraction * 1000)),
        HELD_OUT,
    ).otherwise(FIT)
    warm = (
        factors.join(train_counts, C.ITEM_IDX)
        .filter(F.col("n_train") >= p.min_interactions)
        .join(embeddings.select(C.ITEM_IDX, EMBEDDING), C.ITEM_IDX)
        .withColumn("fold", fold)
    )
    # Item-sized: one partition per core, not one per shuffle partition (each Python
    # task below would start a worker for a handful of items); in canonical order, so
    # that the statistics are summed in the same order in every run.
    warm = in_canonical_order(warm, parallelism(spark), C.ITEM_IDX).cache()
    return train_counts, warm
