"""The output root's lease: two runs on one root never interleave publish and retention,
retention never deletes a run being written, a stale lease is broken, a held one waits or
fails in one line, and a failed publish releases it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml

from tests.conftest import REPO, make_config
from tests.test_publish import run_lists
from wals_roberta.jobs.config import load_config, replace
from wals_roberta.jobs.runs import lease, storage, swap, tables
from wals_roberta.jobs.runs.errors import ConfigError, LeaseHeldError, RunStateError
from wals_roberta.jobs.runs.publishing import publish_run

LONG = 60.0  # an Event that is not set within this long means the code under test hangs


def test_lease_keys_are_validated(tmp_path):
    for key, value in [("expiry_seconds", 0), ("wait_seconds", -1.0)]:
        with pytest.raises(ConfigError, match=rf"^output\.lease\.{key}: must be a finite"):
            make_config(tmp_path, "x.csv", **{f"output.lease.{key}": value})
    with pytest.raises(ConfigError, match=r"^output\.lease\.on_held: must be one of wait, fail"):
        make_config(tmp_path, "x.csv", **{"output.lease.on_held": "steal"})


def lists(spark, cfg, run_id, offset):
    """A complete run whose lists differ from every other run's (items i<offset + rank>)."""
    return run_lists(spark, tables.open_run(spark, cfg, run_id, create=True), offset)


def published(spark, cfg):
    path = storage.join(storage.normalize(cfg.output.root), "recommendations")
    return sorted(tuple(row) for row in spark.read.parquet(path).collect())


def lease_path(cfg):
    return storage.join(storage.normalize(cfg.output.root), lease.LEASE)


def in_thread(target, *args):
    """Run ``target(*args)`` in a thread; ``box`` gets its result or its exception."""
    box: dict = {}

    def body():
        try:
            box["result"] = target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, box


@pytest.fixture
def hooks(monkeypatch):
    """Events around the code under the lease: ``inside[run_id]`` is set when that run's
    publish is inside the lease, which then waits for ``go[run_id]``; ``waiting`` is set
    when a taker polls a held lease."""
    inside, go = {}, {}
    waiting = threading.Event()
    real_publish, real_sleep = swap.publish, lease._sleep

    def publish(spark, run, table, name):
        if run.run_id in go:
            inside[run.run_id].set()
            assert go[run.run_id].wait(LONG)
        return real_publish(spark, run, table, name)

    def sleep(seconds):
        waiting.set()
        real_sleep(seconds)

    def hold_at_publish(run_id):
        inside[run_id], go[run_id] = threading.Event(), threading.Event()

    monkeypatch.setattr(swap, "publish", publish)
    monkeypatch.setattr(lease, "_sleep", sleep)
    return hold_at_publish, inside, go, waiting


@pytest.mark.spark
def test_a_second_publish_fails_at_once_or_waits_while_one_holds_the_lease(spark, tmp_path, hooks):
    hold_at_publish, inside, go, waiting = hooks
    cfg = make_config(tmp_path, "unused.csv", **{"output.lease.expiry_seconds": 30.0})
    first, second = lists(spark, cfg, "r1", 10), lists(spark, cfg, "r2", 50)
    hold_at_publish("r1")
    a, a_box = in_thread(publish_run, spark, cfg, "r1")
    assert inside["r1"].wait(LONG)
    # on_held: fail: one line naming the holder and the key, nothing of r2 published.
    failing = replace(cfg, **{"output.lease.on_held": "fail"})
    with pytest.raises(LeaseHeldError) as held:
        publish_run(spark, failing, "r2")
    message = str(held.value)
    assert "\n" not in message and "output.lease.on_held" in message
    assert f"run r1 (host {lease._host().split(':')[0]}, pid {os.getpid()}" in message
    assert "stage publish, since " in message
    # on_held: wait: r2 polls until r1 is done, then publishes.
    b, b_box = in_thread(publish_run, spark, cfg, "r2")
    assert waiting.wait(LONG)
    assert b.is_alive() and json.loads(open(lease_path(cfg)).read())["run_id"] == "r1"
    go["r1"].set()
    a.join(LONG), b.join(LONG)
    assert "error" not in a_box and "error" not in b_box, (a_box, b_box)
    assert published(spark, cfg) == second != first
    assert not os.path.exists(lease_path(cfg))


@pytest.mark.spark
@pytest.mark.parametrize("on_held", ["wait", "fail"])
def test_racing_publishes_publish_one_runs_lists_never_a_mix(spark, tmp_path, monkeypatch, on_held):
    # An expiry of 15 s: a waiter polls every 1.5 s (under the default 600 s, every 5 s).
    settings = {"output.lease.expiry_seconds": 15.0, "output.keep_runs": 2}
    cfg = make_config(tmp_path, "unused.csv", **{"output.lease.on_held": on_held, **settings})
    swaps: list[str] = []  # appended under the lease: the order the swaps ran in
    real_publish = swap.publish

    def publish(spark, run, table, name):
        swaps.append(run.run_id)
        return real_publish(spark, run, table, name)

    monkeypatch.setattr(swap, "publish", publish)
    for round_ in range(3):
        ids = [f"r{round_}a", f"r{round_}b"]
        want = {r: lists(spark, cfg, r, 10 * (2 * round_ + n)) for n, r in enumerate(ids)}
        start = threading.Barrier(2)

        def publish_at_once(run_id, start):
            start.wait()
            return publish_run(spark, cfg, run_id)

        swaps.clear()
        threads = [in_thread(publish_at_once, run_id, start) for run_id in ids]
        for thread, _ in threads:
            thread.join(LONG)
        errors = [box["error"] for _, box in threads if "error" in box]
        assert all(isinstance(e, LeaseHeldError) for e in errors), errors
        assert len(errors) + len(swaps) == 2 and len(errors) <= (on_held == "fail")
        # Exactly the lists of the run that swapped last, whole.
        assert published(spark, cfg) == want[swaps[-1]], (round_, swaps)
    assert not os.path.exists(lease_path(cfg))


@pytest.mark.spark
def test_a_publish_waits_for_a_retention_sweep_that_spares_runs_being_written(
    spark, tmp_path, hooks, monkeypatch
):
    _, _, _, waiting = hooks
    cfg = make_config(
        tmp_path, "unused.csv", **{"output.keep_runs": 1, "output.lease.expiry_seconds": 30.0}
    )
    root = storage.normalize(cfg.output.root)
    for run_id, offset in [("r0-base", 0), ("r1-old", 5), ("r2-writing", 9), ("r3-refresh", 13)]:
        lists(spark, cfg, run_id, offset)
    first, second = lists(spark, cfg, "r4-first", 20), lists(spark, cfg, "r5-second", 30)
    sweeping, go = threading.Event(), threading.Event()
    real_prune = tables.prune_runs

    def prune_runs(spark, root, keep, protect, **kw):
        if protect == "r4-first":
            sweeping.set()
            assert go.wait(LONG)
        return real_prune(spark, root, keep, protect, **kw)

    monkeypatch.setattr(tables, "prune_runs", prune_runs)
    writing = tables.Run(root, "r2-writing", "parquet")
    refresh = tables.Run(root, "r3-refresh", "parquet")
    # r2 is in the middle of a stage; r3 is a refresh reading r0 as its base.
    with tables.stage(spark, writing, "train", cfg) as report:
        report["rows"]["user_factors"] = 0
        with lease.heartbeat(spark, refresh.dir, "refresh", 30.0, reads=("r0-base",)):
            a, a_box = in_thread(publish_run, spark, cfg, "r4-first")
            assert sweeping.wait(LONG)  # r4 swapped, its sweep holds the lease
            b, b_box = in_thread(publish_run, spark, cfg, "r5-second")
            assert waiting.wait(LONG)  # r5 polls the held lease
            assert b.is_alive() and published(spark, cfg) == first
            go.set()
            a.join(LONG), b.join(LONG)
            assert "error" not in a_box and "error" not in b_box, (a_box, b_box)
            assert a_box["result"]["pruned_runs"] == ["r1-old"]
            names = storage.list_names(spark, storage.join(root, "runs"))
            assert {"r0-base", "r2-writing", "r3-refresh", "r5-second"} <= set(names)
            assert "r1-old" not in names
            # Nothing of the runs being written or read was deleted.
            assert tables.read_table(spark, writing, "recommendations").count() == 8
    assert published(spark, cfg) == second
    # A writer killed mid-stage leaves its heartbeat unrenewed: after expiry it is pruned.
    stale = {"stage": "train", "renewed": time.time() - 31.0, "reads": []}
    storage.write_text(spark, storage.join(writing.dir, lease.HEARTBEAT), json.dumps(stale))
    pruned = real_prune(spark, root, 1, "r5-second", expiry_seconds=30.0)
    assert "r2-writing" in pruned and "r0-base" not in pruned and "r3-refresh" not in pruned
    # The refresh's stage ended moments ago, unpublished: kept, with its base, until expiry.
    storage.write_text(spark, storage.join(refresh.dir, lease.HEARTBEAT), json.dumps(stale))
    pruned = real_prune(spark, root, 1, "r5-second", expiry_seconds=30.0)
    assert "r3-refresh" in pruned and "r0-base" in pruned


def write_lease(cfg, **holder):
    token = uuid.uuid4().hex
    record = {"run_id": "ghost", "token": token, "host": lease._host(), "pid": os.getpid()}
    now = time.time()
    record.update({"stage": "publish", "acquired": now - 100, "renewed": now, **holder})
    path = lease_path(cfg)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f)


def dead_pid():
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.spark
def test_a_stale_lease_is_broken_and_a_live_one_is_not(spark, tmp_path, capsys):
    cfg = make_config(
        tmp_path,
        "unused.csv",
        **{"output.lease.on_held": "fail", "output.lease.expiry_seconds": 30.0},
    )
    want = lists(spark, cfg, "r1", 10)
    # Live: renewed just now by a process of this host that is running (this one).
    write_lease(cfg)
    with pytest.raises(LeaseHeldError, match=r"leased by run ghost \(host "):
        publish_run(spark, cfg, "r1")
    # Another host's lease, renewed just now: its pid means nothing here, still held.
    write_lease(cfg, host="elsewhere:1", pid=dead_pid())
    with pytest.raises(LeaseHeldError, match="host elsewhere, pid"):
        publish_run(spark, cfg, "r1")
    capsys.readouterr()
    for stale in [{"renewed": time.time() - 31.0, "host": "elsewhere:1"}, {"pid": dead_pid()}]:
        write_lease(cfg, **stale)
        publish_run(spark, cfg, "r1")
        assert "[lease] broke the stale lease of run ghost (host " in capsys.readouterr().err
        assert published(spark, cfg) == want and not os.path.exists(lease_path(cfg))
    # Only one breaker per stale lease: its marker stands, so a second breaker backs off.
    write_lease(cfg, renewed=0.0, token="t9")
    taker = lease.Lease(
        spark, storage.normalize(cfg.output.root), "r2", "publish", cfg.output.lease
    )
    storage.write_text(spark, lease_path(cfg) + ".break-t9", "{}")
    assert not taker.break_stale(taker.read())
    assert json.loads(open(lease_path(cfg)).read())["token"] == "t9"
    with pytest.raises(LeaseHeldError, match="leased by run ghost"):  # fails, does not spin
        publish_run(spark, cfg, "r1")
    # A marker older than expiry (its breaker died) is cleared, then the lease is broken.
    os.utime(lease_path(cfg) + ".break-t9", (0, 0))
    assert not taker.break_stale(taker.read())
    publish_run(spark, cfg, "r1")
    assert "broke the stale lease of run ghost" in capsys.readouterr().err


@pytest.mark.spark
def test_the_lease_is_released_when_publish_fails(spark, tmp_path):
    cfg = make_config(tmp_path, "unused.csv", **{"output.lease.on_held": "fail"})
    tables.open_run(spark, cfg, "empty", create=True)
    with pytest.raises(RunStateError, match="table 'recommendations' is missing in run empty"):
        publish_run(spark, cfg, "empty")
    assert not os.path.exists(lease_path(cfg))
    want = lists(spark, cfg, "r1", 10)
    publish_run(spark, cfg, "r1")  # would fail at once were the lease still held
    assert published(spark, cfg) == want


@pytest.mark.spark
@pytest.mark.slow
def test_the_cli_fails_in_one_line_naming_the_holder_and_the_key(spark, tmp_path):
    conf = {
        "data": {"interactions": {"path": str(tmp_path / "unused.csv")}},
        "output": {"root": str(tmp_path / "out"), "lease": {"on_held": "fail"}},
        "spark": {"master": "local[1]", "conf": {"spark.ui.enabled": "false"}},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    cfg = load_config(str(path))
    lists(spark, cfg, "r1", 10)
    root = storage.normalize(cfg.output.root)
    with lease.hold(spark, root, "holder", "publish", cfg.output.lease):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "wals_roberta.jobs.cli",
                "publish",
                "--config",
                str(path),
                "--run-id",
                "r1",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert errors[0].startswith("wals-roberta publish: error: the output root ")
    assert (
        f"leased by run holder (host {lease._host().split(':')[0]}, pid {os.getpid()}" in errors[0]
    )
    assert "output.lease.on_held=fail" in errors[0]
