"""A real Spark standalone cluster on 127.0.0.1 (a master and two workers from the pyspark
package, started and stopped here by process id), the pipeline submitted through
spark-submit.sh: its tables equal a local-mode run's, also when a worker is killed mid-stage."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO
from tests.encoders import MINILM
from wals_roberta.jobs import cli
from wals_roberta.jobs.data.synthetic import generate, write_csv

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, workdir: Path):
        import pyspark

        self.spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
        self.workdir = workdir
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
        self.master = self._start("master", "org.apache.spark.deploy.master.Master",
                                  "--host", "127.0.0.1", "--port", str(self.port),
                                  "--webui-port", str(self.ui_port))  # fmt: skip
        self.workers = [self.start_worker(n) for n in range(2)]

    def _start(self, name: str, main_class: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(
            [self.spark_class, main_class, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its executors
        )

    def start_worker(self, n: int) -> subprocess.Popen:
        work = self.workdir / f"worker-{n}"
        work.mkdir(exist_ok=True)
        return self._start(f"worker-{n}", "org.apache.spark.deploy.worker.Worker", self.url,
                           "--host", "127.0.0.1", "--cores", "1", "--memory", "2g",
                           "--webui-port", str(free_port()), "--work-dir", str(work))  # fmt: skip

    def alive_workers(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
                state = json.load(r)
        except OSError:
            return 0
        return sum(w["state"] == "ALIVE" for w in state.get("workers", []))

    def wait_for_workers(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while self.alive_workers() < n:
            if time.time() > deadline:
                raise TimeoutError(f"{n} workers did not register with {self.url}")
            time.sleep(1)

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=60)

    def stop(self) -> None:
        for proc in [*self.workers, self.master]:
            self.kill(proc, signal.SIGTERM)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.wait_for_workers(2)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def conf_file(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster-inputs")
    write_csv(base, *generate(n_users=200, n_items=150, n_interactions=6000, seed=21))
    conf = {
        "data": {
            "interactions": {"path": str(base / "interactions.csv"), "strength_col": "plays"},
            "items": {
                "path": str(base / "items.csv"),
                "text_template": "{title}. {format}. Genres: {genres}",
            },
        },
        "split": {"holdout": "random", "fraction": 0.2, "seed": 3},
        "wals": {
            "rank": 8,
            "iterations": 6,
            "confidence": "log",
            "user_blocks": 2,
            "item_blocks": 2,
        },
        "encoder": {"model": MINILM, "max_length": 32, "batch_size": 32},
        "recommend": {"k": 10},
        "evaluate": {"ks": [5, 10]},
        "spark": {"conf": {"spark.sql.shuffle.partitions": "4"}},
    }
    path = base / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def submit(cluster, conf_file, root, run_id, *, kill_worker_at=None):
    """Run spark-submit.sh against the cluster; optionally SIGKILL worker 0 (and its
    executor) two seconds into the given stage. Returns the driver's output."""
    # The packed environment (built once, reused) with the MiniLM the config names.
    args = [str(REPO / "spark-submit.sh"), "--env-extras", "demo", "--master", cluster.url,
            "--conf", "spark.executor.memory=1g", "--conf", "spark.ui.enabled=false",
            "pipeline", "--config", str(conf_file), "--set", f"output.root={root}",
            "--run-id", run_id]  # fmt: skip
    # spark-submit merges the Python driver's stderr into its stdout.
    proc = subprocess.Popen(args, cwd=REPO, env=cluster.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_worker_at and line.startswith(f"[{kill_worker_at}] start"):
            time.sleep(2)  # inside the stage: its tasks are running on both executors
            cluster.kill(cluster.workers[0])
            kill_worker_at = None
    assert proc.wait() == 0, "".join(lines[-60:])
    return "".join(lines)


def lists(spark, root):
    df = spark.read.parquet(str(root / "recommendations")).toPandas()
    return df.sort_values(["user_id", "rank"]).reset_index(drop=True)


def assert_same_lists(a, b):
    assert len(a) == len(b) > 0
    assert (a[["user_id", "rank", "item_id"]] == b[["user_id", "rank", "item_id"]]).all().all()
    np.testing.assert_allclose(a.score, b.score, rtol=1e-4, atol=1e-5)


def test_cluster_run_equals_local_run_and_survives_a_lost_worker(
    spark, cluster, conf_file, tmp_path
):
    local_root = tmp_path / "local"
    args = ["pipeline", "--config", str(conf_file), "--set", f"output.root={local_root}"]
    assert cli.main([*args, "--run-id", "local"]) == 0

    started = time.time()
    stderr = submit(cluster, conf_file, tmp_path / "cluster", "c1")
    print(f"cluster run: {time.time() - started:.1f} s")
    assert "[publish] done" in stderr
    local = lists(spark, local_root)
    assert_same_lists(lists(spark, tmp_path / "cluster"), local)
    manifest = json.loads((tmp_path / "cluster" / "runs" / "c1" / "manifest.json").read_text())
    assert manifest["stages"]["embed"]["rows"]["item_embeddings"] == 150

    started = time.time()
    submit(cluster, conf_file, tmp_path / "faulty", "c2", kill_worker_at="train")
    print(f"cluster run with worker 0 killed in train: {time.time() - started:.1f} s")
    assert cluster.alive_workers() == 1
    assert_same_lists(lists(spark, tmp_path / "faulty"), local)
