"""``--set key=value`` overrides: the dotted key walked through the schema, the value read
as YAML, except that a key whose type is text takes the value as typed."""

from __future__ import annotations

import dataclasses
import typing
from collections import abc
from collections.abc import Mapping
from typing import Any

import yaml

from wals_roberta.jobs.config.schema import Config
from wals_roberta.jobs.runs.errors import ConfigError


def apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set wals.rank=128")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    set_path(raw, key.strip(), value, text=text)


def set_path(raw: dict[str, Any], dotted: str, value: Any, text: str | None = None) -> None:
    """Set a dotted key; a mapping-typed field (spark.conf) takes the rest as one key.

    ``text`` is the value as typed on the command line: a key whose type is a string takes
    it as it is when YAML read it as a mapping or a list (``--set
    data.items.text_template={title}`` is the template ``{title}``, not a mapping)."""
    if text is not None and isinstance(value, (dict, list)) and _is_text_key(dotted):
        value = text
    parts = dotted.split(".")
    cls: Any = Config
    node = raw
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            prefix = ".".join(parts[:i])
            raise ConfigError(unknown_key_message(prefix, part, fields))
        ftype = typing.get_type_hints(cls)[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(ftype) and not last:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: must be a mapping")
            cls = ftype
            continue
        if typing.get_origin(ftype) is abc.Mapping and not last:
            node.setdefault(part, {})[".".join(parts[i + 1 :])] = value
            return
        if not last:
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
        node[part] = value
        return


def _is_text_key(dotted: str) -> bool:
    """Whether the dotted key names a string field, or an entry of a map of strings."""
    cls: Any = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            return False  # unknown: set_path names it
        ftype = hints[part]
        if dataclasses.is_dataclass(ftype):
            cls = ftype
            continue
        if typing.get_origin(ftype) is abc.Mapping:
            return i < len(parts) - 1
        args = [a for a in typing.get_args(ftype) if a is not type(None)]
        return i == len(parts) - 1 and (ftype is str or args == [str])
    return False


def unknown_key_message(prefix: str, key: str, fields: Mapping[str, Any]) -> str:
    full = f"{prefix}.{key}" if prefix else key
    return f"unknown config key {full!r}; allowed here: {', '.join(sorted(fields))}"
