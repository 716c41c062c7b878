"""Cold start end to end on MovieLens 100K: 20% of items held out entirely; 10% of users
kept out of training and scored by fold-in."""

import json

import pytest

from tests.conftest import ml100k_pipeline_args
from wals_roberta.jobs import cli

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_cold_items_are_found_and_published(spark, ml100k, tmp_path):
    root = tmp_path / "out"
    args = [*ml100k_pipeline_args(ml100k, root, "split.cold_item_fraction=0.2"), "--run-id", "cold"]
    assert cli.main(args) == 0
    run = root / "runs" / "cold"
    segments = json.loads((run / "metrics.json").read_text())["segments"]
    cold, warm = segments["cold"]["methods"], segments["warm"]["methods"]
    print(
        f"cold Recall@20 {cold['wals']['recall@20']:.4f} "
        f"(random {cold['random']['recall@20']:.4f}), "
        f"warm Recall@20 {warm['wals']['recall@20']:.4f}"
    )
    assert 300 < segments["cold"]["items"] < 400  # about 20% of 1,682 held out entirely
    assert cold["wals"]["recall@20"] >= 0.33
    assert cold["wals"]["recall@20"] > 3 * cold["random"]["recall@20"]
    assert warm["wals"]["recall@20"] >= 0.42
    manifest = json.loads((run / "manifest.json").read_text())
    assert (
        manifest["stages"]["project"]["counts"]["by_source"]["projected"]
        == segments["cold"]["items"]
    )
    assert manifest["stages"]["recommend"]["cold_share"] > 0
    recs = spark.read.parquet(str(root / "recommendations"))
    vectors = spark.read.parquet(str(run / "item_vectors"))
    cold_rows = recs.join(vectors.filter("source = 'projected'"), "item_id").count()
    assert cold_rows > 0
    # The share observed while the lists were written equals the share in what was written.
    share = manifest["stages"]["recommend"]["cold_share"]
    assert share == pytest.approx(cold_rows / recs.count(), abs=1e-6)


def test_heldout_users_by_fold_in_come_close_to_being_trained(spark, ml100k, tmp_path):
    root = tmp_path / "out"
    args = ml100k_pipeline_args(ml100k, root, "split.heldout_user_fraction=0.1")
    assert cli.main([*args, "--run-id", "users"]) == 0
    new = json.loads((root / "runs" / "users" / "metrics.json").read_text())["segments"][
        "new_users"
    ]
    fold_in, trained = new["methods"]["fold_in"], new["methods"]["trained"]
    print(
        f"held-out users: {new['users']}, fold-in Recall@20 {fold_in['recall@20']:.4f}, "
        f"trained {trained['recall@20']:.4f}, ratio {new['trained_in_model']['recall@20']}"
    )
    assert 70 < new["users"] < 120  # about 10% of 943
    assert fold_in["recall@20"] >= 0.9 * trained["recall@20"]
    assert fold_in["recall@20"] > 1.5 * new["methods"]["popularity"]["recall@20"]
