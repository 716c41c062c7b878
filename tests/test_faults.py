"""Runs killed at points across the stages: the published table is never partial, and
re-running the same run id resumes and completes with the same lists as a clean run."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, kill_during
from wals_roberta.jobs.config import load_config
from wals_roberta.jobs.data.synthetic import generate, write_csv
from wals_roberta.jobs.runs.publishing import publish_run

pytestmark = [pytest.mark.spark, pytest.mark.slow]

STAGES = ["prepare", "train", "recommend", "evaluate", "publish"]


def write_config(tmp_path, inputs, k):
    conf = {
        "data": {"interactions": {"path": str(inputs / "interactions.csv")}},
        "output": {"root": str(tmp_path / "out")},
        "split": {"holdout": "random", "fraction": 0.2, "seed": 5},
        "wals": {"rank": 8, "iterations": 5, "user_blocks": 2, "item_blocks": 2},
        "recommend": {"k": k},
        "evaluate": {"ks": [5]},
        "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "4"}},
    }
    path = tmp_path / f"conf-k{k}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def command(conf, run_id):
    return [
        sys.executable,
        "-m",
        "wals_roberta.jobs.cli",
        "pipeline",
        "--config",
        conf,
        "--run-id",
        run_id,
    ]


def run_to_end(conf, run_id):
    done = subprocess.run(command(conf, run_id), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def run_and_kill(conf, run_id, stage, delay):
    """Start the pipeline, kill it ``delay`` seconds into ``stage``
    (:func:`tests.conftest.kill_during`)."""
    return kill_during(command(conf, run_id), stage, delay)


def published(spark, root):
    df = spark.read.parquet(str(root / "recommendations")).toPandas()
    return df.sort_values(["user_id", "rank"]).reset_index(drop=True)


def test_killed_runs_never_leave_a_partial_table_and_resume(spark, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_csv(inputs, *generate(n_users=120, n_items=100, n_interactions=3000, seed=11))
    root = tmp_path / "out"
    conf5, conf10 = write_config(tmp_path, inputs, 5), write_config(tmp_path, inputs, 10)
    run_to_end(conf10, "clean")
    clean = published(spark, root)
    run_to_end(conf5, "old")  # the version consumers read while the next runs are killed
    old = published(spark, root)
    assert len(clean) == 2 * len(old) > 0

    rng = random.Random(7)
    for n, stage in enumerate([*STAGES, "publish"]):
        run_id = f"killed-{n}"
        delay = rng.uniform(0.0, 2.0)
        killed = run_and_kill(conf10, run_id, stage, delay)
        now = published(spark, root)
        # Either the old lists or the complete new ones: never anything in between.
        assert now.equals(old) or now.equals(clean), (stage, delay)
        stderr = run_to_end(conf10, run_id)
        assert published(spark, root).equals(clean), (stage, delay)
        recs = spark.read.parquet(str(root / "runs" / run_id / "recommendations")).toPandas()
        assert not recs.duplicated(["user_id", "rank"]).any() and len(recs) == len(clean)
        if killed:
            # Stages finished before the kill are skipped, in order; the rest ran again.
            earlier = STAGES[: STAGES.index(stage)]
            skipped = [s for s in STAGES if f"[{s}] skipped" in stderr]
            assert skipped[: len(earlier)] == earlier, (stage, delay, skipped)
        # Back to the old version for the next kill.
        publish_run(spark, load_config(conf5), "old")
        assert published(spark, root).equals(old)
