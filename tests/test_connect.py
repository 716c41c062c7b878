"""The job on Spark Connect.

End to end (``slow``: each command starts a local server, about a minute each): every
command runs with ``SPARK_REMOTE=local[2]``, which starts a local Connect server for the
command and stops it after. Its lists equal a classic session's (ids and ranks exactly,
scores to 1e-4), a refresh runs on it, and a run killed on it resumes. Run them with
``pytest -m slow tests/test_connect.py``.

The parts that differ by session kind (the storage backend, the parallelism, the
checkpoint directory) are checked without a server, in the default run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import ML100K, REPO, kill_during, ml100k_pipeline_args
from tests.encoders import MINILM
from wals_roberta.jobs import cli
from wals_roberta.jobs.data.synthetic import generate, write_csv

pytestmark = pytest.mark.spark


def needs_connect() -> None:
    pytest.importorskip("grpc", reason="Spark Connect needs the connect extra (pyspark[connect])")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "wals_roberta.jobs.cli", *args]


def on_connect(*args: str) -> subprocess.CompletedProcess:
    """One CLI command on a Spark Connect session; its stderr when it fails."""
    env = {**os.environ, "SPARK_REMOTE": "local[2]"}
    done = subprocess.run(command(*args), cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def lists(root) -> pd.DataFrame:
    df = pd.read_parquet(root / "recommendations")
    return df.sort_values(["user_id", "rank"]).reset_index(drop=True)


def assert_same_lists(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(
        a[["user_id", "rank", "item_id"]], b[["user_id", "rank", "item_id"]], check_exact=True
    )
    assert (a.score - b.score).abs().max() <= 1e-4


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Synthetic data with item text, cold items held out, a day of new events; the
    demo config made small. Partitioning as the tests' own session has it, so that the
    classic run below (on that session) and the Connect runs split work alike."""
    tmp = tmp_path_factory.mktemp("connect")
    events, items = generate(n_users=240, n_items=120, n_interactions=5000, seed=3)
    write_csv(tmp / "inputs", events, items)
    day = events.sample(400, random_state=1).copy()
    day.loc[day.index[:40], "user_id"] = [f"new{i}" for i in range(40)]
    day.to_csv(tmp / "day.csv", index=False)
    conf = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    conf["data"]["interactions"]["path"] = str(tmp / "inputs" / "interactions.csv")
    conf["data"]["items"]["path"] = str(tmp / "inputs" / "items.csv")
    conf["encoder"]["model"] = MINILM
    conf["wals"].update(rank=8, iterations=5, user_blocks=2, item_blocks=2)
    conf["validation"] = {"max_users": 200}
    conf["spark"] = {
        "master": "local[2]",
        "conf": {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4"},
    }
    path = tmp / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return tmp, str(path)


@pytest.fixture(scope="module")
def both(spark, small):
    """The pipeline on the tests' classic session and on a Connect session, then a
    refresh with the same day's events on each; ``(classic root, connect root)``."""
    needs_connect()
    tmp, conf = small
    roots = tmp / "classic", tmp / "connect"
    day = f"data.interactions.path={tmp / 'day.csv'}"
    assert cli.main(["pipeline", "--config", conf, "--set", f"output.root={roots[0]}"]) == 0
    pipeline = on_connect("pipeline", "--config", conf, "--set", f"output.root={roots[1]}")
    published = {"pipeline": (lists(roots[0]), lists(roots[1]))}
    refresh = ["refresh", "--config", conf, "--set", day]
    assert cli.main([*refresh, "--set", f"output.root={roots[0]}"]) == 0
    on_connect(*refresh, "--set", f"output.root={roots[1]}")
    published["refresh"] = (lists(roots[0]), lists(roots[1]))
    return published, pipeline.stderr


@pytest.mark.slow
def test_pipeline_on_connect_gives_the_classic_lists(both):
    published, stderr = both
    assert_same_lists(*published["pipeline"])
    assert "JVM_ATTRIBUTE_NOT_SUPPORTED" not in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_spark_jobs_are_counted_on_classic_and_none_on_connect(both, small):
    tmp, _ = small
    for kind, counted in (("classic", True), ("connect", False)):
        manifests = list((tmp / kind / "runs").glob("*/manifest.json"))
        assert manifests
        for manifest in manifests:
            for name, entry in json.loads(manifest.read_text())["stages"].items():
                jobs = entry["spark_jobs"]
                assert isinstance(jobs, int) if counted else jobs is None, name


@pytest.mark.slow
def test_refresh_on_connect_gives_the_classic_lists(both):
    published, _ = both
    classic, connect = published["refresh"]
    assert_same_lists(classic, connect)
    assert connect.user_id.astype(str).str.startswith("new").sum() > 0  # new users listed


@pytest.mark.slow
def test_a_run_killed_on_connect_resumes_to_the_same_lists(both, small):
    tmp, conf = small
    root = tmp / "killed"
    args = ["pipeline", "--config", conf, "--set", f"output.root={root}", "--run-id", "k"]
    env = {**os.environ, "SPARK_REMOTE": "local[2]"}
    killed = kill_during(command(*args), "project", 1.0, env=env)
    assert killed, "the run ended before it could be killed"
    assert not (root / "recommendations").exists()
    resumed = on_connect(*args)
    for stage in ("prepare", "train", "embed"):
        assert f"[{stage}] skipped" in resumed.stderr
    assert_same_lists(lists(root), both[0]["pipeline"][1])


@pytest.mark.slow
def test_ml100k_on_connect_gives_the_classic_lists(tmp_path):
    """The documented ML-100k command with and without SPARK_REMOTE."""
    needs_connect()
    if not (ML100K / "interactions.csv").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K}")
    roots = tmp_path / "classic", tmp_path / "connect"
    classic = subprocess.run(
        command(*ml100k_pipeline_args(ML100K, roots[0])), cwd=REPO, capture_output=True, text=True
    )
    assert classic.returncode == 0, classic.stderr[-4000:]
    on_connect(*ml100k_pipeline_args(ML100K, roots[1]))
    assert_same_lists(lists(roots[0]), lists(roots[1]))


# --- the parts, without a server -----------------------------------------------------


def exercise(files, root) -> list:
    """The same file operations on a backend; what each one returns or finds."""
    seen = []
    files.write_text(f"{root}/a/manifest.json", '{"x": 1}')
    files.write_text(f"{root}/a/manifest.json", '{"x": 2}')  # replaced whole
    seen.append(files.read_text(f"{root}/a/manifest.json"))
    seen.append((files.exists(f"{root}/a"), files.is_dir(f"{root}/a"), files.exists(f"{root}/b")))
    files.write_text(f"{root}/a/t/part-0", "rows")
    files.copy(f"{root}/a/t", f"{root}/a/copy")
    files.rename(f"{root}/a/copy", f"{root}/a/moved")
    seen.append(files.list_names(f"{root}/a"))
    seen.append((files.list_names(f"{root}/nothing"), files.size(f"{root}/a/moved")))
    files.delete(f"{root}/a/t")
    files.delete(f"{root}/a/never")  # deleting what is not there is no error
    seen.append(files.list_names(f"{root}/a"))
    seen.append(files.qualified(f"{root}/a/"))
    return seen


def test_the_client_backend_behaves_as_the_jvm_one(spark, tmp_path):
    from wals_roberta.jobs.runs.storage import ClientFiles, HadoopFiles

    client = exercise(ClientFiles(), tmp_path / "client")
    hadoop = exercise(HadoopFiles(spark), tmp_path / "hadoop")
    assert client[0] == '{"x": 2}' and client[2] == ["manifest.json", "moved", "t"]
    assert client[3] == ([], 4) and client[4] == ["manifest.json", "moved"]
    assert client[:5] == hadoop[:5]
    assert client[5] == f"file:{tmp_path}/client/a" and hadoop[5] == f"file:{tmp_path}/hadoop/a"


def test_the_client_backend_names_a_scheme_it_cannot_reach():
    import importlib.util

    from wals_roberta.jobs.runs.errors import ConfigError
    from wals_roberta.jobs.runs.storage import ClientFiles

    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed: s3a:// is reachable")
    with pytest.raises(ConfigError) as raised:
        ClientFiles().exists("s3a://bucket/recs/runs")
    message = str(raised.value)
    assert "s3a://" in message and "s3fs" in message and "\n" not in message


class FakeConnectConf:
    def __init__(self, values):
        self.values = values

    def get(self, key, default=None):
        return self.values.get(key, default)


def fake_connect_session(**conf):
    """An object that is a Spark Connect session by its class's module, with ``conf``."""
    cls = type("SparkSession", (), {"__module__": "pyspark.sql.connect.session"})
    session = cls()
    session.conf = FakeConnectConf(conf)
    return session


def test_parallelism_on_connect_from_what_the_server_exposes():
    from wals_roberta.jobs.runs.session import is_connect, parallelism

    assert is_connect(fake_connect_session())
    assert parallelism(fake_connect_session(**{"spark.master": "local[3]"})) == 3
    assert parallelism(fake_connect_session(**{"spark.master": "local"})) == 1
    assert parallelism(fake_connect_session(**{"spark.master": "local[*]"})) == os.cpu_count()
    given = {"spark.master": "local[3]", "spark.default.parallelism": "12"}
    assert parallelism(fake_connect_session(**given)) == 12
    cluster = {"spark.master": "spark://h:7077", "spark.sql.shuffle.partitions": "48"}
    assert parallelism(fake_connect_session(**cluster)) == 48
    assert parallelism(fake_connect_session(**{"spark.sql.shuffle.partitions": "auto"})) == 200


def test_parallelism_on_classic_is_sparks_default(spark):
    from wals_roberta.jobs.runs.session import is_connect, parallelism

    assert not is_connect(spark)
    assert parallelism(spark) == spark.sparkContext.defaultParallelism


def test_checkpoints_on_connect_are_the_servers_or_skipped_in_one_line(capsys):
    from wals_roberta.jobs.runs.session import use_checkpoint_dir

    server = fake_connect_session(**{"spark.checkpoint.dir": "/srv/ckpt"})
    assert use_checkpoint_dir(server, "/mine") == "/srv/ckpt"
    assert capsys.readouterr().err == ""
    assert use_checkpoint_dir(fake_connect_session(), "/mine") is None
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "checkpointing skipped" in line and "spark.checkpoint.dir" in line


TOP_K_ON_CONNECT = """
import json, sys
import numpy as np
from pyspark.sql import SparkSession
from wals_roberta.udfs.topk import recommend_top_k
spark = SparkSession.builder.remote("local[2]").getOrCreate()
rng = np.random.default_rng(0)
users = rng.integers(0, 3, size=(40, 4)).astype(np.float32)  # integer scores: many ties
items = rng.integers(0, 3, size=(70, 4)).astype(np.float32)
u = spark.createDataFrame([(i, users[i].tolist(), f"u{i}") for i in range(40)],
                          "user_idx int, factors array<float>, user_id string")
it = spark.createDataFrame([(i, items[i].tolist()) for i in range(70)],
                           "item_idx int, factors array<float>")
seen = spark.createDataFrame([(i % 40, (i * 7) % 70) for i in range(120)],
                             "user_idx int, item_idx int")
out = {}
for plan, mb in (("broadcast", 64.0), ("shuffle", 0.0)):
    top = recommend_top_k(u, it, k=4, seen=seen, users_per_block=8, items_per_block=16,
                          carry="user_id", broadcast_max_mb=mb).collect()
    out[plan] = sorted((r.user_id, r.user_idx, r.rank, r.item_idx) for r in top)
spark.stop()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_both_top_k_plans_on_connect_match_brute_force():
    """The broadcast and the shuffle plan of the public top-k on a Spark Connect session:
    the same exact lists (ties by item index, seen items excluded, ids carried)."""
    import numpy as np

    needs_connect()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, "-c", TOP_K_ON_CONNECT], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    users = rng.integers(0, 3, size=(40, 4)).astype(np.float32)
    items = rng.integers(0, 3, size=(70, 4)).astype(np.float32)
    seen = {}
    for i in range(120):
        seen.setdefault(i % 40, set()).add((i * 7) % 70)
    scores = users @ items.T
    expected = []
    for user in range(40):
        best = sorted((-scores[user, j], j) for j in range(70) if j not in seen[user])[:4]
        expected += [[f"u{user}", user, rank, j] for rank, (_, j) in enumerate(best, 1)]
    assert out["broadcast"] == sorted(expected)
    assert out["shuffle"] == sorted(expected)
