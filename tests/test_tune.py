"""Tune: trials scored on a validation split carved from training rows, best settings
written as a config that loads."""

import json

import pytest
import yaml

from wals_roberta.jobs import cli
from wals_roberta.jobs.config import config_from_dict, load_config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.tune import Trial, trials, validation_split

pytestmark = pytest.mark.spark


def test_trials_start_with_the_config_and_sample_the_grid():
    cfg = config_from_dict(
        {
            "data": {"interactions": {"path": "x"}},
            "output": {"root": "y"},
            "wals": {"rank": 64, "reg": 0.5, "alpha": 5.0, "confidence": "binary"},
            "tune": {"ranks": [8, 16], "regs": [0.1], "alphas": [1, 5], "trials": 3},
        }
    )
    got = trials(cfg)
    assert got[0] == Trial(64, 0.5, 5.0, "binary", 15)
    assert len(got) == 4 and len(set(got)) == 4
    assert got == trials(cfg)  # seeded
    assert all(t.rank in (8, 16) and t.reg == 0.1 for t in got[1:])


def test_validation_rows_come_from_training_rows_only(spark):
    rows = [(u, i, 1.0, C.TEST if i % 5 == 0 else C.TRAIN) for u in range(20) for i in range(30)]
    df = spark.createDataFrame(rows, "user_idx int, item_idx int, strength double, split string")
    split = validation_split(df, 0.25, seed=3).toPandas()
    assert len(split) == sum(r[3] == C.TRAIN for r in rows)
    assert not (split.item_idx % 5 == 0).any()  # no test pair was looked at
    per_user = split[split.split == C.TEST].groupby("user_idx").size()
    assert (per_user == 6).all()  # 25% of each user's 24 training rows


def test_tune_picks_the_better_rank_and_writes_a_config(spark, tmp_path):
    # Four taste groups of 30 users, each with its own 20 items: rank 4 can tell the groups
    # apart, rank 1 cannot.
    events = [
        f"u{u},i{20 * (u // 30) + i},1"
        for u in range(120)
        for i in range(20)
        if (u * 7 + i * 3) % 4  # each user saw 15 of their group's 20 items
    ]
    (tmp_path / "events.csv").write_text("user_id,item_id,plays\n" + "\n".join(events))
    conf = {
        "data": {"interactions": {"path": str(tmp_path / "events.csv")}},
        "output": {"root": str(tmp_path / "out")},
        "split": {"holdout": "random", "fraction": 0.2, "seed": 1},
        "wals": {"rank": 1, "iterations": 8, "reg": 0.1, "alpha": 5.0, "confidence": "binary"},
        "recommend": {"k": 10},
        "evaluate": {"ks": [10]},
        "tune": {
            "ranks": [4],
            "regs": [0.1],
            "alphas": [5.0],
            "confidences": ["binary"],
            "iterations": [8],
            "metric": "ndcg@10",
            "parallelism": 2,
        },
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert cli.main(["tune", "--config", str(path), "--run-id", "t1"]) == 2  # not prepared
    assert cli.main(["prepare", "--config", str(path), "--run-id", "t1"]) == 0
    assert cli.main(["tune", "--config", str(path), "--run-id", "t1"]) == 0
    run = tmp_path / "out" / "runs" / "t1"
    summary = json.loads((run / "tune.json").read_text())
    assert [t["rank"] for t in summary["trials"]] == [4, 1]  # best first
    assert summary["trials"][0]["ndcg"] > summary["trials"][1]["ndcg"] + 0.1
    tuned = load_config(run / "tuned.yaml")
    assert tuned.wals.rank == 4 and tuned.data.interactions.path == str(tmp_path / "events.csv")


@pytest.mark.parametrize("name", ["recall", "ndcg", "precision", "map", "hit_rate", "coverage"])
def test_every_metric_the_config_accepts_is_recorded_per_trial(name):
    from wals_roberta.jobs.runs.errors import ConfigError
    from wals_roberta.jobs.tune import TRIAL_METRICS

    raw = {"data": {"interactions": {"path": "x"}}, "output": {"root": "y"}}
    try:
        config_from_dict({**raw, "tune": {"metric": f"{name}@20"}})
    except ConfigError:
        assert name not in TRIAL_METRICS  # refused up front, never a KeyError after the trials
    else:
        assert name in TRIAL_METRICS
