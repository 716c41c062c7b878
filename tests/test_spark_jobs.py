"""Each stage's Spark job count in the manifest (``stages.<name>.spark_jobs``), on the tests'
session (UI off), and the writes that count their rows without a second job."""

import json

import pandas as pd
import pytest
from pyspark.sql import functions as F

from tests.conftest import make_config
from wals_roberta.jobs import prepare
from wals_roberta.jobs.runs import session, tables

pytestmark = pytest.mark.spark


def test_a_stage_records_the_jobs_it_ran_and_no_others(spark, tmp_path):
    cfg = make_config(tmp_path, str(tmp_path / "unused.csv"))
    run = tables.open_run(spark, cfg, "jobs", create=True)
    spark.range(3).collect()  # before the stage: not its job
    with tables.stage(spark, run, "three", cfg):
        for _ in range(3):
            spark.range(5).collect()  # one job each, no shuffle
    with tables.stage(spark, run, "none", cfg):
        spark.range(5).select((F.col("id") + 1).alias("x"))  # a plan, never run
    spark.range(3).collect()  # after: not counted either
    stages = tables.read_manifest(spark, run)["stages"]
    assert stages["three"]["spark_jobs"] == 3
    assert stages["none"]["spark_jobs"] == 0


def test_a_failed_stage_records_its_jobs_too(spark, tmp_path):
    cfg = make_config(tmp_path, str(tmp_path / "unused.csv"))
    run = tables.open_run(spark, cfg, "failed", create=True)
    with pytest.raises(RuntimeError), tables.stage(spark, run, "broken", cfg):
        spark.range(5).collect()
        raise RuntimeError("boom")
    entry = tables.read_manifest(spark, run)["stages"]["broken"]
    assert entry["status"] == "failed" and entry["spark_jobs"] == 1


def test_on_connect_the_count_is_none_and_nothing_is_tagged(spark, monkeypatch):
    monkeypatch.setattr(session, "is_connect", lambda s: True)
    counter = session.JobCounter(spark, "connect")
    spark.range(2).collect()
    assert counter.count() is None
    counter.close()
    assert not [t for t in spark.sparkContext.getJobTags() if "connect" in t]


def test_prepare_records_its_job_count_and_the_split_counts(spark, tmp_path):
    rows = [(f"u{u}", f"i{(u * 7 + j) % 13}", 1.0 + j) for u in range(30) for j in range(6)]
    rows.append(("u0", "i0", 2.0))  # a duplicate pair: merged
    path = tmp_path / "events.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]).to_csv(path, index=False)
    cfg = make_config(tmp_path, str(path), **{"data.items.path": None})
    report = prepare.run(spark, cfg, run_id="p")
    run = tables.open_run(spark, cfg, "p", create=False)
    entry = json.loads((tmp_path / "out" / "runs" / "p" / "manifest.json").read_text())
    jobs = entry["stages"]["prepare"]["spark_jobs"]
    assert isinstance(jobs, int) and jobs > 0
    written = tables.read_table(spark, run, "interactions")
    by_split = {r["split"]: r["count"] for r in written.groupBy("split").count().collect()}
    assert report["counts"]["split"] == by_split
    assert (
        report["rows"]["interactions"]
        == written.count()
        == report["counts"]["interactions"]["used"]
    )


def test_write_counted_counts_what_reads_back(spark, tmp_path):
    cfg = make_config(tmp_path, str(tmp_path / "unused.csv"))
    run = tables.open_run(spark, cfg, "w", create=True)
    df = spark.range(100).repartition(3).withColumn("odd", F.col("id") % 2 == 1)
    counted = tables.write_counted(spark, run, "t", df, odd=F.count_if(F.col("odd")))
    assert counted == {"rows": 100, "odd": 50}
    assert tables.write_table(spark, run, "empty", df.filter("id < 0")) == 0
    assert tables.read_table(spark, run, "t").count() == 100


def test_the_report_and_mlflow_show_the_count_where_there_is_one():
    from wals_roberta.jobs.runs.report import stages_markdown
    from wals_roberta.jobs.runs.tracking import run_metrics

    manifest = {
        "stages": {
            "prepare": {"status": "complete", "seconds": 2.0, "spark_jobs": 1234, "rows": {}},
            "train": {"status": "complete", "seconds": 3.0, "spark_jobs": None, "rows": {}},
        }
    }
    lines = stages_markdown(manifest)
    assert "| prepare | complete | 2.0 | 1,234 |  |" in lines
    assert "| train | complete | 3.0 | — |  |" in lines
    flat = run_metrics(None, manifest)
    assert flat["stage.prepare.spark_jobs"] == 1234.0 and "stage.train.spark_jobs" not in flat
