"""A refresh's steps 2 and 3 on the item side: new texts projected under the base run's
text map, and the items that grew enough to be solved again."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.maps import TextMap, map_vectors
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.columns import EMBEDDING
from wals_roberta.jobs.model.lists import (
    known_history,
)
from wals_roberta.jobs.model.projection import read_weights
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.session import small


def items_to_solve(base_interactions: DataFrame, new_rows: DataFrame, growth: float) -> DataFrame:
    """``(item_idx)`` of the items the refresh solves again: those whose new pairs (rows of
    ``new_rows``, one per pair) are at least ``growth`` times their known pairs in the base
    run, and those with no known pairs; with ``growth`` 0, every item in ``new_rows``."""
    gained = new_rows.groupBy(C.ITEM_IDX).agg(F.count(F.lit(1)).alias("_gained"))
    if growth <= 0:
        return gained.select(C.ITEM_IDX)
    gained = gained.localCheckpoint()
    known = (
        known_history(base_interactions)
        .join(small(gained.select(C.ITEM_IDX), gained.count()), C.ITEM_IDX, "left_semi")
        .groupBy(C.ITEM_IDX)
        .agg(F.count(F.lit(1)).alias("_known"))
    )
    return (
        gained.join(known, C.ITEM_IDX, "left")
        .filter(F.col("_known").isNull() | (F.col("_gained") >= F.lit(growth) * F.col("_known")))
        .select(C.ITEM_IDX)
    )


def project_new_items(
    spark: SparkSession,
    base: tables.Run,
    cfg: Config,
    text_map: TextMap,
    queries: DataFrame,
) -> DataFrame:
    """``(item_idx, item_id, vector)`` of ``queries(item_idx, embedding, item_id)`` under the
    base run's map: its W for ridge, its warm items (factors and embeddings, at least
    ``projection.min_interactions`` training pairs) as the neighbours of knn and blend."""
    neighbours = None
    if text_map.uses_knn:
        counts = (
            tables.read_table(spark, base, "interactions")
            .filter(F.col(C.SPLIT) == C.TRAIN)
            .groupBy(C.ITEM_IDX)
            .agg(F.count(F.lit(1)).alias("_n"))
            .filter(F.col("_n") >= cfg.projection.min_interactions)
        )
        neighbours = (
            warm_factors(spark, base)
            .join(counts, C.ITEM_IDX, "left_semi")
            .join(tables.read_table(spark, base, "item_embeddings"), C.ITEM_IDX)
            .select(C.ITEM_IDX, EMBEDDING, C.FACTORS)
        )
    vectors = map_vectors(
        text_map,
        queries.select(C.ITEM_IDX, EMBEDDING),
        neighbours,
        read_weights(spark, base),
        items_per_block=cfg.recommend.items_per_block,
        broadcast_max_mb=cfg.recommend.broadcast_max_mb,
    )
    return vectors.join(queries.select(C.ITEM_IDX, C.ITEM_ID), C.ITEM_IDX)


def warm_factors(spark: SparkSession, base: tables.Run) -> DataFrame:
    """``(item_idx, factors)`` of the base run's warm items: its ``item_factors`` after a
    full run; after a refresh (which writes no ``item_factors``), its ``item_vectors`` of
    WALS or blended source, the items' latest solved vectors."""
    if tables.has_table(spark, base, "item_factors"):
        return tables.read_table(spark, base, "item_factors").select(C.ITEM_IDX, C.FACTORS)
    return (
        tables.read_table(spark, base, "item_vectors")
        .filter(F.col(C.SOURCE) != "projected")
        .select(C.ITEM_IDX, F.col(C.VECTOR).alias(C.FACTORS))
    )
