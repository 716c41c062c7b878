"""Publishing: the swap, its recovery when cut off between renames, and run retention."""

import pytest

from jobs import storage, tables
from tests.conftest import make_config

pytestmark = pytest.mark.spark


def make_run(spark, cfg, run_id, n_rows):
    run = tables.open_run(spark, cfg, run_id, create=True)
    df = spark.createDataFrame(
        [(f"u{i}", 1, "i1", 1.0) for i in range(n_rows)],
        "user_id string, rank int, item_id string, score float",
    )
    tables.write_table(spark, run, "recommendations", df)
    return run


def test_publish_swaps_and_recovers_a_cut_off_swap(spark, tmp_path):
    cfg = make_config(tmp_path, "unused.csv")
    first, second = make_run(spark, cfg, "r1", 3), make_run(spark, cfg, "r2", 5)
    target = tables.publish(spark, first, "recommendations", "recommendations")
    assert spark.read.parquet(target).count() == 3
    # A swap killed between its two renames: the published table moved aside, nothing in.
    aside = storage.join(first.root, ".recommendations.previous-r1")
    storage.rename(spark, target, aside)
    assert tables.recover_published(spark, first.root, "recommendations") == aside
    assert spark.read.parquet(target).count() == 3 and not storage.exists(spark, aside)
    tables.publish(spark, second, "recommendations", "recommendations")
    assert spark.read.parquet(target).count() == 5
    leftovers = [n for n in storage.list_names(spark, first.root) if n.startswith(".")]
    assert leftovers == []


def test_prune_runs_keeps_the_newest_and_the_published(spark, tmp_path):
    cfg = make_config(tmp_path, "unused.csv")
    for run_id in ["a", "b", "c", "d"]:
        make_run(spark, cfg, run_id, 1)
    root = storage.normalize(cfg.output.root)
    assert tables.prune_runs(spark, root, keep=2, protect="a") == ["b"]
    assert storage.list_names(spark, storage.join(root, "runs")) == ["a", "c", "d"]
