"""The output root's lease, and each run's heartbeat: two runs on one root (a manual rerun
beside the scheduled one, two DAG runs) never interleave publish and retention, and
retention never deletes a run that is still being written.

The lease is ``<output.root>/_lease.json``, created only if absent (atomic on HDFS and
local paths; on object stores, S3 included, a check then an upload: best effort, see
:func:`storage.create_exclusive`). It names its holder (run id, a random token, host, pid,
stage, when acquired and renewed); a daemon thread renews it every ``expiry_seconds / 3``
while held, and it is removed when released. A lease not renewed for
``output.lease.expiry_seconds``, or held by a process of this host that no longer exists,
is stale: the next taker breaks it, one breaker per stale lease (a ``.break-<token>``
marker, itself created only if absent), with a line on stderr naming the old holder.

A run's heartbeat is ``<run>/_heartbeat.json``, renewed the same way while one of its stages
runs and at the stage's end, and marked done once the run is published. ``prune_runs``
keeps a run whose heartbeat is not done and was renewed within ``expiry_seconds`` (see
:func:`being_written`), and the runs it reads (a refresh's base).

Clocks: renewal times are the writer's clock, compared with the reader's; hosts must agree
to well within ``expiry_seconds``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession

from wals_roberta.jobs.config.schema import LeaseConfig
from wals_roberta.jobs.runs import storage
from wals_roberta.jobs.runs.errors import LeaseHeldError

LEASE = "_lease.json"
HEARTBEAT = "_heartbeat.json"
_sleep = time.sleep  # the wait's polling; tests wrap it to see a waiter


def _host() -> str:
    """This host, and its PID namespace where there is one (containers sharing a host name
    do not share pids)."""
    try:
        return f"{socket.gethostname()}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def describe(holder: dict[str, Any]) -> str:
    """``run R (host H, pid P, stage S, since T)``: who holds a lease."""
    if "token" not in holder:
        return "an unreadable lease (its writer died while creating it, or creates it now)"
    return (
        f"run {holder['run_id']} (host {holder['host'].split(':')[0]}, pid {holder['pid']}, "
        f"stage {holder['stage']}, since {_when(holder['acquired'])}, "
        f"renewed {_when(holder['renewed'])})"
    )


class _Renewer:
    """A daemon thread calling ``renew`` every ``interval`` seconds until stopped."""

    def __init__(self, renew: Any, interval: float, name: str) -> None:
        self._stop = threading.Event()
        self._renew, self._interval = renew, interval
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if self._renew() is False:
                    return
            except Exception as exc:  # storage hiccup: try again at the next interval
                print(f"[lease] could not renew: {exc}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Lease:
    """The lease on one output root for one run's stage; use :func:`hold`."""

    def __init__(
        self, spark: SparkSession, root: str, run_id: str, stage: str, cfg: LeaseConfig
    ) -> None:
        self.spark, self.root, self.cfg = spark, root, cfg
        self.path = storage.join(root, LEASE)
        now = time.time()
        self.record = {
            "run_id": run_id,
            "token": uuid.uuid4().hex,
            "host": _host(),
            "pid": os.getpid(),
            "stage": stage,
            "acquired": now,
            "renewed": now,
        }
        self.lost_to: dict[str, Any] | None = None
        self._renewer: _Renewer | None = None

    def read(self) -> dict[str, Any] | None:
        """The current lease file: None when there is none; ``{"renewed": mtime}`` when it
        cannot be parsed (created, not yet written)."""
        try:
            return json.loads(storage.read_text(self.spark, self.path))
        except (json.JSONDecodeError, UnicodeDecodeError):
            modified = storage.modified(self.spark, self.path)
            return None if modified is None else {"renewed": modified}
        except Exception:
            if not storage.exists(self.spark, self.path):
                return None
            raise

    def stale(self, holder: dict[str, Any], now: float) -> bool:
        if now - float(holder["renewed"]) > self.cfg.expiry_seconds:
            return True
        return holder.get("host") == _host() and not _alive(int(holder["pid"]))

    def acquire(self) -> None:
        """Take the lease: at once when free, after breaking it when stale, else wait up to
        ``wait_seconds`` (``on_held: wait``) or fail now (``fail``) with LeaseHeldError."""
        started = time.time()
        said_waiting = False
        while True:
            self.record["acquired"] = self.record["renewed"] = time.time()
            if storage.create_exclusive(self.spark, self.path, json.dumps(self.record)):
                self._renewer = _Renewer(self.renew, self.cfg.expiry_seconds / 3, "lease")
                return
            holder = self.read()
            now = time.time()
            if holder is None:
                continue  # released between our create and our read
            if self.stale(holder, now) and self.break_stale(holder):
                continue
            waited = now - started
            if self.cfg.on_held == "fail" or waited >= self.cfg.wait_seconds:
                raise LeaseHeldError(self.held_message(holder, waited))
            if not said_waiting:
                print(
                    f"[lease] {self.root} is held by {describe(holder)}; waiting up to "
                    f"{self.cfg.wait_seconds:g} s (output.lease.wait_seconds)",
                    file=sys.stderr,
                    flush=True,
                )
                said_waiting = True
            poll = min(max(self.cfg.expiry_seconds / 10, 0.05), 5.0)
            _sleep(min(poll, self.cfg.wait_seconds - waited))

    def held_message(self, holder: dict[str, Any], waited: float) -> str:
        if self.cfg.on_held == "fail":
            what = "fails at once (output.lease.on_held=fail; set it to wait to queue)"
        else:
            what = (
                f"still held after waiting {waited:.0f} s (output.lease.wait_seconds; "
                "output.lease.on_held=fail fails at once)"
            )
        return (
            f"the output root {self.root} is leased by {describe(holder)}, which publishes "
            f"or prunes runs there; run {self.record['run_id']} {what}"
        )

    def break_stale(self, holder: dict[str, Any]) -> bool:
        """Remove the stale lease ``holder`` when this taker is the one breaker of it; False
        when another taker breaks it (its marker stands), so this one waits as for a holder.
        A marker older than ``expiry_seconds`` (its breaker died) is removed."""
        key = holder.get("token") or f"unreadable-{holder['renewed']}"
        marker = f"{self.path}.break-{key}"
        if not storage.create_exclusive(self.spark, marker, json.dumps(self.record)):
            made = storage.modified(self.spark, marker)
            if made is not None and time.time() - made > self.cfg.expiry_seconds:
                storage.delete(self.spark, marker)
            return False
        current = self.read()
        if current is None or (current.get("token") or f"unreadable-{current['renewed']}") != key:
            return True  # gone or replaced meanwhile: try to take it again
        storage.delete(self.spark, self.path)
        print(
            f"[lease] broke the stale lease of {describe(holder)} on {self.root}",
            file=sys.stderr,
            flush=True,
        )
        prefix = f"{LEASE}.break-"
        for name in storage.list_names(self.spark, self.root):
            if name.startswith(prefix) and name != f"{prefix}{key}":
                storage.delete(self.spark, storage.join(self.root, name))
        return True

    def renew(self) -> bool:
        """Write a new renewal time; False (and renewing stops) once the lease is another's."""
        current = self.read()
        if current is None or current.get("token") != self.record["token"]:
            self.lost_to = current or {}
            print(
                f"[lease] run {self.record['run_id']} lost the lease on {self.root} to "
                f"{describe(current) if current else 'nobody (removed)'}",
                file=sys.stderr,
                flush=True,
            )
            return False
        self.record["renewed"] = time.time()
        storage.replace_text(self.spark, self.path, json.dumps(self.record))
        return True

    def check(self) -> None:
        """Raise LeaseHeldError when the lease was broken by another taker (this holder went
        unrenewed for ``expiry_seconds``): nothing more may be published or pruned."""
        if self.lost_to is not None:
            raise LeaseHeldError(
                f"run {self.record['run_id']} lost the lease on {self.root} (not renewed for "
                f"output.lease.expiry_seconds={self.cfg.expiry_seconds:g}); stopped"
            )

    def release(self) -> None:
        if self._renewer is not None:
            self._renewer.stop()
        current = self.read()
        if current is not None and current.get("token") == self.record["token"]:
            storage.delete(self.spark, self.path)


@contextmanager
def hold(
    spark: SparkSession, root: str, run_id: str, stage: str, cfg: LeaseConfig
) -> Iterator[Lease]:
    """Hold the lease on ``root`` for the body (waiting or failing as ``cfg`` says); it is
    released however the body ends."""
    lease = Lease(spark, root, run_id, stage, cfg)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


# --- a run's heartbeat -----------------------------------------------------------------


@contextmanager
def heartbeat(
    spark: SparkSession, run_dir: str, stage: str, expiry_seconds: float, reads: tuple = ()
) -> Iterator[None]:
    """Mark the run as being written while the body (one stage) runs: the heartbeat is
    renewed every ``expiry_seconds / 3`` and once more at the end. ``reads``: other runs
    the stage reads (kept by retention while it is fresh)."""
    path = storage.join(run_dir, HEARTBEAT)
    record = {"stage": stage, "host": _host(), "pid": os.getpid(), "reads": list(reads)}

    def renew() -> bool:
        storage.replace_text(spark, path, json.dumps({**record, "renewed": time.time()}))
        return True

    renew()
    renewer = _Renewer(renew, expiry_seconds / 3, f"heartbeat-{stage}")
    try:
        yield
    finally:
        renewer.stop()
        try:
            renew()
        except Exception as exc:  # the stage's own error, if any, is the one to report
            print(f"[lease] could not renew the heartbeat: {exc}", file=sys.stderr, flush=True)


def mark_done(spark: SparkSession, run_dir: str) -> None:
    """The run is complete and published: retention may treat it like any finished run."""
    storage.replace_text(
        spark, storage.join(run_dir, HEARTBEAT), json.dumps({"done": True, "at": time.time()})
    )


def being_written(
    spark: SparkSession, run_dir: str, expiry_seconds: float, now: float
) -> tuple[bool, list[str]]:
    """Whether the run's heartbeat is fresh (renewed within ``expiry_seconds``, not done),
    and the runs it reads. A run without a heartbeat, done, or unrenewed for longer (its
    writer killed mid-stage, or idle between stages for that long) is not being written."""
    path = storage.join(run_dir, HEARTBEAT)
    try:
        beat = json.loads(storage.read_text(spark, path))
    except (json.JSONDecodeError, UnicodeDecodeError):  # being rewritten: a live writer
        modified = storage.modified(spark, path)
        return modified is not None and now - modified <= expiry_seconds, []
    except Exception:
        if storage.exists(spark, path):
            raise
        return False, []
    if beat.get("done"):
        return False, []
    return now - float(beat["renewed"]) <= expiry_seconds, list(beat.get("reads", []))
