"""Stage ``project``: map text embeddings into the WALS space; build ``item_vectors``.

Warm items (at least ``projection.min_interactions`` training interactions) fit a ridge
map ``[embedding, 1] → factors`` (:mod:`jobs.projection`). Then every item gets one vector:
``wals`` (its factors), ``blended`` (``w·v_wals + (1−w)·v_proj``, ``w = n / (n + s)``, when
``projection.blend_shrinkage`` s > 0) or ``projected`` (text but no training interactions).
An item with neither is counted and left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import columns as C
from jobs import tables
from jobs.config import Config
from jobs.errors import InputDataError
from jobs.projection import (
    FIT,
    HELD_OUT,
    accumulate_stats,
    choose_lambda,
    project_embeddings,
    ridge_solutions,
)
from jobs.spark import in_canonical_order

EMBEDDING = "embedding"
PROJECTED = "projected"


def _dot(a: Column, b: Column) -> Column:
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, v: acc + v)


def mean_cosine(df: DataFrame, a: str, b: str) -> float:
    cos = _dot(F.col(a), F.col(b)) / F.sqrt(_dot(F.col(a), F.col(a)) * _dot(F.col(b), F.col(b)))
    return float(df.agg(F.avg(cos)).first()[0] or 0.0)


def build_item_vectors(
    items: DataFrame,
    factors: DataFrame,
    projected: DataFrame,
    train_counts: DataFrame,
    *,
    blend_shrinkage: float,
) -> DataFrame:
    """``(item_idx, item_id, vector, source)`` for every item that has a vector."""
    joined = (
        items.select(C.ITEM_IDX, C.ITEM_ID)
        .join(factors.select(C.ITEM_IDX, C.FACTORS), C.ITEM_IDX, "left")
        .join(projected.select(C.ITEM_IDX, PROJECTED), C.ITEM_IDX, "left")
        .join(train_counts, C.ITEM_IDX, "left")
        .withColumn("n_train", F.coalesce(F.col("n_train"), F.lit(0)))
    )
    has_wals = F.col(C.FACTORS).isNotNull()
    has_proj = F.col(PROJECTED).isNotNull()
    if blend_shrinkage > 0:
        w = F.col("n_train") / (F.col("n_train") + F.lit(blend_shrinkage))
        blended = F.zip_with(
            F.col(C.FACTORS), F.col(PROJECTED), lambda x, y: (x * w + y * (1 - w)).cast("float")
        )
        vector = F.when(has_wals & has_proj, blended).when(has_wals, F.col(C.FACTORS))
        source = F.when(has_wals & has_proj, F.lit("blended")).when(has_wals, F.lit("wals"))
    else:
        vector = F.when(has_wals, F.col(C.FACTORS))
        source = F.when(has_wals, F.lit("wals"))
    vector = vector.when(has_proj, F.col(PROJECTED))
    source = source.when(has_proj, F.lit("projected"))
    return joined.select(
        C.ITEM_IDX, C.ITEM_ID, vector.alias(C.VECTOR), source.alias(C.SOURCE)
    ).filter(F.col(C.VECTOR).isNotNull())


def weights_frame(spark: SparkSession, w: np.ndarray) -> DataFrame:
    """W as rows ``(row, weights)``: one per embedding dimension, the bias row last."""
    rows = [(i, [float(v) for v in row]) for i, row in enumerate(w.astype(np.float32))]
    return spark.createDataFrame(rows, "row int, weights array<float>").coalesce(1)


def read_weights(spark: SparkSession, run: tables.Run) -> np.ndarray:
    """The W a run's project stage fitted."""
    rows = tables.read_table(spark, run, "projection").orderBy("row").collect()
    return np.array([r["weights"] for r in rows], dtype=np.float32)


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    p = cfg.projection
    with tables.stage(spark, run_, "project", cfg) as report:
        interactions = tables.read_table(spark, run_, "interactions")
        items = tables.read_table(spark, run_, "items")
        factors = tables.read_table(spark, run_, "item_factors")
        embeddings = tables.read_table(spark, run_, "item_embeddings")
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
        warm = in_canonical_order(warm, spark.sparkContext.defaultParallelism, C.ITEM_IDX).cache()
        dim = len(embeddings.select(EMBEDDING).first()[0])
        stats = accumulate_stats(
            warm, emb_col=EMBEDDING, target_col=C.FACTORS, dim=dim, rank=cfg.wals.rank
        )
        if FIT not in stats or HELD_OUT not in stats:
            raise InputDataError(
                "projection: too few warm items with text to fit and check the projection; "
                "lower projection.min_interactions"
            )
        best, r2_by_lambda = choose_lambda(stats[FIT], stats[HELD_OUT], list(p.lambdas))
        w_fit = ridge_solutions(stats[FIT], [best])[0]
        held = project_embeddings(
            warm.filter(F.col("fold") == HELD_OUT), w_fit, emb_col=EMBEDDING, out_col=PROJECTED
        )
        held_cosine = mean_cosine(held, PROJECTED, C.FACTORS)
        w = ridge_solutions(stats[FIT] + stats[HELD_OUT], [best])[0]
        warm.unpersist()
        projected = project_embeddings(embeddings, w, emb_col=EMBEDDING, out_col=PROJECTED)
        vectors = build_item_vectors(
            items, factors, projected, train_counts, blend_shrinkage=p.blend_shrinkage
        )
        report["rows"]["item_vectors"] = tables.write_table(spark, run_, "item_vectors", vectors)
        # W itself, so a later refresh projects new items the same way without refitting.
        report["rows"]["projection"] = tables.write_table(
            spark, run_, "projection", weights_frame(spark, w)
        )
        written = tables.read_table(spark, run_, "item_vectors")
        by_source = {
            r[C.SOURCE]: int(r["count"]) for r in written.groupBy(C.SOURCE).count().collect()
        }
        n_items = items.count()
        report["counts"] = {
            "by_source": by_source,
            "items_without_vector": n_items - sum(by_source.values()),
        }
        report["fit"] = {
            "lambda": best,
            "held_out_r2_by_lambda": {str(k): round(v, 4) for k, v in r2_by_lambda.items()},
            "held_out_r2": round(r2_by_lambda[best], 4),
            "held_out_mean_cosine": round(held_cosine, 4),
            "warm_items_fit": stats[FIT].n,
            "warm_items_held_out": stats[HELD_OUT].n,
            "embedding_dim": dim,
        }
    return report


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import run_stage

    return run_stage("project", argv)


if __name__ == "__main__":
    raise SystemExit(main())
