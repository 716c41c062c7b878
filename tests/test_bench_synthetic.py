"""The scale benchmark's generator: deterministic, the promised shape, text that predicts taste."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from synthetic_data import generate, scaled_shape  # noqa: E402


def test_same_seed_same_files_other_seed_other_data(tmp_path: Path) -> None:
    a = generate(20_000, tmp_path / "a", seed=3)
    b = generate(20_000, tmp_path / "b", seed=3)
    c = generate(20_000, tmp_path / "c", seed=4)
    for name in ("interactions.parquet", "items.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a == b
    first = pd.read_parquet(tmp_path / "a" / "interactions.parquet")
    other = pd.read_parquet(tmp_path / "c" / "interactions.parquet")
    assert not first.equals(other)
    assert c["users"] == a["users"]


def test_shape_and_columns(tmp_path: Path) -> None:
    shape = generate(20_000, tmp_path, seed=1)
    users, items = scaled_shape(20_000)
    events = pd.read_parquet(tmp_path / "interactions.parquet")
    catalog = pd.read_parquet(tmp_path / "items.parquet")
    assert list(events.columns) == ["user_id", "item_id", "strength", "timestamp"]
    assert list(catalog.columns) == ["item_id", "title", "format", "genres"]
    assert len(catalog) == items == shape["items"]
    assert events["user_id"].nunique() == users
    assert 0.85 * 20_000 <= len(events) <= 1.05 * 20_000
    assert not events.duplicated(["user_id", "item_id"]).any()
    assert set(events["item_id"]) <= set(catalog["item_id"])
    assert (events["strength"] >= 1).all()
    # Power-law popularity: the top 10% of items take far more than 10% of the events.
    counts = events["item_id"].value_counts()
    assert counts.head(len(counts) // 10).sum() > 0.3 * len(events)


def test_item_text_predicts_what_users_pick(tmp_path: Path) -> None:
    """Users draw most of their items from one or two topics, and an item's genres start
    with its topic: a user's items share a first genre far more often than chance."""
    generate(20_000, tmp_path, seed=2)
    events = pd.read_parquet(tmp_path / "interactions.parquet")
    catalog = pd.read_parquet(tmp_path / "items.parquet")
    topic = catalog.set_index("item_id")["genres"].str.split().str[0]
    events["topic"] = events["item_id"].map(topic)
    top_share = events.groupby("user_id")["topic"].agg(lambda t: t.value_counts().iloc[0] / len(t))
    assert top_share.mean() > 0.5  # 8 topics: chance would be about 0.2
