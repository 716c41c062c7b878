"""Scoring into top-k lists: the items a user has seen (excluded), the run's item vectors,
the merge of projected and WALS scores it applied, and lists in index or original ids.
Shared by ``recommend``, ``evaluate``, ``tune`` and ``refresh``."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.merge import Merge, configured_merge, merged_top_k, read_moments
from wals_roberta.jobs.config import Config, RecommendConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.runs import tables
from wals_roberta.udfs.topk import recommend_top_k


def known_history(interactions: DataFrame) -> DataFrame:
    """What is known of each user at scoring time: training and fold-in rows, not test."""
    return interactions.filter(F.col(C.SPLIT) != C.TEST)


def seen_items(interactions: DataFrame) -> DataFrame:
    """``(user_idx, item_idx)``: each user's known items (training and fold-in), the pairs
    the top-k excludes (grouped per user there, in the same shuffle as the vectors)."""
    return known_history(interactions).select(C.USER_IDX, C.ITEM_IDX)


def item_vectors_for_scoring(spark: SparkSession, run: tables.Run) -> tuple[DataFrame, str]:
    """The run's ``item_vectors`` when the projection stage wrote them, else the WALS
    ``item_factors``; with the name of the vector column."""
    if tables.has_table(spark, run, "item_vectors"):
        return tables.read_table(spark, run, "item_vectors"), C.VECTOR
    return tables.read_table(spark, run, "item_factors"), C.FACTORS


def top_k_lists(
    user_vectors: DataFrame,
    item_vectors: DataFrame,
    seen: DataFrame | None,
    rc: RecommendConfig,
    *,
    k: int | None = None,
    user_vector_col: str = C.FACTORS,
    item_vector_col: str = C.FACTORS,
    carry: str | None = None,
) -> DataFrame:
    """``([carry,] user_idx, item_idx, score, rank)`` for every user with a vector."""
    return recommend_top_k(
        user_vectors,
        item_vectors,
        k=k or rc.k,
        seen=seen if rc.exclude_seen else None,
        user_vector_col=user_vector_col,
        item_vector_col=item_vector_col,
        users_per_block=rc.users_per_block,
        items_per_block=rc.items_per_block,
        broadcast_max_mb=rc.broadcast_max_mb,
        carry=carry,
    )


def with_original_ids(top: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """Index-based lists as ``(user_id, rank, item_id, score)``; ``top`` may already carry
    ``user_id``. Item ids come by a broadcast join (the item table is small next to the lists;
    the lists are not shuffled)."""
    if C.USER_ID not in top.columns:
        top = top.join(users, C.USER_IDX)
    return top.join(F.broadcast(items.select(C.ITEM_IDX, C.ITEM_ID)), C.ITEM_IDX).select(
        C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE
    )


def applied_choice(spark: SparkSession, run: tables.Run, name: str) -> dict | None:
    """The ``map`` or ``merge`` a run applied: its recommend stage's (or refresh's), else
    the one its project stage chose."""
    stages = tables.read_manifest(spark, run).get("stages", {})
    for stage in ("recommend", "refresh", "project"):
        if name in stages.get(stage, {}):
            return stages[stage][name]
    return None


def run_merge(spark: SparkSession, run: tables.Run, cfg: Config) -> tuple[Merge, dict | None]:
    """The merge ``recommend`` applies and the run's per-source moments: the one the
    project stage chose on validation (``recommend.merge: auto``) or the configured one;
    plain raw scores when the run has no ``score_scale`` table (nothing to standardize)."""
    rc = cfg.recommend
    if rc.merge == "auto":
        chosen = tables.read_manifest(spark, run).get("stages", {}).get("project", {})
        merge = Merge.from_dict(chosen["merge"]) if "merge" in chosen else Merge()
    else:
        merge = configured_merge(rc.merge, rc.cold_offset, rc.cold_slots)
    if not tables.has_table(spark, run, "score_scale"):
        return Merge("raw", 0.0, merge.cold_slots), None
    return merge, read_moments(tables.read_table(spark, run, "score_scale"))


def scored_lists(
    users: DataFrame,
    item_vectors: DataFrame,
    vector_col: str,
    seen: DataFrame | None,
    rc: RecommendConfig,
    merge: Merge,
    moments: dict | None,
    *,
    carry: str | None = C.USER_ID,
) -> DataFrame:
    """``([carry,] user_idx, item_idx, score, rank)``: one top-k over every item when the
    merge is plain raw scores (or there is no source column), else the two sources merged
    (:func:`cold.merge.merged_top_k`)."""
    if merge.is_plain or vector_col != C.VECTOR:
        return top_k_lists(users, item_vectors, seen, rc, item_vector_col=vector_col, carry=carry)

    def top_k(u: DataFrame, i: DataFrame, s: DataFrame | None, k: int) -> DataFrame:
        return top_k_lists(u, i, s, rc, k=k, item_vector_col=C.VECTOR, carry=carry)

    merged = merged_top_k(
        users, item_vectors, seen, k=rc.k, merge=merge, moments=moments, top_k=top_k
    )
    extra = [carry] if carry else []
    return merged.select(*extra, C.USER_IDX, C.ITEM_IDX, C.SCORE, C.RANK)
