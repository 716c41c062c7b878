"""The item catalog: duplicate ids (identical or with conflicting texts), null ids, and the
row accounting read = used + merged + conflicting_rows_merged + dropped."""

import pandas as pd
import pytest

from tests.conftest import make_config
from wals_roberta.jobs.data.item_text import read_catalog
from wals_roberta.jobs.runs.errors import InputDataError

pytestmark = pytest.mark.spark

ROWS = [
    ("i1", "Alpha"),
    ("i1", "Beta"),  # conflicts with Alpha: Beta, the greatest, is kept
    ("i1", "Beta"),  # identical to the row above: merged
    ("i2", "Gamma"),
    ("i2", "  Gamma "),  # the same text once built (whitespace): merged
    ("i3", "Delta"),
]


def catalog(spark, tmp_path, rows, template="{title}", **dotted):
    path = tmp_path / "items.csv"
    pd.DataFrame(rows, columns=["item_id", "title"]).to_csv(path, index=False)
    cfg = make_config(
        tmp_path,
        "unused.csv",
        **{"data.items.path": str(path), "data.items.text_template": template, **dotted},
    )
    return read_catalog(spark, cfg)


def adds_up(report):
    parts = report["used"] + report["merged"] + report["conflicting_rows_merged"]
    return parts + sum(report["dropped"].values()) == report["rows_read"]


def test_conflicting_texts_are_counted_and_keep_the_greatest_under_drop(spark, tmp_path):
    rows = [*ROWS, (None, "Epsilon"), ("i4", "Zeta"), ("i4", None), ("i4", "Eta")]
    ids, texts, report = catalog(spark, tmp_path, rows, **{"data.items.invalid_rows": "drop"})
    assert {k: v for k, v in report.items() if k != "text"} == {
        "rows_read": 10,
        "used": 4,
        "merged": 2,
        "conflicting_ids": 2,  # i1 (Alpha, Beta) and i4 (Zeta, no text, Eta)
        "conflicting_rows_merged": 3,
        "dropped": {"null_item_id": 1},
    }
    assert adds_up(report)
    got = dict(texts.select("item_id", "text").collect())
    assert got == {"i1": "Beta", "i2": "Gamma", "i3": "Delta", "i4": "Zeta"}
    assert sorted(r.item_id for r in ids.collect()) == ["i1", "i2", "i3", "i4"]


def test_conflicting_texts_fail_by_default_naming_an_id_and_two_texts(spark, tmp_path):
    long = "Omega " * 30
    with pytest.raises(InputDataError) as err:
        catalog(spark, tmp_path, [*ROWS, ("i0", long), ("i0", "Short")])
    message = str(err.value)
    assert message.startswith("data.items: 2 item ids appear with different texts (e.g. id ")
    assert message.endswith(
        "fix the input or set data.items.invalid_rows=drop to keep one row per id "
        "(its greatest text)"
    )
    assert "\n" not in message and len(message) < 400
    example = message.split("(e.g. id ")[1]
    shown = "Omega " * 14
    assert example.startswith(f"'i0': 'Short' and '{shown[:79]}…'); fix")  # the least id


def test_null_ids_fail_by_default_and_are_counted_under_drop(spark, tmp_path):
    rows = [("1", "One"), ("", "Blank"), (None, "Null"), ("2", "Two")]
    with pytest.raises(
        InputDataError,
        match=r"^data.items: 2 of 4 rows have a null or empty item id \(column 'item_id'\); "
        r"fix the input or set data.items.invalid_rows=drop",
    ):
        catalog(spark, tmp_path, rows)
    ids, texts, report = catalog(spark, tmp_path, rows, **{"data.items.invalid_rows": "drop"})
    assert report["dropped"] == {"null_item_id": 2} and report["used"] == 2 and adds_up(report)
    assert sorted(r.item_id for r in ids.collect()) == [1, 2]  # integer ids become longs


def test_identical_duplicates_merge_without_failing(spark, tmp_path):
    rows = [("i1", "Alpha"), ("i1", "Alpha "), ("i2", "Beta"), ("i2", "Beta"), ("i3", "Gamma")]
    _, texts, report = catalog(spark, tmp_path, rows)
    assert report["merged"] == 2 and report["conflicting_ids"] == 0 and adds_up(report)
    assert report["used"] == 3 and texts.count() == 3
    # without a template rows are only ids: every duplicate is an identical merge
    path = tmp_path / "ids.csv"
    pd.DataFrame(ROWS, columns=["item_id", "title"]).to_csv(path, index=False)
    cfg = make_config(tmp_path, "unused.csv", **{"data.items.path": str(path)})
    ids, texts, report = read_catalog(spark, cfg)
    assert texts is None and ids.count() == 3
    assert report["merged"] == 3 and report["conflicting_ids"] == 0 and adds_up(report)
