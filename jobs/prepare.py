"""Stage ``prepare``: validate raw interactions, merge duplicates, index ids, rate, split.

Writes ``users(user_id, user_idx)``, ``items(item_id, item_idx, text, text_hash)`` and
``interactions(user_idx, item_idx, strength, rating, timestamp, n_events, split)``, and
the row accounting to the manifest: rows read = used + merged + dropped (per reason).
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.indexing import assign_dense_index
from wals_roberta.jobs.data.interactions import (
    confidence_rating,
    read_interactions,
    row_counts,
)
from wals_roberta.jobs.data.item_text import (
    read_catalog,
    same_id_type,
    with_text,
)
from wals_roberta.jobs.data.splitting import split_interactions
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.errors import InputDataError


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    run_ = tables.open_run(spark, cfg, run_id, create=True)
    with tables.stage(spark, run_, "prepare", cfg) as report:
        raw, checked, merged = read_interactions(spark, cfg)

        catalog_ids, texts, catalog_report = read_catalog(spark, cfg)
        item_ids = merged.select(C.ITEM_ID)
        if catalog_ids is not None:
            merged, catalog_ids = same_id_type(merged, catalog_ids)
            item_ids = merged.select(C.ITEM_ID).unionByName(catalog_ids)
        users = assign_dense_index(merged, id_col=C.USER_ID, idx_col=C.USER_IDX, what="users")
        items = with_text(
            assign_dense_index(item_ids, id_col=C.ITEM_ID, idx_col=C.ITEM_IDX, what="items"),
            texts,
        )
        report["rows"]["users"] = tables.write_table(spark, run_, "users", users)
        report["rows"]["items"] = tables.write_table(spark, run_, "items", items)
        users = tables.read_table(spark, run_, "users")
        items = tables.read_table(spark, run_, "items")

        rated = (
            merged.join(users, C.USER_ID)
            .join(items, C.ITEM_ID)
            .select(
                C.USER_IDX,
                C.ITEM_IDX,
                F.col(C.STRENGTH).cast("double").alias(C.STRENGTH),
                confidence_rating(
                    F.col(C.STRENGTH), form=cfg.wals.confidence, log_epsilon=cfg.wals.log_epsilon
                ).alias(C.RATING),
                C.TIMESTAMP,
                C.N_EVENTS,
            )
        )
        split = cfg.split
        interactions = split_interactions(
            rated,
            holdout=split.holdout,
            fraction=split.fraction,
            seed=split.seed,
            time_cutoff=split.time_cutoff,
            cold_item_fraction=split.cold_item_fraction,
            heldout_user_fraction=split.heldout_user_fraction,
        )
        n_pairs, by_split = write_interactions(spark, run_, interactions, cfg.wals.confidence)
        report["rows"]["interactions"] = n_pairs
        merged.unpersist()
        raw.unpersist()

        report["counts"] = {
            "interactions": row_counts(checked, n_pairs),
            "items_catalog": catalog_report,
            "split": by_split,
        }
        _check_accounting(report["counts"]["interactions"])
        if split.holdout != "none" and by_split.get(C.TEST, 0) == 0:
            print("[prepare] warning: the split left no test rows", flush=True)
    return report


def write_interactions(
    spark: SparkSession, run: tables.Run, interactions: DataFrame, form: str
) -> tuple[int, dict[str, int]]:
    """Write the ``interactions`` table; returns its rows (one per distinct (user, item)
    pair: the joins with the indexes keep every merged row) and the rows per split, counted
    as they are written. Fails when a pair's strength or its ``form`` rating overflowed."""
    per_split = {s: F.count_if(F.col(C.SPLIT) == s) for s in (C.TRAIN, C.TEST, C.FOLD_IN)}
    # A finite strength can overflow when a pair's events are summed (1e308 twice) or when
    # its rating is taken (a float, overflowing above about 3.4e38): ALS cannot use that.
    overflow = {f"_overflow_{c}": F.count_if(~_finite(F.col(c))) for c in (C.STRENGTH, C.RATING)}
    written = tables.write_counted(
        spark, run, "interactions", interactions, **per_split, **overflow
    )
    _check_overflow({c: written.pop(f"_overflow_{c}") for c in (C.STRENGTH, C.RATING)}, form)
    rows = written.pop("rows")
    by_split = {s: n for s, n in written.items() if n}
    if sum(by_split.values()) != rows:  # a split value this module does not know: a bug
        raise AssertionError(f"split counts {by_split} do not add up to {rows:,} rows")
    return rows, by_split


def _finite(col: Column) -> Column:
    return col.isNotNull() & ~F.isnan(col) & ~col.isin(float("inf"), float("-inf"))


def _check_overflow(counts: dict[str, int], form: str) -> None:
    if counts[C.STRENGTH]:
        raise InputDataError(
            f"data.interactions: {counts[C.STRENGTH]:,} (user, item) pairs have a summed "
            "strength beyond the largest double; scale the strength column down"
        )
    if counts[C.RATING]:
        raise InputDataError(
            f"data.interactions: {counts[C.RATING]:,} (user, item) pairs have a strength whose "
            f"wals.confidence={form} rating overflows a float (above about 3.4e38); scale the "
            "strength column down" + (" or use wals.confidence=log" if form != "log" else "")
        )


def _check_accounting(counts: dict[str, Any]) -> None:
    total = counts["used"] + counts["merged"] + sum(counts["dropped"].values())
    if total != counts["rows_read"]:  # a bug in this module, never a user error
        raise AssertionError(f"row accounting does not add up: {counts}")


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.prepare``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("prepare", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
