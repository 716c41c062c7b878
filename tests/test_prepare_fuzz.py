"""prepare under generated inputs: every row read is used, merged or dropped with a reason,
the tables agree with each other, or the stage stops with a named one-line error.

Strategies build small interaction tables (Parquet with typed columns, CSV all text) full
of nulls, blanks, duplicates, leading zeros, huge numbers, NaN/inf, odd timestamps,
unicode and long strings, plus config variations. The default run is short and
deterministic (``derandomize``, no example database); ``-m slow`` runs the same properties
deeper (``PREPARE_FUZZ_EXAMPLES`` sets how deep).
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import make_config
from wals_roberta.jobs import prepare
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.errors import InputDataError, WalsRobertaError

pytestmark = pytest.mark.spark

DEFAULT_EXAMPLES = 8  # the `slow` copies below run DEEP_EXAMPLES of the same properties
DEEP_EXAMPLES = int(os.environ.get("PREPARE_FUZZ_EXAMPLES", "200"))
_INTEGER_ID = re.compile(r"^(0|-?[1-9][0-9]{0,17})$")  # as jobs/data/inputs.py types ids
LONG = st.integers(-(2**63), 2**63 - 1)

# --- values ---------------------------------------------------------------------------

ID_TEXT = st.one_of(
    st.sampled_from(
        [
            "1",
            "7",
            "007",
            "0",
            "-3",
            "-0",
            " 42 ",
            "42",
            "",
            "   ",
            "a",
            "b,c",
            'say "hi"',
            "ünï",
            "🙂",
            "9223372036854775807",
            "99999999999999999999",
            "123456789012345678",
            "1e3",
            "+5",
            "x" * 10_000,
        ]  # fmt: skip
    ),
    st.text(max_size=6),
)
STRENGTH_TEXT = st.one_of(
    st.sampled_from(
        [
            "1",
            "2.5",
            " 3 ",
            "",
            "  ",
            "0",
            "-1",
            "NaN",
            "nan",
            "inf",
            "-Infinity",
            "lots",
            "1e308",
            "1e400",
            "1,5",
            "0x10",
            "1d",
        ]  # fmt: skip
    ),
    st.text(max_size=4),
)
STRENGTH_DOUBLE = st.one_of(
    st.sampled_from([0.0, 1.0, 2.5, -1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324]),
    st.floats(),
)
TIMESTAMP_TEXT = st.one_of(
    st.sampled_from(
        [
            "2024-01-01",
            "2024-01-01T12:00:00",
            "2024-01-01 12:00:00Z",
            "2024-02-30",
            "0001-01-01",
            "1970-01-01T00:00:00+05:00",
            "yesterday",
            "",
            "1700000000",
            " 1700000000 ",
            "-1",
            "9999999999999999999999",
            "9223372036854775807",
            "-9223372036854775808",
        ]  # fmt: skip
    ),
    st.text(max_size=4),
)
TIMESTAMP_LONG = st.one_of(st.sampled_from([0, 1_700_000_000, -1, 2**63 - 1, -(2**63)]), LONG)

# Each column kind: (arrow type, value strategy). CSV writes every value as text.
ID_KINDS = {
    "int": (pa.int32(), st.integers(-(2**31), 2**31 - 1) | st.integers(0, 5)),
    "long": (pa.int64(), LONG | st.integers(0, 5)),
    "string": (pa.string(), ID_TEXT),
}
STRENGTH_KINDS = {
    "double": (pa.float64(), STRENGTH_DOUBLE),
    "int": (pa.int64(), st.integers(-3, 10) | LONG),
    "string": (pa.string(), STRENGTH_TEXT),
}
TIMESTAMP_KINDS = {
    "long": (pa.int64(), TIMESTAMP_LONG),
    "string": (pa.string(), TIMESTAMP_TEXT),
    "timestamp": (pa.timestamp("us"), st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30))),
    "date": (pa.date32(), st.dates(date(1, 1, 1), date(9999, 12, 31))),
    "double": (pa.float64(), STRENGTH_DOUBLE),
}


@dataclass(frozen=True)
class Case:
    """One generated input: a table (column name -> kind and values) and config overrides."""

    fmt: str  # parquet | csv
    names: dict[str, str]  # role (user, item, strength, timestamp) -> column name
    kinds: dict[str, str]  # role -> kind in *_KINDS
    rows: list[dict[str, Any]]  # role -> value
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # long strings shortened so a failing example stays readable
        def short(v: Any) -> Any:
            return f"<{len(v)} chars {v[:8]!r}...>" if isinstance(v, str) and len(v) > 40 else v

        rows = [{k: short(v) for k, v in r.items()} for r in self.rows]
        return f"Case({self.fmt}, {self.names}, {self.kinds}, {self.settings}, rows={rows})"


NAMES = {
    "user": ["user", "user id", "u.id"],
    "item": ["item", "item.id", "Ärtikel"],
    "strength": ["plays", "play count", "p.l"],
    "timestamp": ["ts", "event.time"],
}


@st.composite
def cases(draw: st.DrawFn, fmt: str) -> Case:
    roles = ["user", "item"] + [r for r in ("strength", "timestamp") if draw(st.booleans())]
    names = {r: draw(st.sampled_from(NAMES[r])) for r in roles}
    kinds_of = {"user": ID_KINDS, "item": ID_KINDS, "strength": STRENGTH_KINDS}
    kinds_of["timestamp"] = TIMESTAMP_KINDS
    kinds = {
        r: "string" if fmt == "csv" else draw(st.sampled_from(sorted(kinds_of[r]))) for r in roles
    }
    values = {r: kinds_of[r][kinds[r]][1] for r in roles}
    # A few distinct rows, repeated and shuffled, so (user, item) pairs come back.
    if fmt == "csv":
        values = {r: _as_csv_text(kinds_of[r], values[r], draw) for r in roles}
    row = st.fixed_dictionaries({r: st.none() | values[r] for r in roles})
    distinct = draw(st.lists(row, min_size=1, max_size=12))
    picks = draw(st.lists(st.integers(0, len(distinct) - 1), min_size=1, max_size=40))
    rows = [distinct[i] for i in picks]

    use_strength = "strength" in roles and draw(st.booleans())
    use_time = "timestamp" in roles and draw(st.booleans())
    s: dict[str, Any] = {
        "data.interactions.user_col": names["user"],
        "data.interactions.item_col": names["item"],
        "data.interactions.strength_col": names["strength"] if use_strength else None,
        "data.interactions.timestamp_col": names["timestamp"] if use_time else None,
        "data.interactions.invalid_rows": draw(st.sampled_from(["fail", "drop"])),
        "wals.confidence": draw(st.sampled_from(["binary", "linear", "log", "sqrt", "time_decay"])),
        "split.holdout": draw(st.sampled_from(["none", "random", "time"])),
    }
    if s["wals.confidence"] == "time_decay":
        s["wals.half_life_days"] = draw(st.sampled_from([0.001, 30.0]))
    if s["wals.confidence"] == "log":
        s["wals.log_epsilon"] = draw(st.sampled_from([1e-9, 1.0]))
    if s["split.holdout"] != "none":
        s["split.fraction"] = draw(st.sampled_from([0.2, 0.5, 0.9]))
        s["split.cold_item_fraction"] = draw(st.sampled_from([0.0, 0.3]))
        s["split.heldout_user_fraction"] = draw(st.sampled_from([0.0, 0.3]))
        if s["split.holdout"] == "time" and draw(st.booleans()):
            s["split.time_cutoff"] = draw(TIMESTAMP_LONG)
    return Case(fmt=fmt, names=names, kinds=kinds, rows=rows, settings=s)


def _as_csv_text(kinds: dict, text_strategy: st.SearchStrategy, draw: st.DrawFn):
    """A CSV column: the string kind's values or another kind's values written as text."""
    kind = draw(st.sampled_from(sorted(kinds)))
    if kind == "string":
        return text_strategy
    return kinds[kind][1].map(lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v))


def write_case(case: Case, folder: str) -> str:
    if case.fmt == "parquet":
        path = os.path.join(folder, "events.parquet")
        arrays, fields = [], []
        for role, name in case.names.items():
            kind = {"strength": STRENGTH_KINDS, "timestamp": TIMESTAMP_KINDS}.get(role, ID_KINDS)
            arrow_type = kind[case.kinds[role]][0]
            arrays.append(pa.array([r[role] for r in case.rows], type=arrow_type))
            fields.append(name)
        pq.write_table(pa.Table.from_arrays(arrays, names=fields), path)
        return path
    path = os.path.join(folder, "events.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(case.names.values())
        out.writerows([[r[role] for role in case.names] for r in case.rows])
    return path


# --- the property -----------------------------------------------------------------------


def id_texts(case: Case, role: str) -> list[str | None]:
    """Each row's id as prepare should see it: trimmed text, None when null or empty."""
    out = []
    for r in case.rows:
        v = r[role]
        text = None if v is None else str(v).strip(" ")
        out.append(text or None)
    return out


def expected_ids(case: Case, role: str) -> set:
    """The distinct ids of the input, typed as prepare types them (longs when every one is
    an integer without leading zeros, else the trimmed strings)."""
    texts = {t for t in id_texts(case, role) if t is not None}
    if case.kinds[role] != "string" and case.fmt == "parquet":
        return {int(t) for t in texts}
    if all(_INTEGER_ID.match(t) for t in texts):
        return {int(t) for t in texts}
    return texts


def check_prepare(spark, folder: str, case: Case) -> None:
    path = write_case(case, folder)
    settings = dict(case.settings)
    if case.fmt == "csv":
        # Python's csv module writes RFC 4180: a quote inside a value is doubled (Spark's
        # escape option), and a line break inside one is quoted (its multiLine option).
        options = {"escape": '"'}
        if any(
            isinstance(v, str) and ("\n" in v or "\r" in v) for r in case.rows for v in r.values()
        ):
            options["multiLine"] = "true"
        settings["data.interactions.options"] = options
    try:
        cfg = make_config_in(folder, path, settings)
        report = prepare.run(spark, cfg, run_id="r1")
    except WalsRobertaError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return
    counts = report["counts"]["interactions"]
    dropped = counts["dropped"]
    assert counts["rows_read"] == len(case.rows), counts
    assert counts["used"] + counts["merged"] + sum(dropped.values()) == counts["rows_read"]
    assert all(n > 0 for n in dropped.values()), counts
    if case.settings["data.interactions.invalid_rows"] == "fail":
        assert dropped == {}, counts
    users = [r["user"] for r in case.rows]
    n_null_users = sum(t is None for t in id_texts(case, "user"))
    n_null_items = sum(
        u is not None and i is None
        for u, i in zip(id_texts(case, "user"), id_texts(case, "item"), strict=True)
    )
    assert dropped.get("null_user_id", 0) == n_null_users, (counts, users)
    assert dropped.get("null_item_id", 0) == n_null_items, counts

    run = tables.open_run(spark, cfg, "r1", create=False)
    manifest = tables.read_manifest(spark, run)
    assert manifest["stages"]["prepare"]["counts"]["interactions"] == counts
    t = {n: tables.read_table(spark, run, n).toPandas() for n in ("users", "items", "interactions")}
    u, i, x = t["users"], t["items"], t["interactions"]
    assert len(x) == counts["used"] == report["rows"]["interactions"]
    assert int(x[C.N_EVENTS].sum()) == counts["used"] + counts["merged"]
    assert sorted(u[C.USER_IDX]) == list(range(len(u))), "user_idx not dense 0..n-1"
    assert sorted(i[C.ITEM_IDX]) == list(range(len(i))), "item_idx not dense 0..n-1"
    assert u[C.USER_ID].is_unique and i[C.ITEM_ID].is_unique
    assert set(x[C.USER_IDX]) == set(u[C.USER_IDX])  # every user has an interaction
    assert set(x[C.ITEM_IDX]) <= set(i[C.ITEM_IDX])
    assert not x.duplicated([C.USER_IDX, C.ITEM_IDX]).any()
    # Ids survive as they were: "007" stays "007", an integer column stays integers.
    assert set(u[C.USER_ID]) <= expected_ids(case, "user")
    assert set(i[C.ITEM_ID]) <= expected_ids(case, "item")
    if not dropped:
        assert set(u[C.USER_ID]) == expected_ids(case, "user")
    # What ALS is given is finite and not negative.
    for col in (C.STRENGTH, C.RATING):
        values = x[col].astype(float)
        assert values.map(math.isfinite).all() and (values >= 0).all(), (col, values.tolist())
    if case.settings["data.interactions.strength_col"] is None:
        if case.settings["wals.confidence"] != "time_decay":
            assert (x[C.STRENGTH] == x[C.N_EVENTS]).all()
    if case.settings["data.interactions.timestamp_col"] is None:
        assert x[C.TIMESTAMP].isna().all()
    else:
        assert x[C.TIMESTAMP].notna().all()
    assert set(x[C.SPLIT]) <= {C.TRAIN, C.TEST, C.FOLD_IN}
    if case.settings["split.holdout"] == "none":
        assert (x[C.SPLIT] == C.TRAIN).all()


def make_config_in(folder: str, path: str, dotted: dict[str, Any]):
    from pathlib import Path

    return make_config(Path(folder), path, **dotted)


def _fuzz(fmt: str, max_examples: int):
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        # PREPARE_FUZZ_SHRINK=0 reports the first failure unshrunk (shrinking runs Spark
        # for every attempt: minutes).
        phases=[
            p for p in Phase if p != Phase.shrink or os.environ.get("PREPARE_FUZZ_SHRINK") != "0"
        ],
    )
    @given(case=cases(fmt))
    def test(spark, tmp_path, case):
        check_prepare(spark, tempfile.mkdtemp(dir=tmp_path), case)

    return test


test_prepare_parquet_inputs = _fuzz("parquet", DEFAULT_EXAMPLES)
test_prepare_csv_inputs = _fuzz("csv", DEFAULT_EXAMPLES)
test_prepare_parquet_inputs_deep = pytest.mark.slow(_fuzz("parquet", DEEP_EXAMPLES))
test_prepare_csv_inputs_deep = pytest.mark.slow(_fuzz("csv", DEEP_EXAMPLES))


# --- what the fuzzing found, as plain examples ------------------------------------------


def _case(fmt, names, kinds, rows, **settings) -> Case:
    base = {
        "data.interactions.user_col": names["user"],
        "data.interactions.item_col": names["item"],
        "data.interactions.strength_col": names.get("strength"),
        "data.interactions.timestamp_col": names.get("timestamp"),
        "data.interactions.invalid_rows": "fail",
        "wals.confidence": "linear",
        "split.holdout": "none",
    }
    return Case(fmt=fmt, names=names, kinds=kinds, rows=rows, settings={**base, **settings})


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_column_names_with_dots_spaces_and_backticks_are_taken_as_they_are(spark, tmp_path, fmt):
    # Was: AnalysisException UNRESOLVED_COLUMN for `item`.`id` (a dot read as a struct field).
    names = {"user": "user id", "item": "item.id", "strength": "p`l", "timestamp": "event.time"}
    kinds = {"user": "string", "item": "long", "strength": "double", "timestamp": "long"}
    if fmt == "csv":
        kinds = dict.fromkeys(kinds, "string")
    rows = [
        {"user": "a", "item": 1, "strength": 2.0, "timestamp": 10},
        {"user": "a", "item": 1, "strength": 1.0, "timestamp": 20},
        {"user": "b", "item": 2, "strength": 1.0, "timestamp": 30},
    ]
    check_prepare(spark, str(tmp_path), _case(fmt, names, kinds, rows))


# Was: CAST_OVERFLOW (a double timestamp cast with cast('long')), not invalid_timestamp.
@pytest.mark.parametrize("value", [math.nan, 1e187, math.inf])
def test_double_timestamps_out_of_range_are_invalid_rows(spark, tmp_path, value):
    names = {"user": "user", "item": "item", "timestamp": "ts"}
    kinds = {"user": "long", "item": "long", "timestamp": "double"}
    rows = [{"user": 1, "item": 1, "timestamp": value}, {"user": 1, "item": 2, "timestamp": 5.5}]
    check_prepare(spark, str(tmp_path), _case("parquet", names, kinds, rows))


TYPED = {"user": "long", "item": "long", "strength": "double", "timestamp": "long"}
ROLES = {"user": "user", "item": "item", "strength": "plays", "timestamp": "ts"}


@pytest.mark.parametrize(
    "strengths, dotted, message",
    [
        # Was: strength inf in the interactions table (two finite strengths summed).
        ([1e308, 1e308], {}, "have a summed strength beyond the largest double"),
        # Was: rating inf (a float): linear and sqrt ratings of 1e308, log with a tiny epsilon.
        ([1e308, 1.0], {}, "wals.confidence=linear rating overflows a float"),
        ([1e308, 1.0], {"wals.confidence": "sqrt"}, "wals.confidence=sqrt rating overflows"),
        (
            [1e308, 1.0],
            {"wals.confidence": "log", "wals.log_epsilon": 1e-9},
            "wals.confidence=log rating overflows a float (above about 3.4e38); scale the "
            "strength column down",
        ),
    ],
)
def test_strengths_that_overflow_stop_with_the_reason(spark, tmp_path, strengths, dotted, message):
    items = [1, 1] if strengths == [1e308, 1e308] else [1, 2]
    rows = [
        {"user": 1, "item": i, "strength": s, "timestamp": 1}
        for i, s in zip(items, strengths, strict=True)
    ]
    case = _case("parquet", ROLES, TYPED, rows, **dotted)
    cfg = make_config_in(str(tmp_path), write_case(case, str(tmp_path)), case.settings)
    with pytest.raises(InputDataError) as err:
        prepare.run(spark, cfg, run_id="r1")
    assert message in str(err.value) and "\n" not in str(err.value)
    check_prepare(spark, tempfile.mkdtemp(dir=tmp_path), case)


def test_time_decay_over_the_whole_long_range_of_timestamps(spark, tmp_path):
    # Was: ArithmeticException ARITHMETIC_OVERFLOW (newest - timestamp in longs).
    rows = [
        {"user": 1, "item": 1, "strength": 1.0, "timestamp": 2**63 - 1},
        {"user": 1, "item": 2, "strength": 1.0, "timestamp": -(2**63)},
    ]
    case = _case("parquet", ROLES, TYPED, rows, **{"wals.confidence": "time_decay"})
    case.settings["wals.half_life_days"] = 30.0
    check_prepare(spark, str(tmp_path), case)
    run = tables.open_run(spark, make_config_in(str(tmp_path), "x", case.settings), "r1", False)
    got = tables.read_table(spark, run, "interactions").toPandas().sort_values(C.ITEM_IDX)
    assert got[C.STRENGTH].tolist() == [1.0, 0.0]  # the oldest decayed to nothing
