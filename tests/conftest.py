"""One local SparkSession for the whole test run, plus small helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wals_roberta.jobs.config import Config, config_from_dict

REPO = Path(__file__).resolve().parent.parent
ML100K = REPO.parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("wals-roberta-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.memory", "4g")
        .config("spark.local.dir", str(tmp_path_factory.mktemp("spark-local")))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def make_config(tmp_path: Path, interactions: str, **dotted) -> Config:
    """A small, fast config over ``interactions``; ``dotted`` keys override it."""
    raw: dict = {
        "data": {"interactions": {"path": interactions}},
        "output": {"root": str(tmp_path / "out")},
        "wals": {"rank": 8, "iterations": 5, "user_blocks": 2, "item_blocks": 2},
        "recommend": {"k": 10},
        "evaluate": {"ks": [5, 10]},
    }
    for key, value in dotted.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return config_from_dict(raw)


def kill_during(argv: list[str], stage: str, delay: float, env: dict | None = None) -> bool:
    """Run ``argv`` from the repository, SIGKILL its whole process group ``delay`` seconds
    after it prints ``[stage] start``; True when the kill landed before the run finished."""
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stderr:
            if line.startswith(f"[{stage}] start"):
                time.sleep(delay)
                break
        killed = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    return killed


def ml100k_pipeline_args(ml100k: Path, root: Path, *overrides: str) -> list[str]:
    """The documented ML-100k command: conf/default.yaml on the shared data, the packaged
    MiniLM (no model hub here), plus ``key=value`` overrides."""
    from tests.encoders import MINILM

    settings = [
        f"data.interactions.path={ml100k / 'interactions.csv'}",
        f"data.items.path={ml100k / 'items.csv'}",
        f"output.root={root}",
        f"encoder.model={MINILM}",
        *overrides,
    ]
    args = ["pipeline", "--config", str(REPO / "conf" / "default.yaml")]
    for item in settings:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "interactions.csv").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K} (see the README: data is not committed)")
    return ML100K
