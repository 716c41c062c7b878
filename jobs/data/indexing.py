"""Dense int32 indexes for original ids, assigned in id order across all partitions."""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from wals_roberta.jobs.runs.errors import InputDataError
from wals_roberta.jobs.runs.session import parallelism

INT32_MAX = 2**31 - 1


def assign_dense_index(
    ids: DataFrame,
    *,
    id_col: str,
    idx_col: str,
    what: str,
    max_ids: int = INT32_MAX,
    partitions: int | None = None,
) -> DataFrame:
    """Number the distinct values of ``id_col`` 0..n-1 in sorted id order.

    Deterministic: the index is the id's rank, whatever the partitioning. The sort is a
    range-partitioned distributed sort (``partitions`` ranges, default one per core); each
    partition numbers its rows locally and adds the sizes of the partitions before it (one
    small row per partition reaches the driver), so no row is funnelled through a single
    partition.
    """
    # One range per core, not spark.sql.shuffle.partitions of them: the distinct ids are
    # few next to the rows, and every range is a task in each of the jobs below.
    partitions = partitions or parallelism(ids.sparkSession)
    ordered = (
        ids.select(id_col)
        .distinct()
        .repartitionByRange(partitions, id_col)
        .sortWithinPartitions(id_col)
        .withColumn("_pid", F.spark_partition_id())
        .withColumn("_mid", F.monotonically_increasing_id())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    sizes = sorted(
        (int(r["_pid"]), int(r["count"])) for r in ordered.groupBy("_pid").count().collect()
    )
    total = sum(n for _, n in sizes)
    if total > max_ids:
        ordered.unpersist()
        raise InputDataError(
            f"{what}: {total:,} distinct ids exceed the {max_ids:,} that ALS int32 indexes hold"
        )
    offsets, running = [], 0
    for pid, n in sizes:
        offsets.append((pid, running))
        running += n
    spark = ids.sparkSession
    offset_df = spark.createDataFrame(offsets, "_pid int, _offset long")
    # monotonically_increasing_id() is (partition id << 33) + position within the partition.
    position = F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), 33)
    return ordered.join(F.broadcast(offset_df), "_pid").select(
        id_col, (F.col("_offset") + position).cast("int").alias(idx_col)
    )
