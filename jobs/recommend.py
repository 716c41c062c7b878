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

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.fold_in import fold_in_users
from wals_roberta.jobs.model.lists import (
    item_vectors_for_scoring,
    known_history,
    run_merge,
    scored_lists,
    seen_items,
)
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.entry import stage_main


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


def needs_fold_in(spark: SparkSession, run: tables.Run, interactions: DataFrame) -> bool:
    """Whether any user has known history that was not trained on (fold-in rows). The
    ``prepare`` stage counted the rows of each split as it wrote them; a run without those
    counts scans the split column (its Parquet statistics let most files be skipped)."""
    prepared = tables.read_manifest(spark, run).get("stages", {}).get("prepare", {})
    by_split = prepared.get("counts", {}).get("split")
    if prepared.get("status") == "complete" and by_split is not None:
        return by_split.get(C.FOLD_IN, 0) > 0
    return not interactions.filter(F.col(C.SPLIT) == C.FOLD_IN).isEmpty()


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
    """``python -m wals_roberta.jobs.recommend``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("recommend", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
