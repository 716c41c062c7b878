"""Item text from the catalog: a template over item columns, cleaned, hashed, counted.

``"{title} ({year}). Genres: {genres}"`` names columns in braces (``{{`` for a literal
brace). A null column reads as empty. Control characters become spaces, whitespace runs
collapse, and an empty result is null (an item without text, counted). Bytes that were
not UTF-8 arrive as U+FFFD from Spark's readers and are counted. Texts are cut at
``MAX_TEXT_CHARS`` characters (counted): the encoder reads at most ``encoder.max_length``
tokens anyway.
"""

from __future__ import annotations

import string
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.inputs import (
    id_text,
    needs_type_check,
    non_integer_ids,
    read_source,
    require_columns,
    typed_id,
)
from wals_roberta.jobs.runs.errors import ConfigError, InputDataError

TEXT = "text"
TEXT_HASH = "text_hash"
MAX_TEXT_CHARS = 10_000
_CONTROL = r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"
_TEXT_FLAGS = ("texts_with_invalid_utf8", "texts_with_control_chars", "texts_truncated")


def template_fields(template: str) -> list[str]:
    """Column names the template uses, in order; only plain ``{name}`` fields."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"data.items.text_template: {exc} in {template!r}") from None
    fields = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name or spec or conversion:
            raise ConfigError(
                f"data.items.text_template: use plain {{column}} fields, got {{{name}...}} "
                f"in {template!r}"
            )
        fields.append(name)
    return fields


def check_template(template: str, columns: list[str]) -> None:
    for name in template_fields(template):
        if name not in columns:
            raise ConfigError(
                f"data.items.text_template: column {name!r} is not in data.items "
                f"(columns: {', '.join(columns)})"
            )


def text_column(template: str) -> Column:
    """The cleaned text as a column; null when nothing but whitespace is left."""
    pieces: list[Column] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            pieces.append(F.lit(literal))
        if name is not None:
            pieces.append(F.coalesce(F.col(f"`{name}`").cast("string"), F.lit("")))
    raw = F.concat(*pieces) if pieces else F.lit("")
    cleaned = F.trim(F.regexp_replace(F.regexp_replace(raw, _CONTROL, " "), r"\s+", " "))
    return F.when(F.length(cleaned) > 0, F.substring(cleaned, 1, MAX_TEXT_CHARS))


def catalog_rows(catalog: DataFrame, template: str | None) -> DataFrame:
    """One row per catalog row: ``item_id``, the built ``text`` (null without a template)
    and the flags the text counts sum (replaced bytes, control characters, truncation)."""
    if template is None:
        no = F.lit(False)
        return catalog.select(
            C.ITEM_ID, F.lit(None).cast("string").alias(TEXT), *[no.alias(f) for f in _TEXT_FLAGS]
        )
    check_template(template, catalog.columns)
    raw = F.concat(
        *[F.coalesce(F.col(f"`{n}`").cast("string"), F.lit("")) for n in template_fields(template)]
        or [F.lit("")]
    )
    return catalog.select(
        C.ITEM_ID,
        text_column(template).alias(TEXT),
        raw.contains("\ufffd").alias("texts_with_invalid_utf8"),
        raw.rlike(_CONTROL).alias("texts_with_control_chars"),
        (F.length(raw) > MAX_TEXT_CHARS).alias("texts_truncated"),
    )


def per_item(rows: DataFrame) -> DataFrame:
    """:func:`catalog_rows` grouped by ``item_id`` (null ids are one group): the kept text,
    the group's rows, its distinct texts (a null text counts as one) and its text flags.

    The kept text is the greatest of the id's texts in Spark's string order (by code
    point), a null text only when all are null: the same row whatever the input order.
    """
    return rows.groupBy(C.ITEM_ID).agg(
        F.max(TEXT).alias(TEXT),
        F.count(F.lit(1)).alias("_rows"),
        (F.countDistinct(TEXT) + F.max(F.col(TEXT).isNull().cast("int"))).alias("_texts"),
        *[F.count_if(f).alias(f) for f in _TEXT_FLAGS],
    )


def catalog_counts(items: DataFrame, *, type_check: bool) -> dict[str, int]:
    """The row accounting of :func:`per_item` in one aggregation: rows read, ids used,
    identical duplicates merged, ids with conflicting texts and the rows merged because of
    them, null ids, the text flags over rows with an id, and (``type_check``) how many ids
    are not integers."""
    valid = F.col(C.ITEM_ID).isNotNull()
    conflicting = valid & (F.col("_texts") > 1)
    aggs = {
        "rows_read": F.sum("_rows"),
        "null_item_id": F.sum(F.when(~valid, F.col("_rows"))),
        "used": F.count_if(valid),
        "merged": F.sum(F.when(valid, F.col("_rows") - F.col("_texts"))),
        "conflicting_ids": F.count_if(conflicting),
        "conflicting_rows_merged": F.sum(F.when(conflicting, F.col("_texts") - 1)),
        **{f: F.sum(F.when(valid, F.col(f))) for f in _TEXT_FLAGS},
    }
    if type_check:
        aggs["non_integer_ids"] = non_integer_ids(F.col(C.ITEM_ID))
    totals = items.agg(*[agg.alias(name) for name, agg in aggs.items()]).first()
    return {name: int(totals[name] or 0) for name in aggs}


def read_catalog(
    spark: SparkSession, cfg: Config
) -> tuple[DataFrame | None, DataFrame | None, dict[str, Any]]:
    """The item metadata table, if configured: its distinct ids, the item text built by
    ``data.items.text_template`` (``(item_id, text, text_hash)``, or None without a
    template), and its row accounting: rows read = used + merged (identical rows: same id,
    same text) + conflicting_rows_merged (an id's rows with other texts than the kept one)
    + dropped (null ids). Under ``data.items.invalid_rows=fail`` a null id or an id with
    two texts is an InputDataError; under ``drop`` null ids are dropped and each id keeps
    its greatest text (:func:`per_item`). Without a template rows are only ids, so every
    duplicate is an identical merge."""
    src = cfg.data.items
    if src.path is None:
        if src.text_template is not None:
            raise ConfigError("data.items.text_template is set but data.items.path is not")
        return None, None, {}
    raw = read_source(spark, src, "data.items")
    require_columns(raw, {"id_col": src.id_col}, "data.items")
    if src.text_template is not None:
        check_template(src.text_template, raw.columns)
    # Grouped on the id before its type is known (the type maps ids one to one), so that
    # the type check is part of the one counting pass.
    rows = catalog_rows(raw.withColumn(C.ITEM_ID, id_text(raw, src.id_col)), src.text_template)
    items = per_item(rows)
    counts = catalog_counts(items, type_check=needs_type_check(raw, src.id_col))
    if counts["rows_read"] == 0:
        raise InputDataError("data.items: the input has no rows (an empty catalog)")
    _check_catalog(rows, items, counts, src.id_col, drop=src.invalid_rows == "drop")
    report: dict[str, Any] = {
        "rows_read": counts["rows_read"],
        "used": counts["used"],
        "merged": counts["merged"],
        "conflicting_ids": counts["conflicting_ids"],
        "conflicting_rows_merged": counts["conflicting_rows_merged"],
        "dropped": {"null_item_id": counts["null_item_id"]} if counts["null_item_id"] else {},
    }
    items = items.filter(F.col(C.ITEM_ID).isNotNull())
    if "non_integer_ids" in counts:  # a string id column: longs when every id is an integer
        typed = typed_id(F.col(C.ITEM_ID), all_integer=counts["non_integer_ids"] == 0)
        items = items.withColumn(C.ITEM_ID, typed)
    if src.text_template is None:
        return items.select(C.ITEM_ID), None, report
    report["text"] = {f: counts[f] for f in _TEXT_FLAGS}
    texts = items.select(
        C.ITEM_ID, TEXT, F.when(F.col(TEXT).isNotNull(), F.sha2(F.col(TEXT), 256)).alias(TEXT_HASH)
    )
    return items.select(C.ITEM_ID), texts, report


def _check_catalog(
    rows: DataFrame, items: DataFrame, counts: dict[str, int], id_col: str, *, drop: bool
) -> None:
    """Null ids and ids with conflicting texts: an InputDataError unless ``drop``."""
    n_read, n_null = counts["rows_read"], counts["null_item_id"]
    if n_null and not drop:
        raise InputDataError(
            f"data.items: {n_null:,} of {n_read:,} rows have a null or empty item id (column "
            f"{id_col!r}); fix the input or set data.items.invalid_rows=drop to drop and count them"
        )
    if n_null == n_read:
        raise InputDataError(f"data.items: every one of {n_read:,} rows has a null or empty id")
    n_conflicting = counts["conflicting_ids"]
    if n_conflicting and not drop:
        conflicting = items.filter(F.col(C.ITEM_ID).isNotNull() & (F.col("_texts") > 1))
        example = conflicting.orderBy(C.ITEM_ID).first()  # the least id: a top-1, no sort
        texts = (
            rows.filter(F.col(C.ITEM_ID) == example[C.ITEM_ID])
            .select(TEXT)
            .distinct()
            .orderBy(F.col(TEXT).desc_nulls_last())
            .limit(2)
            .collect()
        )
        shown = " and ".join(_short(r[TEXT]) for r in texts)
        raise InputDataError(
            f"data.items: {n_conflicting:,} item ids appear with different texts (e.g. id "
            f"{example[C.ITEM_ID]!r}: {shown}); fix the input or set data.items.invalid_rows=drop "
            "to keep one row per id (its greatest text)"
        )


def _short(text: str | None, limit: int = 80) -> str:
    if text is None:
        return "no text"
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def same_id_type(a: DataFrame, b: DataFrame) -> tuple[DataFrame, DataFrame]:
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
