"""Stage ``prepare``: validate raw interactions, merge duplicates, index ids, rate, split.

Writes ``users(user_id, user_idx)``, ``items(item_id, item_idx, text, text_hash)`` and
``interactions(user_idx, item_idx, strength, rating, timestamp, n_events, split)``, and
the row accounting to the manifest: rows read = used + merged + dropped (per reason).
"""

from __future__ import annotations

from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.indexing import assign_dense_index
from wals_roberta.jobs.data.inputs import (
    CheckedRows,
    check_rows,
    id_column,
    interaction_checks,
    numeric_column,
    read_source,
    require_columns,
    timestamp_seconds,
)
from wals_roberta.jobs.data.item_text import TEXT, TEXT_HASH, catalog_text, check_template
from wals_roberta.jobs.data.splitting import split_interactions
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.errors import ConfigError, InputDataError

SECONDS_PER_DAY = 86_400.0


def standardize_interactions(
    raw: DataFrame,
    *,
    user_col: str,
    item_col: str,
    strength_col: str | None,
    timestamp_col: str | None,
) -> DataFrame:
    """Rename to the internal columns; ids typed (long or string), strength a double (1.0 per
    event without a strength column), timestamp unix seconds. ``_raw_strength`` keeps the
    input value so a non-numeric one can be told from a null one."""
    cols = [id_column(raw, user_col).alias(C.USER_ID), id_column(raw, item_col).alias(C.ITEM_ID)]
    if strength_col is None:
        cols += [F.lit(1.0).alias(C.STRENGTH), F.lit("1").alias("_raw_strength")]
    else:
        cols += [
            numeric_column(raw, strength_col).alias(C.STRENGTH),
            F.col(strength_col).cast("string").alias("_raw_strength"),
        ]
    if timestamp_col is None:
        cols.append(F.lit(None).cast("long").alias(C.TIMESTAMP))
    else:
        cols.append(timestamp_seconds(raw, timestamp_col).alias(C.TIMESTAMP))
    return raw.select(*cols)


def weight_by_time_decay(events: DataFrame, *, half_life_days: float) -> DataFrame:
    """Multiply each event's strength by 0.5^(age / half-life), age measured from the newest
    event in the data (so the same input gives the same weights whenever it runs)."""
    newest = events.agg(F.max(C.TIMESTAMP)).first()[0]
    age_days = (F.lit(newest) - F.col(C.TIMESTAMP)) / SECONDS_PER_DAY
    return events.withColumn(
        C.STRENGTH, F.col(C.STRENGTH) * F.pow(F.lit(0.5), age_days / half_life_days)
    )


def merge_duplicates(events: DataFrame) -> DataFrame:
    """One row per (user, item): strengths summed, latest timestamp, number of events."""
    return events.groupBy(C.USER_ID, C.ITEM_ID).agg(
        F.sum(C.STRENGTH).alias(C.STRENGTH),
        F.max(C.TIMESTAMP).alias(C.TIMESTAMP),
        F.count(F.lit(1)).cast("int").alias(C.N_EVENTS),
    )


def confidence_rating(strength: Column, *, form: str, log_epsilon: float = 1.0) -> Column:
    """The ALS rating r for Spark's ``c = 1 + alpha * r``.

    binary: 1 for any positive strength; linear (and time_decay, whose strengths were
    already decayed): r = s; log: r = log(1 + s / epsilon) (Hu, Koren & Volinsky 2008);
    sqrt: r = sqrt(s). A zero strength gives r = 0, which Spark reads as no preference.
    """
    if form == "binary":
        rating = F.when(strength > 0, F.lit(1.0)).otherwise(F.lit(0.0))
    elif form in ("linear", "time_decay"):
        rating = strength
    elif form == "log":
        rating = F.log1p(strength / F.lit(log_epsilon))
    elif form == "sqrt":
        rating = F.sqrt(strength)
    else:
        raise ValueError(f"unknown confidence form {form!r}")
    return rating.cast("float")


def read_catalog(
    spark: SparkSession, cfg: Config
) -> tuple[DataFrame | None, DataFrame | None, dict[str, Any]]:
    """The item metadata table, if configured: its distinct ids, the item text built by
    ``data.items.text_template`` (``(item_id, text, text_hash)``, or None without a
    template), and its row accounting."""
    src = cfg.data.items
    if src.path is None:
        if src.text_template is not None:
            raise ConfigError("data.items.text_template is set but data.items.path is not")
        return None, None, {}
    raw = read_source(spark, src.path, src.format, "data.items", src.csv_delimiter)
    require_columns(raw, {"id_col": src.id_col}, "data.items")
    if src.text_template is not None:
        check_template(src.text_template, raw.columns)
    typed = raw.withColumn(C.ITEM_ID, id_column(raw, src.id_col))
    counts = typed.agg(
        F.count(F.lit(1)).alias("read"),
        F.count(C.ITEM_ID).alias("valid"),
        F.countDistinct(C.ITEM_ID).alias("distinct"),
    ).first()
    n_read, n_valid, n_ids = int(counts["read"]), int(counts["valid"]), int(counts["distinct"])
    report: dict[str, Any] = {
        "rows_read": n_read,
        "used": n_ids,
        "merged": n_valid - n_ids,
        "dropped": {"null_item_id": n_read - n_valid} if n_read > n_valid else {},
    }
    if report["rows_read"] == 0:
        raise InputDataError("data.items: the input has no rows (an empty catalog)")
    catalog = typed.filter(F.col(C.ITEM_ID).isNotNull())
    texts = None
    if src.text_template is not None:
        texts, text_counts = catalog_text(catalog, src.text_template)
        report["text"] = text_counts
    return catalog.select(C.ITEM_ID).distinct(), texts, report


def _same_id_type(a: DataFrame, b: DataFrame) -> tuple[DataFrame, DataFrame]:
    if a.schema[C.ITEM_ID].dataType == b.schema[C.ITEM_ID].dataType:
        return a, b
    as_text = F.col(C.ITEM_ID).cast("string").alias(C.ITEM_ID)
    return (
        a.withColumn(C.ITEM_ID, as_text),
        b.withColumn(C.ITEM_ID, as_text),
    )


def with_text(items: DataFrame, texts: DataFrame | None) -> DataFrame:
    """``items(item_id, item_idx)`` with ``text`` and ``text_hash`` (null without text)."""
    if texts is None:
        return items.select(
            C.ITEM_ID,
            C.ITEM_IDX,
            F.lit(None).cast("string").alias(TEXT),
            F.lit(None).cast("string").alias(TEXT_HASH),
        )
    texts = texts.withColumn(C.ITEM_ID, F.col(C.ITEM_ID).cast(items.schema[C.ITEM_ID].dataType))
    return items.join(texts, C.ITEM_ID, "left").select(C.ITEM_ID, C.ITEM_IDX, TEXT, TEXT_HASH)


def read_interactions(spark: SparkSession, cfg: Config) -> tuple[DataFrame, CheckedRows, DataFrame]:
    """The configured interactions read, checked and merged to one row per (user, item):
    ``(raw, checked, merged)``; ``raw`` and ``merged`` are persisted (unpersist when done),
    ``checked`` carries the read and dropped counts."""
    src = cfg.data.interactions
    raw = read_source(spark, src.path, src.format, "data.interactions", src.csv_delimiter)
    # Checks, typing and merging read the input several times: parse it once.
    raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
    require_columns(
        raw,
        {
            "user_col": src.user_col,
            "item_col": src.item_col,
            "strength_col": src.strength_col,
            "timestamp_col": src.timestamp_col,
        },
        "data.interactions",
    )
    std = standardize_interactions(
        raw,
        user_col=src.user_col,
        item_col=src.item_col,
        strength_col=src.strength_col,
        timestamp_col=src.timestamp_col,
    )
    reasons, describe = interaction_checks(std, src.strength_col, src.timestamp_col)
    checked = check_rows(
        std, reasons, describe, "data.interactions", drop=src.invalid_rows == "drop"
    )
    events = checked.rows.drop("_raw_strength")
    if cfg.wals.confidence == "time_decay":
        events = weight_by_time_decay(events, half_life_days=cfg.wals.half_life_days)
    merged = merge_duplicates(events).persist(StorageLevel.MEMORY_AND_DISK)
    return raw, checked, merged


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    run_ = tables.open_run(spark, cfg, run_id, create=True)
    with tables.stage(spark, run_, "prepare", cfg) as report:
        raw, checked, merged = read_interactions(spark, cfg)
        n_pairs = merged.count()

        catalog_ids, texts, catalog_report = read_catalog(spark, cfg)
        item_ids = merged.select(C.ITEM_ID)
        if catalog_ids is not None:
            merged, catalog_ids = _same_id_type(merged, catalog_ids)
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
        report["rows"]["interactions"] = tables.write_table(
            spark, run_, "interactions", interactions
        )
        written = tables.read_table(spark, run_, "interactions")
        by_split = {r[C.SPLIT]: int(r["count"]) for r in written.groupBy(C.SPLIT).count().collect()}
        merged.unpersist()
        raw.unpersist()

        n_events = checked.read - sum(checked.dropped.values())
        report["counts"] = {
            "interactions": {
                "rows_read": checked.read,
                "used": n_pairs,
                "merged": n_events - n_pairs,
                "dropped": checked.dropped,
            },
            "items_catalog": catalog_report,
            "split": by_split,
        }
        _check_accounting(report["counts"]["interactions"])
        if split.holdout != "none" and by_split.get(C.TEST, 0) == 0:
            print("[prepare] warning: the split left no test rows", flush=True)
    return report


def _check_accounting(counts: dict[str, Any]) -> None:
    total = counts["used"] + counts["merged"] + sum(counts["dropped"].values())
    if total != counts["rows_read"]:  # a bug in this module, never a user error
        raise AssertionError(f"row accounting does not add up: {counts}")


def main(argv: list[str] | None = None) -> int:
    from wals_roberta.jobs.cli import run_stage

    return run_stage("prepare", argv)


if __name__ == "__main__":
    raise SystemExit(main())
