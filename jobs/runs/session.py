"""The SparkSession every stage runs in, and what depends on its kind.

A session is classic (a JVM on this side: ``spark-submit``, local mode, a Databricks
dedicated cluster) or Spark Connect (a client of a server elsewhere: Databricks serverless
and standard access mode, Spark 4's ``pyspark-client``, ``SPARK_REMOTE``). This module is
the one place that tells them apart (:func:`is_connect`) and answers what differs: the
parallelism, the checkpoint directory, how a small value reaches every task. Nothing else
touches ``sparkContext``.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
import warnings
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config

# Spark's own setting for the checkpoint directory of a session (Spark 4); on Spark Connect
# it can only be given when the server starts.
CHECKPOINT_DIR = "spark.checkpoint.dir"


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect session (no JVM, no ``sparkContext``)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def remote_url(cfg: Config) -> str | None:
    """The Spark Connect server to use: ``spark.remote``, else ``SPARK_REMOTE``; None for a
    classic session."""
    return cfg.spark.remote or os.environ.get("SPARK_REMOTE") or None


def note(message: str) -> None:
    """One line on stderr for a setting a session kind cannot honour."""
    print(f"[session] {message}", file=sys.stderr, flush=True)


def build_session(cfg: Config) -> SparkSession:
    """Return the active session (Databricks, notebooks, tests) or start one from ``cfg.spark``.

    ``spark.master`` null leaves the master to the launcher: ``spark-submit --master`` on a
    cluster, Spark's local mode under plain ``python``. Python workers use this interpreter
    unless ``spark.pyspark.python`` or ``PYSPARK_PYTHON`` says otherwise, so a virtual
    environment's packages (torch, pandas) are the ones executors import in local mode.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    settings = {"spark.sql.session.timeZone": "UTC"}
    remote = remote_url(cfg)
    if remote:
        builder = builder.remote(remote)
        if cfg.spark.master:
            note(f"spark.master={cfg.spark.master} not used: the session is Spark Connect")
        if remote.startswith("local"):
            # The server starts in this process: its checkpoint directory can be set now.
            from wals_roberta.jobs.runs.storage import join, normalize

            where = cfg.wals.checkpoint_dir or join(cfg.output.root, "checkpoints", "connect")
            settings[CHECKPOINT_DIR] = normalize(where)
            settings["spark.cleaner.referenceTracking.cleanCheckpoints"] = "true"
    elif cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    # Native BLAS threads on top of Spark's task threads oversubscribe the cores (Spark's
    # MLlib guide says the same): one BLAS thread per task unless the config says otherwise.
    settings["spark.executorEnv.OPENBLAS_NUM_THREADS"] = "1"
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # local mode: the driver JVM executes
    settings.update({key: str(value) for key, value in cfg.spark.conf.items()})
    for key, value in settings.items():
        builder = builder.config(key, value)
    if "spark.pyspark.python" not in cfg.spark.conf and "PYSPARK_PYTHON" not in os.environ:
        # Read by SparkContext when it starts; local workers then share this interpreter.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    with warnings.catch_warnings():
        # A Connect client sets each option on the server and warns for every one the
        # server fixes at its start; the one line below says which did not take.
        warnings.filterwarnings("ignore", message="Failed to set", category=UserWarning)
        spark = builder.getOrCreate()
    if is_connect(spark):  # a Connect server keeps its own log level
        missed = sorted(k for k, v in settings.items() if _server_conf(spark, k) != v)
        if missed:
            note(
                "not applied by the Spark Connect server (settings it fixes when it "
                f"starts): {', '.join(missed)}"
            )
    else:
        spark.sparkContext.setLogLevel("WARN")
    return spark


def _server_conf(spark: SparkSession, key: str) -> str | None:
    try:
        return spark.conf.get(key, None)
    except Exception:  # noqa: BLE001 - a key the server does not expose reads as unset
        return None


def parallelism(spark: SparkSession) -> int:
    """Tasks that keep every core busy: Spark's default parallelism. Spark Connect does not
    expose it: there it is the server's ``spark.default.parallelism`` when set, the cores of
    a ``local[N]`` master, else the shuffle partitions."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    if spark.conf.get("spark.default.parallelism", None):
        return int(spark.conf.get("spark.default.parallelism"))
    master = spark.conf.get("spark.master", None) or ""
    local = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", master)
    if local:
        cores = local.group(1)
        return (os.cpu_count() or 1) if cores == "*" else int(cores or 1)
    partitions = spark.conf.get("spark.sql.shuffle.partitions", None) or ""
    return int(partitions) if partitions.isdigit() else 200  # Spark's default


def use_checkpoint_dir(spark: SparkSession, path: str) -> str | None:
    """Make ``path`` the checkpoint directory and return it (classic sessions). On Spark
    Connect the directory is the server's ``spark.checkpoint.dir``, returned when it has
    one; None (with one line saying so) when it has none: reliable checkpoints are then
    replaced by local ones and MLlib's ALS runs without (its results are the same)."""
    if not is_connect(spark):
        spark.sparkContext.setCheckpointDir(path)
        return path
    server_dir = spark.conf.get(CHECKPOINT_DIR, None)
    if not server_dir:
        note(
            f"checkpointing skipped: the Spark Connect server has no {CHECKPOINT_DIR} (it "
            "can only be set when the server starts); lineage is cut by local checkpoints"
        )
    return server_dir or None


def in_this_thread(spark: SparkSession) -> None:
    """Make ``spark`` the calling thread's active session. A Connect session is active per
    thread, and MLlib on Connect finds its session that way (a classic one is
    process-wide): a thread pool that fits models runs this first in each thread."""
    if is_connect(spark):
        type(spark)._set_default_and_active_session(spark)


class Shipped:
    """A value every task of a job reads (``for_tasks()`` is what the task function
    captures; the task reads ``.value`` of a broadcast); ``release()`` when done."""

    def __init__(self, spark: SparkSession, value: Any) -> None:
        # Classic: a broadcast, sent to each executor once. Connect has no broadcast
        # variables: the value travels inside the function it is given to.
        self._broadcast = None if is_connect(spark) else spark.sparkContext.broadcast(value)
        self._value = value

    def for_tasks(self) -> Any:
        """What a function shipped to executors should capture."""
        return self._value if self._broadcast is None else self._broadcast

    def release(self) -> None:
        if self._broadcast is not None:
            self._broadcast.unpersist()


class JobCounter:
    """Counts the Spark jobs started by the calling thread while it is open: each stage's
    ``spark_jobs`` in the manifest, so fixed costs (one job per count, collect, write and
    read-back, and per adaptive query stage) show up next to the seconds.

    Classic sessions only: the jobs carry a job tag of their own, counted by the status
    tracker, which works with the UI off and keeps the last ``spark.ui.retainedJobs``
    (1000) jobs, so a stage with more reads as at most that. Jobs started by other threads
    (a thread pool of the caller's) are not counted. On Spark Connect there is no status
    tracker: :meth:`count` is None there.
    """

    # The status tracker learns of a job from the listener bus, a moment after it starts.
    SETTLE_MS = 5_000

    def __init__(self, spark: SparkSession, label: str) -> None:
        self._spark = spark
        self._tag = None if is_connect(spark) else f"wals-roberta-{label}-{uuid.uuid4().hex[:12]}"
        if self._tag is not None:
            spark.sparkContext.addJobTag(self._tag)

    def count(self) -> int | None:
        """Jobs started so far with this counter open; None on Spark Connect."""
        if self._tag is None:
            return None
        context = self._spark.sparkContext._jsc.sc()
        try:
            context.listenerBus().waitUntilEmpty(self.SETTLE_MS)
        except Exception:  # noqa: BLE001 - a busy bus: count what it has delivered
            pass
        return len(context.statusTracker().getJobIdsForTag(self._tag))

    def close(self) -> None:
        """Stop tagging this thread's jobs (the count stays readable)."""
        if self._tag is not None:
            self._spark.sparkContext.removeJobTag(self._tag)


def in_canonical_order(df: DataFrame, partitions: int, *keys: str) -> DataFrame:
    """``df`` hash-partitioned by ``keys[0]`` into ``partitions`` and sorted by ``keys``
    within each partition.

    Solvers and statistics sum terms in the order rows arrive, and float sums depend on that
    order. A table's files are listed in an order the file system chooses (two runs of the
    same job differ), so without this two identical runs differ in the last bit of their
    factors and, through near ties, their lists could too."""
    return df.repartition(partitions, keys[0]).sortWithinPartitions(*keys)


# A side of a join with at most this many rows is broadcast (tens of MB at most): a day's
# changes are small next to a run's tables, which then stream through without a shuffle.
# A larger side is joined by shuffle as usual.
BROADCAST_ROWS = 1_000_000


def small(df: DataFrame, rows: int) -> DataFrame:
    """``df`` marked for broadcast when ``rows`` (its known size) is at most BROADCAST_ROWS."""
    return F.broadcast(df) if rows <= BROADCAST_ROWS else df


# Spark logs every failed task with its Java stack trace on the driver's console, once per
# logger; the command's own last line names the cause, and the traces stay in the Spark UI,
# the event log and the executors' logs.
TASK_FAILURE_LOGGERS = (
    "org.apache.spark.executor.Executor",
    "org.apache.spark.scheduler.TaskSetManager",
    "org.apache.spark.sql.execution.datasources.FileFormatWriter",
    "org.apache.spark.util.Utils",
)


def quiet_task_failure_logs(spark: SparkSession) -> None:
    """Turn off the console loggers that repeat a failed task's stack trace (classic
    sessions started by the command; a Spark Connect server logs on its own side)."""
    if is_connect(spark):
        return
    jvm = spark.sparkContext._jvm
    off = jvm.org.apache.logging.log4j.Level.OFF
    for name in TASK_FAILURE_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, off)
