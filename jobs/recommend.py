"""Stage ``recommend``: per-user top-k over the item vectors, seen items excluded.

Writes ``recommendations(user_id, rank, item_id, score)`` with original ids, rank from 1.
Projected (cold) and WALS scores share the lists by the merge the project stage chose on
validation, or the configured one (:mod:`cold.merge`).
Scoring runs on executors in :mod:`udfs.topk` (blocked matrix products, ``torch.topk``).
Users with known history but no trained factors (held-out users, users who arrived after
training) are folded in first (:mod:`model.fold_in`) and written to ``fold_in_factors``;
they get lists like everyone else.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from wals_roberta.jobs.cold.merge import Merge, configured_merge, merged_top_k, read_moments
from wals_roberta.jobs.config import Config, RecommendConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.fold_in import fold_in_users
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


def fold_in_vectors(
    interactions: DataFrame,
    user_factors: DataFrame,
    item_vectors: DataFrame,
    vector_col: str,
    cfg: Config,
) -> DataFrame:
    """``(user_idx, factors)`` for users with known history but no trained factors, by the
    configured fold-in method. YᵀY is taken over the items the model was trained on (not
    the projected cold items); the user's own items may be any item with a vector."""
    history = known_history(interactions).join(
        user_factors.select(C.USER_IDX), C.USER_IDX, "left_anti"
    )
    trained_items = (
        item_vectors.filter(F.col(C.SOURCE) != "projected")
        if vector_col == C.VECTOR
        else item_vectors
    )
    return fold_in_users(
        history,
        item_vectors,
        gram_items=trained_items,
        vector_col=vector_col,
        rank=cfg.wals.rank,
        reg=cfg.wals.reg,
        alpha=cfg.wals.alpha,
        method=cfg.recommend.fold_in,
    )


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


def needs_fold_in(spark: SparkSession, run: tables.Run, interactions: DataFrame) -> bool:
    """Whether any user has known history that was not trained on (fold-in rows). The
    ``prepare`` stage counted the rows of each split as it wrote them; a run without those
    counts scans the split column (its Parquet statistics let most files be skipped)."""
    prepared = tables.read_manifest(spark, run).get("stages", {}).get("prepare", {})
    by_split = prepared.get("counts", {}).get("split")
    if prepared.get("status") == "complete" and by_split is not None:
        return by_split.get(C.FOLD_IN, 0) > 0
    return not interactions.filter(F.col(C.SPLIT) == C.FOLD_IN).isEmpty()


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


def cold_flag() -> Column:
    """1.0 for a list row whose item has a projected (cold) vector, else 0.0."""
    return F.when(F.col(C.SOURCE) == "projected", 1.0).otherwise(0.0)


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    with tables.stage(spark, run_, "recommend", cfg) as report:
        user_factors = tables.read_table(spark, run_, "user_factors")
        item_vectors, vector_col = item_vectors_for_scoring(spark, run_)
        interactions = tables.read_table(spark, run_, "interactions")
        users = tables.read_table(spark, run_, "users")
        # Both factor tables carry user_id, copied onto the list rows by the scoring.
        scored = user_factors.select(C.USER_IDX, C.FACTORS, C.USER_ID)
        if cfg.recommend.fold_in != "none" and needs_fold_in(spark, run_, interactions):
            folded = fold_in_vectors(interactions, user_factors, item_vectors, vector_col, cfg)
            report["rows"]["fold_in_factors"] = tables.write_table(
                spark, run_, "fold_in_factors", folded.join(users, C.USER_IDX)
            )
            folded = tables.read_table(spark, run_, "fold_in_factors")
            scored = scored.unionByName(folded.select(C.USER_IDX, C.FACTORS, C.USER_ID))
        report["fold_in"] = cfg.recommend.fold_in
        seen = seen_items(interactions)
        merge, moments = run_merge(spark, run_, cfg)
        top = scored_lists(scored, item_vectors, vector_col, seen, cfg.recommend, merge, moments)
        report["merge"] = merge.to_dict()
        # Item ids (and sources) from the vectors table itself, by broadcast join; the
        # share of cold items is observed while the lists are written (no second pass).
        extra = [C.SOURCE] if vector_col == C.VECTOR else []
        listed = top.join(
            F.broadcast(item_vectors.select(C.ITEM_IDX, C.ITEM_ID, *extra)), C.ITEM_IDX
        )
        observed = Observation("recommend")
        if extra:
            listed = listed.observe(observed, F.avg(cold_flag()).alias("cold_share"))
        recs = listed.select(C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE)
        report["rows"]["recommendations"] = tables.write_table(spark, run_, "recommendations", recs)
        report["k"] = cfg.recommend.k
        if extra:
            report["cold_share"] = round(float(observed.get["cold_share"] or 0.0), 6)
        report["exclude_seen"] = cfg.recommend.exclude_seen
    return report


def main(argv: list[str] | None = None) -> int:
    from wals_roberta.jobs.cli import run_stage

    return run_stage("recommend", argv)


if __name__ == "__main__":
    raise SystemExit(main())
