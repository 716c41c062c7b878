"""End to end on the real MovieLens 100K with conf/default.yaml, through the CLI.

Run twice (``slow``), it gives the same tables and vectors bit for bit; the default run
checks that on synthetic data with text (tests/test_cold_choice.py, whose second run also
reads its training rows from a table written anew)."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ml100k_pipeline_args
from wals_roberta.jobs import cli

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def one_run(spark, ml100k, tmp_path_factory):
    """The documented command: run ``a``."""
    root = tmp_path_factory.mktemp("ml100k") / "out"
    assert cli.main([*ml100k_pipeline_args(ml100k, root), "--run-id", "a"]) == 0
    return root


@pytest.fixture(scope="module")
def two_runs(one_run, ml100k):
    """The documented command again, same config and seed: run ``b`` beside ``a``."""
    assert cli.main([*ml100k_pipeline_args(ml100k, one_run), "--run-id", "b"]) == 0
    return one_run


def read(spark, path):
    return spark.read.parquet(str(path)).toPandas()


def test_quality_beats_popularity(one_run):
    metrics = json.loads((one_run / "runs" / "a" / "metrics.json").read_text())
    seg = metrics["segments"]["all"]
    wals, pop = seg["methods"]["wals"], seg["methods"]["popularity"]
    print(f"ML-100k Recall@20 wals={wals['recall@20']:.4f} popularity={pop['recall@20']:.4f}")
    assert seg["users"] == 943 and seg["relevant"] == 20_000  # per-user 80/20 of 100,000
    assert 0.20 < pop["recall@20"] < 0.25  # the known popularity level on this protocol
    assert wals["recall@20"] >= 0.42
    assert wals["recall@20"] >= 1.8 * pop["recall@20"]


def test_lists_are_complete_unseen_and_in_original_ids(spark, one_run, ml100k):
    recs = read(spark, one_run / "recommendations")
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score"]
    assert (recs.groupby("user_id").size() == 50).all() and recs.user_id.nunique() == 943
    raw = pd.read_csv(ml100k / "interactions.csv")
    assert set(recs.user_id) <= set(raw.user_id) and set(recs.item_id) <= set(raw.item_id)
    assert str(recs.user_id.dtype) == "int64"  # integer ids stay integers
    run = one_run / "runs" / "a"
    events = read(spark, run / "interactions").merge(read(spark, run / "users"), on="user_idx")
    events = events.merge(read(spark, run / "items"), on="item_idx")
    train = events[events.split == "train"][["user_id", "item_id"]]
    assert recs.merge(train, on=["user_id", "item_id"]).empty
    test = events[events.split == "test"][["user_id", "item_id"]]
    assert not recs.merge(test, on=["user_id", "item_id"]).empty  # held-out items are found


def test_manifest_counts_add_up(one_run):
    manifest = json.loads((one_run / "runs" / "a" / "manifest.json").read_text())
    counts = manifest["stages"]["prepare"]["counts"]
    inter = counts["interactions"]
    assert inter["rows_read"] == 100_000
    assert inter["used"] + inter["merged"] + sum(inter["dropped"].values()) == 100_000
    assert counts["split"] == {"train": 80_000, "test": 20_000}
    assert counts["items_catalog"]["rows_read"] == 1682
    assert manifest["stages"]["prepare"]["rows"] == {
        "users": 943,
        "items": 1682,
        "interactions": 100_000,
    }


def test_every_item_has_an_embedding(spark, one_run):
    """All 1,682 texts encoded by the packaged MiniLM, none empty, one embedding each."""
    manifest = json.loads((one_run / "runs" / "a" / "manifest.json").read_text())
    counts = manifest["stages"]["embed"]["counts"]
    assert counts["items"] == 1682 and counts["empty_text"] == 0
    emb = read(spark, one_run / "runs" / "a" / "item_embeddings")
    assert len(emb) == emb.item_idx.nunique() == 1682
    assert {len(v) for v in emb.embedding} == {384}


@pytest.mark.slow
def test_same_seed_same_tables(spark, two_runs):
    for table in ("users", "items", "interactions", "recommendations"):
        a = read(spark, two_runs / "runs" / "a" / table)
        b = read(spark, two_runs / "runs" / "b" / table)
        key = list(a.columns[:2])
        a = a.sort_values(key).reset_index(drop=True)
        b = b.sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=table)


@pytest.mark.slow
def test_same_seed_same_vectors_bit_for_bit(spark, two_runs):
    """Float sums follow the order rows are read in; the vectors must not."""
    for table, key, col in (
        ("user_factors", "user_idx", "factors"),
        ("item_factors", "item_idx", "factors"),
        ("item_vectors", "item_idx", "vector"),
        ("item_embeddings", "item_idx", "embedding"),
    ):
        a = read(spark, two_runs / "runs" / "a" / table).sort_values(key)
        b = read(spark, two_runs / "runs" / "b" / table).sort_values(key)
        assert a[key].tolist() == b[key].tolist(), table
        va, vb = np.stack(a[col].to_numpy()), np.stack(b[col].to_numpy())
        assert va.dtype == np.float32 and va.shape == vb.shape, table
        assert np.array_equal(va.view(np.uint32), vb.view(np.uint32)), table
