"""Raw interactions as the stages use them: read and checked (rows counted as used,
merged or dropped with a reason), duplicates of a (user, item) pair merged, time decay and
the confidence rating WALS trains on. Shared by ``prepare``, ``refresh`` and ``tune``."""

from __future__ import annotations

from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.inputs import (
    CheckedRows,
    check_rows,
    id_text,
    interaction_checks,
    is_text_file,
    needs_type_check,
    non_integer_ids,
    numeric_column,
    read_source,
    require_columns,
    timestamp_seconds,
    typed_id,
)

SECONDS_PER_DAY = 86_400.0


# The configured columns under plain names: an input's column name is taken as it is
# ("play.count" is one column, not a field of a struct "play"; spaces and backticks too).
_RAW = {
    "user_col": "_raw_user",
    "item_col": "_raw_item",
    "strength_col": "_raw_strength_value",
    "timestamp_col": "_raw_timestamp",
}


def configured_columns(raw: DataFrame, **columns: str | None) -> DataFrame:
    """The input's configured columns (``user_col=...``; None: not configured) renamed to
    ``_RAW``'s plain names, so no later expression parses a column name."""
    return raw.select(
        *[
            F.col("`" + name.replace("`", "``") + "`").alias(_RAW[setting])
            for setting, name in columns.items()
            if name is not None
        ]
    )


def standardize_interactions(
    raw: DataFrame,
    *,
    user_col: str,
    item_col: str,
    strength_col: str | None,
    timestamp_col: str | None,
) -> DataFrame:
    """Rename to the internal columns; ids as :func:`~data.inputs.id_text` (typed later by
    :func:`type_ids`), strength a double (1.0 per event without a strength column),
    timestamp unix seconds. ``_raw_strength`` keeps the input value so a non-numeric one can
    be told from a null one."""
    cols = [id_text(raw, user_col).alias(C.USER_ID), id_text(raw, item_col).alias(C.ITEM_ID)]
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


def id_type_checks(raw: DataFrame, *, user_col: str, item_col: str) -> dict[str, Column]:
    """Aggregates over :func:`standardize_interactions`' rows counting the ids that are not
    integers, for the id columns whose type the values decide (string columns)."""
    named = {C.USER_ID: user_col, C.ITEM_ID: item_col}
    return {
        internal: non_integer_ids(F.col(internal))
        for internal, column in named.items()
        if needs_type_check(raw, column)
    }


def type_ids(events: DataFrame, non_integer: dict[str, int]) -> DataFrame:
    """Each checked id column a long when none of its ids was a non-integer, as
    :func:`~data.inputs.id_column` types it."""
    for internal, count in non_integer.items():
        events = events.withColumn(internal, typed_id(F.col(internal), all_integer=count == 0))
    return events


def weight_by_time_decay(events: DataFrame, *, half_life_days: float) -> DataFrame:
    """Multiply each event's strength by 0.5^(age / half-life), age measured from the newest
    event in the data (so the same input gives the same weights whenever it runs)."""
    newest = events.agg(F.max(C.TIMESTAMP)).first()[0]
    # In doubles: two longs' difference overflows a long when the times span > 2^63 s.
    age_days = (F.lit(float(newest)) - F.col(C.TIMESTAMP).cast("double")) / SECONDS_PER_DAY
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


def read_interactions(spark: SparkSession, cfg: Config) -> tuple[DataFrame, CheckedRows, DataFrame]:
    """The configured interactions read, checked and merged to one row per (user, item):
    ``(raw, checked, merged)``; ``merged`` and a CSV ``raw`` are persisted (unpersist when
    done), ``checked`` carries the read and dropped counts."""
    src = cfg.data.interactions
    raw = read_source(spark, src, "data.interactions")
    # The checks and the merge read the input twice: a CSV file is parsed once into the
    # cache; a columnar source is scanned twice, cheaper than building a cache of it.
    if is_text_file(src.path, src.format):
        raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
    wanted = {
        "user_col": src.user_col,
        "item_col": src.item_col,
        "strength_col": src.strength_col,
        "timestamp_col": src.timestamp_col,
    }
    require_columns(raw, wanted, "data.interactions")
    named = configured_columns(raw, **wanted)
    plain = {setting: _RAW[setting] if wanted[setting] is not None else None for setting in wanted}
    std = standardize_interactions(named, **plain)
    reasons, describe = interaction_checks(std, src.strength_col, src.timestamp_col)
    # The ids' types and the row checks in one pass over the input: an id is null under
    # either type, so the checks do not depend on it.
    checked = check_rows(
        std,
        reasons,
        describe,
        "data.interactions",
        drop=src.invalid_rows == "drop",
        extra=id_type_checks(named, user_col=plain["user_col"], item_col=plain["item_col"]),
    )
    events = type_ids(checked.rows.drop("_raw_strength"), checked.extra)
    if cfg.wals.confidence == "time_decay":
        events = weight_by_time_decay(events, half_life_days=cfg.wals.half_life_days)
    merged = merge_duplicates(events).persist(StorageLevel.MEMORY_AND_DISK)
    return raw, checked, merged


def row_counts(checked: CheckedRows, n_pairs: int) -> dict[str, Any]:
    """The manifest's accounting of the rows read: ``rows_read = used + merged + dropped``
    (per reason), ``used`` being the ``n_pairs`` distinct (user, item) pairs kept."""
    n_events = checked.read - sum(checked.dropped.values())
    return {
        "rows_read": checked.read,
        "used": n_pairs,
        "merged": n_events - n_pairs,
        "dropped": checked.dropped,
    }
