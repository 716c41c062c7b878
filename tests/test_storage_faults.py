"""Storage faults: an output root that cannot be written, a parent that is a file, no
permission, a full disk and an s3a:// path without hadoop-aws each stop the command with
exit 2 and one line naming the key and the cause; a publish that fails leaves the
previous published table complete and readable."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager

import pytest

from tests.conftest import REPO, make_config
from tests.test_publish import make_run
from wals_roberta.jobs import cli
from wals_roberta.jobs.runs import storage, swap
from wals_roberta.jobs.runs.errors import StorageError
from wals_roberta.jobs.runs.storage_faults import guarded, storage_cause, unnamed_storage_error

pytestmark = pytest.mark.spark

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def write_inputs(tmp_path, n_users=30, n_items=12):
    path = tmp_path / "interactions.csv"
    rows = [f"u{u},i{(u * 7 + j) % n_items},1" for u in range(n_users) for j in range(5)]
    path.write_text("user_id,item_id,plays\n" + "\n".join(rows) + "\n")
    return path


def config_file(tmp_path, root):
    path = tmp_path / "conf.yaml"
    path.write_text(
        f"data:\n  interactions: {{path: '{write_inputs(tmp_path)}', strength_col: plays}}\n"
        f"output: {{root: '{root}'}}\n"
        "wals: {rank: 4, iterations: 2, user_blocks: 2, item_blocks: 2}\n"
        "recommend: {k: 5}\nevaluate: {ks: [5]}\n"
        # Read only by a session the command starts (the subprocess below): the shuffle
        # partitions of the tests' own session, not Spark's 200 tasks a shuffle.
        "spark: {conf: {spark.sql.shuffle.partitions: '4', spark.ui.enabled: 'false'}}\n"
    )
    return str(path)


def run_cli(capsys, argv):
    """``wals-roberta`` in this process (it reuses the test session): exit status, stderr."""
    code = cli.main(argv)
    return code, capsys.readouterr().err


def error_line(err):
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "at org.apache" not in err, err
    return lines[0]


@contextmanager
def denied_directory(path):
    """A directory this process cannot create entries in: read-only mode, or for root
    (which ignores modes) the immutable attribute."""
    path.mkdir()
    if IS_ROOT:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: no way to deny a write")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {done.stderr.decode().strip()}")
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


@contextmanager
def small_filesystem(path, size="2m"):
    """A tmpfs of ``size`` mounted at ``path`` (needs root and mount rights; skips without)."""
    path.mkdir()
    if not IS_ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory, leave_bytes=0):
    """Fill the file system of ``directory`` up to ``leave_bytes`` free."""
    free = shutil.disk_usage(directory).free - leave_bytes
    with open(directory / "filler", "wb") as out:
        while free > 0:
            chunk = min(free, 1 << 20)
            try:
                out.write(b"\0" * chunk)
                out.flush()
            except OSError:
                break
            free -= chunk


def test_a_parent_that_is_a_file_is_named(spark, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    root = tmp_path / "afile" / "out"
    code, err = run_cli(capsys, ["prepare", "--config", config_file(tmp_path, root)])
    line = error_line(err)
    assert code == 2
    assert f"output.root: cannot create {root}: {tmp_path / 'afile'} is a file" in line


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_unwritable_root_is_one_line(spark, tmp_path, capsys):
    code, err = run_cli(capsys, ["prepare", "--config", config_file(tmp_path, "/proc/nope")])
    assert code == 2
    assert error_line(err).endswith(
        "output.root: cannot create /proc/nope: /proc does not take new directories "
        "(No such file or directory)"
    )


def test_permission_denied_is_one_line(spark, tmp_path, capsys):
    with denied_directory(tmp_path / "locked") as locked:
        root = locked / "out"
        code, err = run_cli(capsys, ["prepare", "--config", config_file(tmp_path, root)])
    assert code == 2
    line = error_line(err)
    assert f"output.root: cannot create {root}: permission denied" in line


def test_s3a_without_hadoop_aws_names_the_jar(spark, tmp_path, capsys):
    code, err = run_cli(capsys, ["prepare", "--config", config_file(tmp_path, "s3a://bkt/x")])
    assert code == 2
    line = error_line(err)
    assert "output.root: cannot create s3a://bkt/x: no file system for s3a://" in line
    assert "hadoop-aws" in line


def test_a_full_disk_mid_stage_is_one_line_and_names_the_root(tmp_path):
    """As a user runs it: a separate process, so the JVM's own console output is checked
    too (no task stack traces)."""
    with small_filesystem(tmp_path / "small") as small:
        root = small / "out"
        fill(small, leave_bytes=24 << 10)  # the probe and manifest fit, the tables do not
        argv = [sys.executable, "-m", "wals_roberta.jobs.cli", "prepare"]
        done = subprocess.run(
            [*argv, "--config", config_file(tmp_path, root)],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        )
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert line == done.stderr.strip().splitlines()[-1]
    assert f"output.root: cannot write {root}/runs/" in line
    assert line.endswith("no space left on the device")
    assert not re.search(r"^\s+at [\w.$]+\(", done.stderr, re.M), done.stderr[-2000:]


def published_rows(spark, root):
    df = spark.read.parquet(storage.join(str(root), "recommendations"))
    return sorted(tuple(r) for r in df.collect())


def test_publish_on_a_full_disk_keeps_the_previous_table(spark, tmp_path):
    with small_filesystem(tmp_path / "small", size="4m") as small:
        cfg = make_config(small, "unused.csv")
        first, second = make_run(spark, cfg, "r1", 3), make_run(spark, cfg, "r2", 400)
        swap.publish(spark, first, "recommendations", "recommendations")
        before = published_rows(spark, first.root)
        fill(small)
        with pytest.raises(StorageError, match="no space left on the device"):
            swap.publish(spark, second, "recommendations", "recommendations")
        assert published_rows(spark, first.root) == before and len(before) == 3
        assert [n for n in os.listdir(first.root) if n.startswith(".")] == []


def test_publish_failing_at_any_step_keeps_the_previous_table(spark, tmp_path, monkeypatch):
    """The same without a small file system: the storage layer fails on the copy, then on
    the rename that swaps the new table in."""
    cfg = make_config(tmp_path, "unused.csv")
    first, second = make_run(spark, cfg, "r1", 3), make_run(spark, cfg, "r2", 5)
    swap.publish(spark, first, "recommendations", "recommendations")
    before = published_rows(spark, first.root)
    disk_full = OSError(errno.ENOSPC, "No space left on device")

    def failing_copy(self, src, dst):
        raise disk_full

    with monkeypatch.context() as patch:
        patch.setattr(storage.HadoopFiles, "copy", failing_copy)
        with pytest.raises(StorageError, match="cannot copy to .*no space left"):
            swap.publish(spark, second, "recommendations", "recommendations")
    assert published_rows(spark, first.root) == before

    real_rename = storage.HadoopFiles.rename

    def failing_swap_in(self, src, dst):
        if ".staging-" in src:
            raise disk_full
        real_rename(self, src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(storage.HadoopFiles, "rename", failing_swap_in)
        with pytest.raises(StorageError, match="cannot rename to"):
            swap.publish(spark, second, "recommendations", "recommendations")
    assert published_rows(spark, first.root) == before
    assert [n for n in storage.list_names(spark, first.root) if n.startswith(".")] == []


def test_causes_are_read_from_java_text_and_errno(tmp_path):
    java = RuntimeError(
        "An error occurred while calling o68.parquet.\n: org.apache.spark.SparkException: "
        f"[TASK_WRITE_FAILED] Task failed while writing rows to file:{tmp_path}/out/runs/r/t.\n"
        "Caused by: java.io.IOException: No space left on device"
    )
    assert storage_cause(java) == "no space left on the device"
    assert storage_cause(PermissionError(errno.EACCES, "denied")) == "permission denied"
    assert storage_cause(ValueError("column x not found")) is None
    cfg = make_config(tmp_path, "unused.csv")
    named = unnamed_storage_error(cfg, java)
    assert named is not None and named.key == "output.root"
    assert str(named).startswith(f"output.root: cannot write to file:{tmp_path}/out/runs/r/t")


def test_the_client_backend_names_its_causes(tmp_path):
    """Spark Connect sessions write the run's own files from this process: OSErrors."""
    (tmp_path / "afile").write_text("x")
    files = storage.ClientFiles()
    with pytest.raises(StorageError, match="cannot create .*a parent of the path is a file"):
        with guarded(str(tmp_path / "afile" / "out"), "create"):
            files.make_dirs(str(tmp_path / "afile" / "out"))
    with denied_directory(tmp_path / "locked") as locked:
        with pytest.raises(StorageError, match="cannot write .*: permission denied"):
            with guarded(str(locked / "m.json"), "write"):
                files.write_text(str(locked / "m.json"), "{}")
