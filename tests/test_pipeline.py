"""The CLI end to end on generated data: every stage, alone and as the pipeline."""

import contextlib
import io
import json

import pytest
import yaml

from wals_roberta.jobs import cli
from wals_roberta.jobs.data.synthetic import generate, write_csv

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs")
    interactions, items = generate(n_users=150, n_items=120, n_interactions=4000, seed=3)
    write_csv(out, interactions, items)
    return out


def write_config(tmp_path, inputs, **extra):
    conf = {
        "data": {
            "interactions": {
                "path": str(inputs / "interactions.csv"),
                "strength_col": "plays",
                "timestamp_col": "timestamp",
            },
            "items": {"path": str(inputs / "items.csv")},
        },
        "output": {"root": str(tmp_path / "out")},
        "split": {"holdout": "random", "fraction": 0.2, "seed": 5},
        "wals": {"rank": 8, "iterations": 5, "reg": 0.3, "alpha": 5.0, "confidence": "log"},
        "recommend": {"k": 10},
        "evaluate": {"ks": [5, 10]},
        **extra,
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def check_run(spark, root, run_id, inputs, k=10):
    run_dir = root / "runs" / run_id
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["stages"]["prepare"]["counts"]["interactions"]
    assert counts["rows_read"] == 4000 or counts["rows_read"] > 0
    assert (
        counts["used"] + counts["merged"] + sum(counts["dropped"].values()) == counts["rows_read"]
    )
    recs = spark.read.parquet(str(root / "recommendations")).toPandas()
    assert list(recs.columns) == ["user_id", "rank", "item_id", "score"]
    assert recs.user_id.str.startswith("u").all() and recs.item_id.str.startswith("i").all()
    sizes = recs.groupby("user_id").size()
    assert (sizes == k).all()
    ranks = recs.sort_values(["user_id", "rank"]).groupby("user_id")["rank"].apply(list)
    assert all(r == list(range(1, k + 1)) for r in ranks)
    events = spark.read.parquet(str(run_dir / "interactions")).toPandas()
    users = spark.read.parquet(str(run_dir / "users")).toPandas()
    items = spark.read.parquet(str(run_dir / "items")).toPandas()
    known = events[events.split != "test"].merge(users, on="user_idx").merge(items, on="item_idx")
    overlap = recs.merge(known, on=["user_id", "item_id"])
    assert overlap.empty, "an item the user already has (training or fold-in) was recommended"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    methods = metrics["segments"]["all"]["methods"]
    assert set(methods) == {"wals", "popularity"}
    return recs, manifest, metrics


@pytest.fixture(scope="module")
def pipeline_run(spark, tmp_path_factory, demo_inputs):
    """``wals-roberta pipeline`` once, a fifth of the users held out (scored by fold-in), for
    the tests below: its arguments, output root and what it printed."""
    work = tmp_path_factory.mktemp("pipeline")
    conf = write_config(work, demo_inputs)
    args = ["pipeline", "--config", conf, "--run-id", "p1"]
    args += ["--set", "split.heldout_user_fraction=0.2"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(args) == 0
    return {"args": args, "root": work / "out", "out": out.getvalue()}


def test_heldout_users_are_folded_in_and_listed(spark, demo_inputs, pipeline_run):
    root = pipeline_run["root"]
    recs, manifest, metrics = check_run(spark, root, "p1", demo_inputs)
    run_dir = root / "runs" / "p1"
    trained = set(spark.read.parquet(str(run_dir / "user_factors")).toPandas().user_id)
    folded = set(spark.read.parquet(str(run_dir / "fold_in_factors")).toPandas().user_id)
    assert folded and not folded & trained
    assert folded | trained == set(recs.user_id)  # every user has a list, held out or not
    assert manifest["stages"]["recommend"]["rows"]["fold_in_factors"] == len(folded)
    new = metrics["segments"]["new_users"]
    assert set(new["methods"]) == {"fold_in", "popularity", "trained"}
    assert new["users"] <= len(folded)
    assert new["methods"]["fold_in"]["ndcg@10"] > new["methods"]["popularity"]["ndcg@10"]
    assert new["trained_in_model"]["recall@10"] == pytest.approx(
        new["methods"]["fold_in"]["recall@10"] / new["methods"]["trained"]["recall@10"], abs=1e-4
    )


def test_pipeline_command(spark, demo_inputs, pipeline_run, capsys):
    args = pipeline_run["args"]
    recs, manifest, metrics = check_run(spark, pipeline_run["root"], "p1", demo_inputs)
    assert set(manifest["stages"]) == {"prepare", "train", "recommend", "evaluate", "publish"}
    assert all(s["status"] == "complete" and s["seconds"] > 0 for s in manifest["stages"].values())
    assert manifest["config"]["wals"]["rank"] == 8 and "pyspark" in manifest["versions"]
    out = pipeline_run["out"]
    assert "recall" in out and "published recommendations:" in out
    # On data whose taste is structured, the model beats popularity.
    all_ = metrics["segments"]["all"]["methods"]
    assert all_["wals"]["ndcg@10"] > all_["popularity"]["ndcg@10"]
    # The same run id again resumes: every stage is complete, so each is skipped.
    capsys.readouterr()
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert all(f"[{s}] skipped" in err for s in manifest["stages"]) and "start" not in err
    # ... but not under another config.
    assert cli.main([*args, "--set", "wals.rank=4"]) == 2
    assert "different config (changed: wals.rank)" in capsys.readouterr().err


def test_each_stage_alone_reads_the_previous_tables(spark, tmp_path, demo_inputs):
    conf = write_config(tmp_path, demo_inputs)
    assert cli.main(["train", "--config", conf, "--run-id", "s1"]) == 2  # nothing prepared yet
    for stage in ["prepare", "train", "recommend", "evaluate", "publish"]:
        assert cli.main([stage, "--config", conf, "--run-id", "s1"]) == 0, stage
    check_run(spark, tmp_path / "out", "s1", demo_inputs)
    # Without --run-id, later stages use the latest run.
    assert (
        cli.main(
            ["recommend", "--config", conf, "--set", "recommend.k=5", "--set", "evaluate.ks=[5]"]
        )
        == 0
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "wals.rnak=3"], "error: unknown config key 'wals.rnak'"),
        (["--set", "wals.rank=0"], "error: wals.rank: must be an integer > 0, got 0"),
        (["--set", "data.interactions.path=/no/such/file.csv"], "no such file or directory"),
        (
            ["--set", "data.interactions.user_col=uid"],
            "column 'uid' (from data.interactions.user_col)",
        ),
    ],
)
def test_cli_errors_are_one_line(spark, tmp_path, demo_inputs, capsys, args, message):
    conf = write_config(tmp_path, demo_inputs)
    assert cli.main(["prepare", "--config", conf, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and message in err[-1] and "Traceback" not in "\n".join(err)
