"""Blocked top-k scoring: users × items by matrix products, never by a row cross join.

The executor logic is plain numpy (:mod:`udfs.topk_kernel`) inside mapInArrow bodies
(:mod:`udfs.topk_arrow`). :func:`recommend_top_k` packs users and items into blocks (one
row per block, vectors flattened) and pairs every user block with every item block in one
of two plans, both exact and giving the same lists:

- **broadcast** (catalogs up to ``broadcast_max_mb`` of item vectors): the item blocks are
  broadcast, each task scores its one user block against all of them and merges the partial
  lists in memory. Nothing is shuffled but the users; every executor holds the catalog.
- **shuffle** (larger catalogs): tiles (user block, item block) meet by a sort-merge join
  keyed on the item block (and a share of the user blocks, for parallelism); each task holds
  one item block and one user block at a time. The partial lists, packed one row per tile,
  are shuffled by user block and merged by a running top-k that holds one block's lists.
"""

from __future__ import annotations

from wals_roberta.udfs.topk_arrow import merge_partial_lists, pack_user_rows, score_block_pairs

TOP_K_SCHEMA = "user_idx int, item_idx int, score float, rank int"
# Item vectors (MB of float32) up to which the item blocks are broadcast; see
# bench/bench_topk_plans.py for the measurement behind the default.
BROADCAST_MAX_MB = 64.0
# Rows handed to a scoring task per Arrow batch are capped at this many bytes, so a batch
# holds a few block pairs, not 10,000 (Spark's row cap) of them.
ARROW_BATCH_BYTES = 64 * 1024 * 1024


def recommend_top_k(
    user_vectors,
    item_vectors,
    *,
    k: int,
    seen=None,
    user_vector_col: str = "factors",
    item_vector_col: str = "factors",
    users_per_block: int = 16384,
    items_per_block: int = 65536,
    carry: str | None = None,
    item_group_col: str | None = None,
    broadcast_max_mb: float = BROADCAST_MAX_MB,
):
    """Top-k per user over all items, computed on executors; with ``item_group_col``, top-k
    per user and item group (one pass over the users for every group).

    Args:
        user_vectors: DataFrame ``(user_idx int, <user_vector_col> array<float>)``.
        item_vectors: DataFrame ``(item_idx int, <item_vector_col> array<float>)``.
        k: list length.
        seen: optional DataFrame of items to exclude, as pairs ``(user_idx, item_idx)`` or
            as lists ``(user_idx, seen array<int>)``.
        carry: a column of ``user_vectors`` (e.g. ``user_id``) copied onto each list row.
        item_group_col: an int column of ``item_vectors``: the items of each value form a
            catalog of their own, each user gets a list per group (an item index may appear
            in several groups, with a different vector in each; items with a null group
            are left out).
        broadcast_max_mb: item vectors (items × rank × 4 bytes, all groups) up to which the
            item blocks are broadcast; past it, the shuffle plan (0: always shuffle).

    Returns:
        DataFrame ``([carry,] [item_group_col,] user_idx, item_idx, score, rank)``, rank 1..k
        per user (and group), ordered by score descending then item index ascending.
    """
    from pyspark.sql import functions as F

    spark = user_vectors.sparkSession
    spark.conf.set("spark.sql.execution.arrow.maxBytesPerBatch", str(ARROW_BATCH_BYTES))
    extra = [carry] if carry else []
    groups = [item_group_col] if item_group_col else []
    user_blocks, n_user_blocks, rank = _user_blocks(
        user_vectors, user_vector_col, seen, carry, users_per_block
    )
    items = item_vectors.select(
        "item_idx", F.col(item_vector_col).alias("vector"), *[F.col(g).cast("int") for g in groups]
    )
    if item_group_col:  # an item without a group is in no catalog (and in no block count)
        items = items.filter(F.col(item_group_col).isNotNull())
    items = items.withColumn("item_block", (F.col("item_idx") / items_per_block).cast("int"))
    n_items, n_keys = items.agg(F.count(F.lit(1)), F.count_distinct(*groups, "item_block")).first()
    user_side = user_blocks.select(
        "block", "user_idx", F.col("vectors").alias("user_vectors"), "seen_offsets",
        "seen_items", *extra,
    )  # fmt: skip
    out_schema = TOP_K_SCHEMA
    if item_group_col:
        out_schema = f"{item_group_col} int, " + out_schema
    if carry:
        out_schema = f"{carry} {column_type(user_vectors, carry)}, " + out_schema
    if n_items * rank * 4 <= broadcast_max_mb * 2**20:
        # The item blocks are what is broadcast, never the user blocks.
        pairs = user_side.crossJoin(F.broadcast(_item_blocks(items, groups)))
        return pairs.mapInArrow(score_block_pairs(k, rank, carry, item_group_col), out_schema)
    pairs = _tiles(user_side, items, groups, n_user_blocks, n_keys, _cores(spark))
    partial_schema = "block int, " + "".join(f"{g} int, " for g in groups)
    partial_schema += "user_idx array<int>, item_idx array<int>, score array<float>"
    if carry:
        partial_schema += f", {carry} array<{column_type(user_vectors, carry)}>"
    partial = pairs.mapInArrow(
        score_block_pairs(k, rank, carry, item_group_col, merge=False), partial_schema
    )
    return partial.repartition(n_user_blocks, "block").mapInArrow(
        merge_partial_lists(k, int(n_keys), carry, item_group_col), out_schema
    )


def _user_blocks(user_vectors, vector_col: str, seen, carry: str | None, users_per_block: int):
    """``(user blocks, their number, rank)``: one row per block, ``(block, user_idx[],
    vectors[], seen_offsets[], seen_items[], [carry[]])``."""
    from pyspark.sql import functions as F

    extra = [carry] if carry else []
    users = user_vectors.select("user_idx", F.col(vector_col).alias("vector"), *extra).withColumn(
        "item_idx", F.lit(-1)
    )
    stats = users.agg(F.count(F.lit(1)), F.max(F.size("vector"))).first()
    if not stats[0]:
        n_user_blocks, rank = 1, 0
    else:
        # Blocks of at most users_per_block users, counted (not the largest index: a refresh
        # scores a sparse subset), as many as a whole number of waves over the cores (13
        # blocks on 2 cores would leave one core idle for the last). Each block costs a task,
        # the item blocks' transfer and the kernel's set-up: at 10^7 interactions 16,384
        # users per block ran the scoring in 18 s, 4,096 in 23 s.
        cores = _cores(user_vectors.sparkSession)
        n_user_blocks = user_block_count(int(stats[0]), users_per_block, cores)
        rank = int(stats[1])
    if seen is not None:
        if "seen" in seen.columns:
            seen = seen.select("user_idx", F.explode("seen").alias("item_idx"))
        users = users.unionByName(
            seen.select(
                "user_idx",
                F.array().cast("array<float>").alias("vector"),
                *[F.lit(None).cast(users.schema[c].dataType).alias(c) for c in extra],
                F.col("item_idx").cast("int"),
            )
        )
    # One shuffle: vectors and seen pairs hash-partitioned by user into one partition per
    # block of users (a number adaptive execution keeps), each packed into one row by numpy
    # — no per-user grouping, join or pandas on the way.
    user_schema = (
        "block int, user_idx array<int>, vectors array<float>, seen_offsets array<int>, "
        "seen_items array<int>"
    )
    if carry:
        user_schema += f", {carry} array<{column_type(user_vectors, carry)}>"
    blocks = users.repartition(n_user_blocks, "user_idx").mapInArrow(
        pack_user_rows(rank, carry), user_schema
    )
    return blocks, n_user_blocks, rank


def _item_blocks(items, keys: list[str]):
    """One row per item block (per value of ``keys`` besides the block), packed in the JVM
    (no Python worker): the block's items sorted by index, their vectors concatenated in that
    order, ``(keys..., item_idx[], item_vectors[])``."""
    from pyspark.sql import functions as F

    return (
        items.groupBy(*keys, "item_block")
        .agg(F.sort_array(F.collect_list(F.struct("item_idx", "vector"))).alias("items"))
        .select(
            *keys,
            "item_block",
            F.col("items.item_idx").alias("item_idx"),
            F.flatten(F.col("items.vector")).alias("item_vectors"),
        )
    )


def _tiles(user_side, items, groups: list[str], n_user_blocks: int, n_keys: int, cores: int):
    """Every (user block, item block) pair as one row, by a sort-merge join: each user block
    is copied once per item block, each item block once per share of the user blocks (as
    many shares as it takes for the tiles to fill the cores). The item blocks are packed by
    the shuffle that the join's partitioning reuses; a task streams its user blocks past the
    one item block of its key, so it never holds more than one of each."""
    from pyspark.sql import functions as F

    shares = max(1, min(n_user_blocks, -(-cores // max(1, n_keys))))
    share_ids = user_side.sparkSession.range(shares).select(F.col("id").cast("int").alias("share"))
    item_blocks = _item_blocks(items.crossJoin(F.broadcast(share_ids)), [*groups, "share"])
    keys = items.select(*groups, "item_block").distinct()
    users = user_side.withColumn("share", F.col("block") % shares).crossJoin(F.broadcast(keys))
    # User blocks stream (left), the item block of each key is the buffered side (right).
    on = [*groups, "item_block", "share"]
    return users.join(item_blocks.hint("merge"), on=on).drop("item_block", "share")


def _cores(spark) -> int:
    from wals_roberta.jobs.runs.session import parallelism

    return parallelism(spark)


def user_block_count(n_users: int, users_per_block: int, cores: int) -> int:
    """Blocks of at most ``users_per_block`` users, a multiple of ``cores`` (at least one
    per core)."""
    waves = max(1, -(-n_users // (users_per_block * cores)))
    return waves * cores


def column_type(df, name: str) -> str:
    """The Spark SQL type of column ``name``, as a DDL string."""
    return df.schema[name].dataType.simpleString()
