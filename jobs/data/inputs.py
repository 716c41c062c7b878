"""Reading the raw inputs and checking them row by row, with every bad row counted."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from wals_roberta.jobs.config import InteractionsInput, ItemsInput
from wals_roberta.jobs.config.sources import reader_options
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.runs import storage
from wals_roberta.jobs.runs.errors import InputDataError, first_line

# Integer ids without leading zeros fit a long exactly; anything else stays a string so
# that the original id survives ("007" is not 7).
_INTEGER_ID = r"^(0|-?[1-9][0-9]{0,17})$"
_INTEGRAL_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


# A CSV has a header row and keeps malformed rows (as nulls, then counted) unless the
# source's options say otherwise.
_CSV_DEFAULTS = {"header": "true", "mode": "PERMISSIVE", "sep": ","}


def read_source(spark: SparkSession, src: InteractionsInput | ItemsInput, key: str) -> DataFrame:
    """Read the source's Parquet, CSV, Delta or metastore table.

    ``src.options`` go to Spark's reader under Spark's names, for every file format, over
    the CSV defaults (header row, PERMISSIVE); ``csv_delimiter`` is the alias of
    ``options.delimiter`` (see :func:`~wals_roberta.jobs.config.sources.reader_options`).
    ``key`` names the config section in errors, e.g. ``data.interactions``.
    """
    asked = reader_options(src, key)
    path, fmt = src.path, src.format
    if fmt == "table":
        try:
            return spark.table(path)
        except AnalysisException:
            raise InputDataError(f"{key}.path: no table named {path!r} in the metastore") from None
    location = storage.normalize(path)
    if not storage.exists(spark, location):
        raise InputDataError(f"{key}.path: no such file or directory: {path}")
    if fmt == "auto":
        fmt = _guess_format(spark, location)
    reader = spark.read.format(fmt).options(
        **({**_CSV_DEFAULTS, **asked} if fmt == "csv" else asked)
    )
    try:
        return reader.load(location)
    except (AnalysisException, IllegalArgumentException) as exc:
        first = first_line(exc)[:200]
        raise InputDataError(f"{key}.path: cannot read {path} as {fmt}: {first}") from None


_TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz")


def is_text_file(path: str, fmt: str) -> bool:
    """Whether ``read_source`` parses this source as CSV (every read parses it again)."""
    return fmt == "csv" or (fmt == "auto" and path.lower().endswith(_TEXT_SUFFIXES))


def _guess_format(spark: SparkSession, location: str) -> str:
    lower = location.lower()
    if lower.endswith(_TEXT_SUFFIXES):
        return "csv"
    if storage.is_dir(spark, location) and "_delta_log" in storage.list_names(spark, location):
        return "delta"
    return "parquet"


def require_columns(df: DataFrame, wanted: dict[str, str | None], key: str) -> None:
    """``wanted`` maps a config key suffix (``user_col``) to the column it names."""
    present = set(df.columns)
    for setting, column in wanted.items():
        if column is not None and column not in present:
            has = (
                _one_column(df.columns[0], key)
                if len(df.columns) == 1
                else f"the input has: {', '.join(df.columns)}"
            )
            raise InputDataError(
                f"{key}: column {column!r} (from {key}.{setting}) not found; {has}"
            )


_OTHER_DELIMITERS = (";", "|", "\t")


def _one_column(header: str, key: str) -> str:
    """The input's one column and, when it looks like a CSV header read with the wrong
    delimiter, the option to set."""
    shown = f"the input has one column {header[:200]!r}"
    found = max(_OTHER_DELIMITERS, key=header.count)
    if found not in header:
        return shown
    typed = "\\t" if found == "\t" else found
    return f'{shown}, which looks {found!r}-delimited: set {key}.options.delimiter="{typed}"'


def id_column(df: DataFrame, column: str) -> Column:
    """The id as a long when every value is an integer without leading zeros, else a string.

    Integral columns stay longs; a string column is checked with one aggregation (see
    :func:`id_text` and :func:`non_integer_ids` to fold that check into another pass).
    """
    text = id_text(df, column)
    if not isinstance(df.schema[column].dataType, T.StringType):
        return text
    non_integer = df.agg(non_integer_ids(text)).first()[0]
    return typed_id(text, all_integer=non_integer == 0)


def id_text(df: DataFrame, column: str) -> Column:
    """The id before its type is known: a long for integral columns, otherwise the trimmed
    text, null when empty. Null exactly where :func:`id_column` is, whatever type it picks."""
    dtype = df.schema[column].dataType
    if isinstance(dtype, _INTEGRAL_TYPES):
        return F.col(column).cast("long")
    text = F.trim(F.col(column).cast("string"))
    return F.when(text != "", text)


def needs_type_check(df: DataFrame, column: str) -> bool:
    """Whether :func:`id_column` would look at the values (string columns) to type the id."""
    return isinstance(df.schema[column].dataType, T.StringType)


def non_integer_ids(text: Column) -> Column:
    """Aggregate: how many ids (an :func:`id_text` column) are not integers."""
    return F.count(F.when(text.isNotNull() & ~text.rlike(_INTEGER_ID), 1))


def typed_id(text: Column, *, all_integer: bool) -> Column:
    """The :func:`id_text` column as a long when every id is an integer, else as it is."""
    return text.try_cast("long") if all_integer else text


@dataclass(frozen=True)
class CheckedRows:
    """Rows that passed, how many were dropped for each reason, and the ``extra``
    aggregates computed in the same pass."""

    rows: DataFrame
    read: int
    dropped: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)


def check_rows(
    df: DataFrame,
    reasons: dict[str, Column],
    describe: dict[str, str],
    key: str,
    drop: bool,
    extra: dict[str, Column] | None = None,
) -> CheckedRows:
    """Count every row against named invalid-row conditions in one pass.

    ``reasons`` maps a reason (``negative_strength``) to a boolean column; ``describe`` says
    it in words for the error. Each row is counted under its first reason only, so the counts
    add up. With ``drop`` the rows are removed and counted, otherwise the first reason with
    rows raises an InputDataError naming it, with a count and an example. ``extra`` names
    further aggregates over all rows for the same pass (one job for all of them).
    """
    extra = extra or {}
    aggs = [F.count(F.lit(1)).alias("_read")]
    aggs += [agg.alias(f"_extra_{name}") for name, agg in extra.items()]
    earlier = F.lit(False)
    for i, cond in enumerate(reasons.values()):
        aggs.append(F.count(F.when(cond & ~earlier, 1)).alias(f"_reason_{i}"))
        earlier = earlier | F.coalesce(cond, F.lit(False))
    totals = df.agg(*aggs).first()
    read = int(totals["_read"])
    if read == 0:
        raise InputDataError(f"{key}: the input has no rows")
    dropped: dict[str, int] = {}
    for i, (name, cond) in enumerate(reasons.items()):
        count = int(totals[f"_reason_{i}"])
        if count and not drop:
            example = df.filter(cond).limit(1).collect()[0].asDict()
            raise InputDataError(
                f"{key}: {count:,} of {read:,} rows have {describe[name]} (e.g. {example}); "
                f"fix the input or set {key}.invalid_rows=drop to drop and count them"
            )
        if count:
            dropped[name] = count
    kept = df.filter(~earlier) if dropped else df
    if dropped and sum(dropped.values()) == read:
        raise InputDataError(f"{key}: every one of {read:,} rows is invalid: {dropped}")
    counts = {name: int(totals[f"_extra_{name}"] or 0) for name in extra}
    return CheckedRows(rows=kept, read=read, dropped=dropped, extra=counts)


def interaction_checks(
    df: DataFrame, strength_col: str | None, timestamp_col: str | None
) -> tuple[dict[str, Column], dict[str, str]]:
    """Invalid-row conditions on the standardized columns (user_id, item_id, strength, timestamp)
    with the raw strength/timestamp values still in ``_raw_strength``/``_raw_timestamp``."""
    reasons = {
        "null_user_id": F.col(C.USER_ID).isNull(),
        "null_item_id": F.col(C.ITEM_ID).isNull(),
    }
    describe = {
        "null_user_id": "a null or empty user id",
        "null_item_id": "a null or empty item id",
    }
    if strength_col is not None:
        s = F.col(C.STRENGTH)
        raw = F.col("_raw_strength")
        reasons |= {
            "null_strength": raw.isNull(),
            "non_numeric_strength": raw.isNotNull() & s.isNull(),
            "nan_strength": F.isnan(s),
            "infinite_strength": s.isin(float("inf"), float("-inf")),
            "negative_strength": s < 0,
        }
        describe |= {
            "null_strength": f"a null strength in column {strength_col!r}",
            "non_numeric_strength": f"a non-numeric strength in column {strength_col!r}",
            "nan_strength": f"a NaN strength in column {strength_col!r}",
            "infinite_strength": f"an infinite strength in column {strength_col!r}",
            "negative_strength": f"a negative strength in column {strength_col!r}",
        }
    if timestamp_col is not None:
        reasons["invalid_timestamp"] = F.col(C.TIMESTAMP).isNull()
        describe["invalid_timestamp"] = f"a null or unparseable timestamp in {timestamp_col!r}"
    return reasons, describe


def numeric_column(df: DataFrame, column: str) -> Column:
    """A double, or null where the value is not a number (ANSI-safe)."""
    return F.col(column).try_cast("double")


def timestamp_seconds(df: DataFrame, column: str) -> Column:
    """Event time as unix seconds: numeric columns as they are, timestamps and date strings
    converted; null where unparseable."""
    dtype = df.schema[column].dataType
    col = F.col(column)
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.unix_timestamp(col.cast("timestamp"))
    if isinstance(dtype, (T.FloatType, T.DoubleType)):
        return F.when(~F.isnan(col), col.try_cast("long"))  # NaN, inf, 1e187: invalid
    if isinstance(dtype, T.NumericType):
        return col.try_cast("long")
    text = F.trim(col.cast("string"))
    return F.coalesce(text.try_cast("long"), F.unix_timestamp(F.try_to_timestamp(text)))
