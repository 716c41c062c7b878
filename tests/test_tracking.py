"""MLflow logging at publish: a real MLflow file store in a temporary directory, read back with
MlflowClient (skipped without the ``mlflow`` extra)."""

import json

import pytest

from tests.conftest import make_config
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.publishing import publish_run
from wals_roberta.jobs.runs.report import PLOT, REPORT, write_report
from wals_roberta.jobs.runs.tracking import RUN_ID_TAG, run_metrics

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

KS = [5, 10]


def metrics_dict() -> dict:
    def values(base: float) -> dict[str, float]:
        return {f"{m}@{k}": base + i / 100 + j / 1000 for i, k in enumerate(KS)
                for j, m in enumerate(("recall", "ndcg", "coverage"))}  # fmt: skip

    return {
        "protocol": {"holdout": "random", "fraction": 0.2, "seed": 3, "ks": KS},
        "segments": {
            "all": {
                "users": 40,
                "relevant": 90,
                "items": 30,
                "methods": {"wals": values(0.31), "popularity": values(0.12)},
                "lift_over_popularity": {"recall@5": 2.583, "recall@10": 2.4},
            },
            "cold": {
                "users": 12,
                "relevant": 15,
                "items": 6,
                "methods": {"wals": values(0.44), "random": values(0.05)},
            },
        },
    }


def evaluated_run(spark, cfg, run_id: str, metrics: dict) -> tables.Run:
    """A run as evaluate leaves it: lists, metrics.json, the manifest's metrics, the report."""
    run = tables.open_run(spark, cfg, run_id, create=True)
    lists = spark.createDataFrame(
        [("u1", 1, "i1", 1.0), ("u2", 1, "i2", 0.5)],
        "user_id string, rank int, item_id string, score float",
    )
    with tables.stage(spark, run, "recommend", cfg) as report:
        report["rows"]["recommendations"] = tables.write_table(spark, run, "recommendations", lists)
    storage.write_text(spark, run.path(tables.METRICS), json.dumps(metrics))
    manifest = tables.update_manifest(spark, run, metrics=metrics)
    write_report(spark, run, metrics, manifest)
    return run


def test_run_metrics_names_the_model_and_each_baseline():
    metrics = metrics_dict()
    manifest = {"stages": {"train": {"seconds": 4.5, "rows": {"user_factors": 40}}}}
    flat = run_metrics(metrics, manifest)
    for segment, result in metrics["segments"].items():
        (model, model_values), (baseline, base_values) = result["methods"].items()
        for k in KS:
            assert flat[f"{segment}.model.recall_at_{k}"] == model_values[f"recall@{k}"]
            assert flat[f"{segment}.{baseline}.ndcg_at_{k}"] == base_values[f"ndcg@{k}"]
        assert flat[f"{segment}.users"] == result["users"]
    assert flat["all.lift_over_popularity.recall_at_5"] == 2.583
    assert flat["stage.train.seconds"] == 4.5 and flat["stage.train.rows.user_factors"] == 40
    assert not any("@" in key or "wals" in key for key in flat)


def test_publish_logs_params_metrics_and_artifacts_once_per_run(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores opt-in
    uri = f"file:{tmp_path / 'mlruns'}"
    cfg = make_config(
        tmp_path,
        "unused.csv",
        **{"tracking.mlflow": True, "tracking.uri": uri, "tracking.experiment": "recs-test"},
    )
    metrics = metrics_dict()
    run = evaluated_run(spark, cfg, "m1", metrics)
    result = publish_run(spark, cfg, "m1")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("recs-test")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert result["mlflow_run_id"] == logged.info.run_id
    assert logged.data.tags[RUN_ID_TAG] == "m1" and logged.data.tags["all.model"] == "wals"
    params = logged.data.params
    assert params["wals.rank"] == "8" and params["evaluate.ks"] == "[5, 10]"
    assert params["output.root"] == cfg.output.root and params["tracking.mlflow"] == "true"
    got = logged.data.metrics
    for k in KS:
        assert got[f"all.model.recall_at_{k}"] == pytest.approx(
            metrics["segments"]["all"]["methods"]["wals"][f"recall@{k}"]
        )
        assert got[f"cold.random.recall_at_{k}"] == pytest.approx(
            metrics["segments"]["cold"]["methods"]["random"][f"recall@{k}"]
        )
    manifest = tables.read_manifest(spark, run)
    for stage in ("recommend", "publish"):
        assert got[f"stage.{stage}.seconds"] == pytest.approx(manifest["stages"][stage]["seconds"])
    assert got["stage.publish.rows.published"] == 2
    assert manifest["tracking"]["mlflow_run_id"] == logged.info.run_id
    names = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert names == {REPORT, PLOT, tables.METRICS, tables.MANIFEST}
    local = client.download_artifacts(logged.info.run_id, REPORT, str(tmp_path / "dl"))
    with open(local, encoding="utf-8") as fh:
        assert fh.read().strip() == storage.read_text(spark, run.path(REPORT)).strip()
    # Publishing the same run again adds to its MLflow run rather than making another.
    publish_run(spark, cfg, "m1")
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_tracking_off_logs_nothing(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    cfg = make_config(tmp_path, "unused.csv")
    evaluated_run(spark, cfg, "m2", metrics_dict())
    assert "mlflow_run_id" not in publish_run(spark, cfg, "m2")
    assert not (tmp_path / "mlruns").exists()
