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
    id_column,
    read_source,
    require_columns,
)
from wals_roberta.jobs.runs.errors import ConfigError, InputDataError

TEXT = "text"
TEXT_HASH = "text_hash"
MAX_TEXT_CHARS = 10_000
_CONTROL = r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"


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


def catalog_text(catalog: DataFrame, template: str) -> tuple[DataFrame, dict[str, int]]:
    """``(item_id, text, text_hash)`` per distinct item id, with counts of what was done.

    ``catalog`` has ``item_id`` plus the template's columns. Duplicate ids keep the
    greatest text (deterministic) and are counted as merged.
    """
    check_template(template, catalog.columns)
    raw = F.concat(
        *[F.coalesce(F.col(f"`{n}`").cast("string"), F.lit("")) for n in template_fields(template)]
        or [F.lit("")]
    )
    texts = catalog.select(
        C.ITEM_ID,
        text_column(template).alias(TEXT),
        raw.contains("\ufffd").alias("_replaced"),
        raw.rlike(_CONTROL).alias("_control"),
        (F.length(raw) > MAX_TEXT_CHARS).alias("_long"),
    )
    counts = (
        texts.agg(
            F.count(F.when(F.col("_replaced"), 1)).alias("texts_with_invalid_utf8"),
            F.count(F.when(F.col("_control"), 1)).alias("texts_with_control_chars"),
            F.count(F.when(F.col("_long"), 1)).alias("texts_truncated"),
        )
        .first()
        .asDict()
    )
    per_item = texts.groupBy(C.ITEM_ID).agg(F.max(TEXT).alias(TEXT))
    per_item = per_item.withColumn(
        TEXT_HASH, F.when(F.col(TEXT).isNotNull(), F.sha2(F.col(TEXT), 256))
    )
    return per_item, {k: int(v) for k, v in counts.items()}


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
    raw = read_source(spark, src, "data.items")
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
