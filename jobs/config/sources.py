"""The reader options of the data sources, one value per Spark option name."""

from __future__ import annotations

from wals_roberta.jobs.config.schema import DataConfig, InteractionsInput, ItemsInput
from wals_roberta.jobs.runs.errors import ConfigError

# Spark compares reader option names case-insensitively and takes ``sep`` over
# ``delimiter`` when both are given: one name each, so that no spelling wins silently.
_SAME_READER_OPTION = {"delimiter": "sep"}


def reader_options(src: InteractionsInput | ItemsInput, key: str) -> dict[str, str]:
    """The Spark reader options ``src`` asks for, by lower-case Spark name (``delimiter``
    as ``sep``), ``csv_delimiter`` taken as the alias of ``options.delimiter`` when it is
    not the default ``,``. Raises ConfigError when two spellings of one option disagree, or
    when options are given for ``format: table`` (a metastore table is read as it is)."""
    merged: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for name, value in src.options.items():
        canon = _SAME_READER_OPTION.get(name.lower(), name.lower())
        if merged.get(canon, value) != value:
            raise ConfigError(
                f"{key}.options: {spelled[canon]!r} and {name!r} are the same Spark option, "
                f"given {merged[canon]!r} and {value!r}; keep one"
            )
        merged[canon], spelled[canon] = value, name
    if src.csv_delimiter != ",":
        given = merged.setdefault("sep", src.csv_delimiter)
        if given != src.csv_delimiter:
            raise ConfigError(
                f"{key}.csv_delimiter={src.csv_delimiter!r} and "
                f"{key}.options.{spelled['sep']}={given!r} disagree; csv_delimiter is an alias "
                "of options.delimiter: set one of them"
            )
    if src.format == "table" and merged:
        named = [f"{key}.options.{n}" for n in src.options]
        named += [f"{key}.csv_delimiter"] if src.csv_delimiter != "," else []
        raise ConfigError(
            f"{', '.join(named)}: reader options do not apply to {key}.format=table "
            "(a metastore table is read as it is); remove them"
        )
    return merged


def validate_reader_options(data: DataConfig) -> None:
    """:func:`reader_options` of both sources, for ``validate``: a ConfigError naming the key."""
    reader_options(data.interactions, "data.interactions")
    reader_options(data.items, "data.items")
