"""The SparkSession every stage runs in."""

from __future__ import annotations

import os
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config


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
    if cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    # Native BLAS threads on top of Spark's task threads oversubscribe the cores (Spark's
    # MLlib guide says the same): one BLAS thread per task unless the config says otherwise.
    builder = builder.config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # local mode: the driver JVM executes
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, value)
    if "spark.pyspark.python" not in cfg.spark.conf and "PYSPARK_PYTHON" not in os.environ:
        # Read by SparkContext when it starts; local workers then share this interpreter.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


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
