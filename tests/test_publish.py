"""Publishing: the swap, its recovery when cut off between renames, run retention and the
metastore table name."""

import pytest

from tests.conftest import make_config
from wals_roberta.jobs.runs import storage, swap, tables
from wals_roberta.jobs.runs.errors import ConfigError, RunStateError
from wals_roberta.jobs.runs.publishing import publish_run

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
    target = swap.publish(spark, first, "recommendations", "recommendations")
    assert spark.read.parquet(target).count() == 3
    # A swap killed between its two renames: the published table moved aside, nothing in.
    aside = storage.join(first.root, ".recommendations.previous-r1")
    storage.rename(spark, target, aside)
    assert swap.recover_published(spark, first.root, "recommendations") == aside
    assert spark.read.parquet(target).count() == 3 and not storage.exists(spark, aside)
    swap.publish(spark, second, "recommendations", "recommendations")
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


def run_lists(spark, run, offset):
    """Lists that differ between runs: users u0.., items i<offset + rank>, fresh scores."""
    df = spark.createDataFrame(
        [(f"u{u}", r, f"i{offset + r}", float(offset - r)) for u in range(4) for r in (1, 2)],
        "user_id string, rank int, item_id string, score float",
    )
    tables.write_table(spark, run, "recommendations", df)
    return sorted(tuple(row) for row in df.collect())


def test_published_table_is_registered_and_follows_the_swap(spark, tmp_path):
    spark.sql("CREATE DATABASE IF NOT EXISTS recs_test")
    name = "recs_test.wals_roberta"
    cfg = make_config(tmp_path, "unused.csv", **{"output.table": name})
    first = run_lists(spark, tables.open_run(spark, cfg, "t1", create=True), offset=10)
    second = run_lists(spark, tables.open_run(spark, cfg, "t2", create=True), offset=50)
    try:
        assert publish_run(spark, cfg, "t1")["table"] == name
        assert sorted(tuple(r) for r in spark.table(name).collect()) == first
        publish_run(spark, cfg, "t2")
        assert sorted(tuple(r) for r in spark.table(name).collect()) == second
        location = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").where("col_name = 'Location'")
        # The table reads the published run's own lists, moved there in one metastore update.
        assert location.first()["data_type"].rstrip("/").endswith("/out/runs/t2/recommendations")
        # A table of that name somewhere else is not taken over.
        other = make_config(tmp_path / "elsewhere", "unused.csv", **{"output.table": name})
        run_lists(spark, tables.open_run(spark, other, "t3", create=True), offset=90)
        with pytest.raises(ConfigError, match=r"^output\.table: recs_test\.wals_roberta already"):
            publish_run(spark, other, "t3")
        assert sorted(tuple(r) for r in spark.table(name).collect()) == second
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {name}")


def test_registering_in_a_missing_database_names_the_key(spark, tmp_path):
    cfg = make_config(tmp_path, "unused.csv", **{"output.table": "no_such_db_here.recs"})
    run_lists(spark, tables.open_run(spark, cfg, "t1", create=True), offset=1)
    with pytest.raises(ConfigError, match=r"^output\.table: cannot register no_such_db_here"):
        publish_run(spark, cfg, "t1")


def test_publish_copies_small_tables_byte_for_byte_and_rewrites_large_ones(
    spark, tmp_path, monkeypatch
):
    cfg = make_config(tmp_path, "unused.csv")
    run = make_run(spark, cfg, "c1", 7)
    target = swap.publish(spark, run, "recommendations", "recommendations")
    source, published = tmp_path / "out/runs/c1/recommendations", tmp_path / "out/recommendations"
    parts = sorted(p.name for p in source.glob("part-*"))
    assert parts and sorted(p.name for p in published.glob("part-*")) == parts
    for name in parts:
        assert (source / name).read_bytes() == (published / name).read_bytes()
    # Above the size limit the executors rewrite it: new files, the same rows.
    monkeypatch.setattr(swap, "COPY_FILES_BYTES", 0)
    swap.publish(spark, run, "recommendations", "recommendations")
    assert sorted(p.name for p in published.glob("part-*")) != parts
    assert sorted(spark.read.parquet(target).collect()) == sorted(
        spark.read.parquet(str(source)).collect()
    )
    # A run table without its _SUCCESS marker (a write cut off) is never published.
    (source / "_SUCCESS").unlink()
    monkeypatch.setattr(swap, "COPY_FILES_BYTES", 1 << 30)
    with pytest.raises(RunStateError, match="no _SUCCESS marker"):
        swap.publish(spark, run, "recommendations", "recommendations")
    assert spark.read.parquet(target).count() == 7
