"""Blocked top-k scoring: users × items by matrix products, never by a row cross join.

The executor logic is :func:`top_k_block`, a plain numpy function. The Spark side
packs users and items into blocks (one row per block, vectors flattened), pairs every user
block with every item block, scores each pair with one matmul and a selection of the
candidates (no torch: the scoring's Python workers never pay for importing it), and
merges the partial lists when there is more than one item block.
"""

from __future__ import annotations

import numpy as np

TOP_K_SCHEMA = "user_idx int, item_idx int, score float, rank int"

# Scores of one user chunk against one item block stay under this many floats (8 MB): the
# matmul writes them and the selection reads them while they are still in cache. Measured with
# 4,096 users × 40,000 items, rank 64, one thread: 256 MB chunks 2.3 s, 8 MB 0.9 s (torch
# products); with numpy's products 0.41 s against 0.59 s for torch's, two tasks at once.
MAX_SCORE_FLOATS = 2 * 1024 * 1024
# Items per group of the selection (fewer where the items are fewer than 8·k groups of it):
# a user's k-th best group maximum bounds their k-th best score from below, so only groups
# whose maximum reaches it hold candidates.
GROUP = 64


def top_k_block(
    user_vectors: np.ndarray,
    item_ids: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    seen_offsets: np.ndarray | None = None,
    seen_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k items per user by dot product, excluding each user's seen items.

    Args:
        user_vectors: (n_users, rank) float32.
        item_ids: (n_items,) item indexes, ascending.
        item_vectors: (n_items, rank) float32, rows matching ``item_ids``.
        k: list length; fewer where a user has fewer unseen items.
        seen_offsets, seen_items: the seen items in CSR form, user i's are
            ``seen_items[seen_offsets[i]:seen_offsets[i+1]]`` (ids outside this block ignored).

    Returns:
        ``(row, item, score)`` flat arrays, rows in user order and, within a user, by score
        descending then item index ascending. ``row`` indexes ``user_vectors``.
    """
    n_users, n_items = user_vectors.shape[0], item_ids.shape[0]
    if n_users == 0 or n_items == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.astype(np.int32), np.empty(0, dtype=np.float32)
    kk = min(k, n_items)
    # Items padded with zero vectors to whole groups; their scores are set to -inf.
    group = max(1, min(GROUP, n_items // (8 * kk)))
    width = -(-n_items // group) * group
    items_t = np.zeros((user_vectors.shape[1], width), dtype=np.float32)
    items_t[:, :n_items] = np.asarray(item_vectors, dtype=np.float32).T
    users = np.asarray(user_vectors, dtype=np.float32)
    seen_rows, seen_cols = _seen_positions(n_users, item_ids, seen_offsets, seen_items)
    chunk = min(n_users, max(1, MAX_SCORE_FLOATS // width))
    buffer = np.empty((chunk, width), dtype=np.float32)
    rows, items, scores = [], [], []
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        # Products by numpy (OpenBLAS; the job's session sets spark.executorEnv.
        # OPENBLAS_NUM_THREADS=1, one thread per task; see MAX_SCORE_FLOATS).
        block = np.matmul(users[start:stop], items_t, out=buffer[: stop - start])
        block[:, n_items:] = -np.inf
        if seen_rows.size:
            # seen_rows is sorted: the chunk's entries are one slice, found without a scan.
            lo, hi = np.searchsorted(seen_rows, [start, stop])
            block[seen_rows[lo:hi] - start, seen_cols[lo:hi]] = -np.inf
        r, pos, s = _candidates(block, kk, group)
        top_items = item_ids[pos]
        # Every candidate sorted by (user, score descending, item index): ties in score are
        # ordered by item index, so that lists never depend on the order of the computation.
        order = np.lexsort((top_items, -s, r))
        r, top_items, s = r[order], top_items[order], s[order]
        keep = ranks_within_rows(r) <= kk
        rows.append(r[keep] + start)
        items.append(top_items[keep])
        scores.append(s[keep])
    return (
        np.concatenate(rows),
        np.concatenate(items).astype(np.int32),
        np.concatenate(scores).astype(np.float32),
    )


def _candidates(block: np.ndarray, kk: int, group: int):
    """``(row, column, score)`` of every finite score that may be among its row's best
    ``kk``: at least the best ``kk`` (all of them where a row has fewer), every item tied with
    the kk-th included.

    The maximum of each ``group`` of columns is taken (one pass over the block, while it
    is in cache); the kk-th largest group maximum ``t`` is at most the kk-th largest score
    (kk groups each hold a score of at least ``t``), so only scores ``>= t`` in groups whose
    maximum reaches ``t`` are candidates — about kk groups per row instead of all columns.
    """
    n_rows, width = block.shape
    n_groups = width // group
    grouped = block.reshape(n_rows, n_groups, group)
    group_max = grouped.max(axis=2)
    if n_groups >= kk:
        bound = np.partition(group_max, n_groups - kk, axis=1)[:, n_groups - kk]
    else:  # fewer groups than places: every score is a candidate
        bound = np.full(n_rows, -np.inf, dtype=np.float32)
    g_rows, g_cols = np.nonzero(group_max >= bound[:, None])
    values = grouped[g_rows, g_cols]  # (candidate groups, group)
    keep = (values >= bound[g_rows, None]) & np.isfinite(values)
    cols = g_cols[:, None] * group + np.arange(group)
    return np.repeat(g_rows, keep.sum(axis=1)), cols[keep], values[keep]


def _seen_positions(
    n_users: int,
    item_ids: np.ndarray,
    seen_offsets: np.ndarray | None,
    seen_items: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every seen item that lies in this item block."""
    if seen_offsets is None or seen_items is None or len(seen_items) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    counts = np.diff(np.asarray(seen_offsets, dtype=np.int64))
    rows = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    seen = np.asarray(seen_items, dtype=np.int64)
    cols = np.searchsorted(item_ids, seen)
    inside = cols < len(item_ids)
    inside[inside] = item_ids[cols[inside]] == seen[inside]
    return rows[inside], cols[inside].astype(np.int64)


def ranks_within_rows(rows: np.ndarray) -> np.ndarray:
    """1-based position of each entry within its run of equal ``rows`` (rows are grouped)."""
    if rows.size == 0:
        return rows.astype(np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    lengths = np.diff(np.r_[starts, rows.size])
    return (np.arange(rows.size) - np.repeat(starts, lengths) + 1).astype(np.int32)


# --- block packing and scoring (run inside mapInArrow) ----------------------------------


def list_values(column, i: int) -> np.ndarray:
    """Row ``i`` of an Arrow list column as a numpy view (no copy for numeric values)."""
    return column[i].values.to_numpy(zero_copy_only=False)


def vector_rows(column, rank: int, what: str) -> np.ndarray:
    """An Arrow ``list<float>`` column (array or chunked) as an ``(n, rank)`` float32 array.

    Raises:
        ValueError: naming ``what`` when a vector is null or not of length ``rank`` (each
            length is checked, not only the total).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) and (
        column.null_count or pc.any(pc.not_equal(pc.list_value_length(column), rank)).as_py()
    ):
        raise ValueError(f"{what} are not all of length {rank}")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(-1, rank)


def pack_user_rows(rank: int, carry: str | None = None):
    """mapInArrow body: one partition's user rows and seen rows → one user-block row.

    Input rows are either ``(user_idx, vector)`` with ``item_idx`` −1, or a seen pair
    ``(user_idx, item_idx)`` with an empty ``vector``, hash-partitioned by user in any order
    (empty lists, not nulls: Spark's Arrow conversion of null arrays is several times
    slower). The output row holds the partition's users sorted by index, their vectors
    flattened and their seen items in CSR form (offsets into ``seen_items``), plus the
    ``carry`` column's values per user. Users with seen rows but no vector are dropped
    (they get no list).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    def run(batches):
        batches = [b for b in batches if b.num_rows]
        if not batches:  # an empty partition
            return
        table = pa.Table.from_batches(batches)
        table = table.combine_chunks()
        is_vector = pc.less(table.column("item_idx"), 0)
        users = table.filter(is_vector)
        if users.num_rows == 0:
            return
        seen = table.filter(pc.invert(is_vector))
        user_idx = users.column("user_idx").to_numpy()
        order = np.argsort(user_idx, kind="stable")
        user_idx = user_idx[order]
        vectors = vector_rows(users.column("vector"), rank, "top-k: user vectors")[order]
        s_user = seen.column("user_idx").to_numpy()
        s_item = seen.column("item_idx").to_numpy()
        s_order = np.lexsort((s_item, s_user))
        s_user, s_item = s_user[s_order], s_item[s_order]
        # Offsets of each listed user's seen items; seen rows of users without a vector
        # fall between the offsets and are never read.
        lo = np.searchsorted(s_user, user_idx, side="left")
        hi = np.searchsorted(s_user, user_idx, side="right")
        lengths = hi - lo
        take = np.repeat(lo - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        columns = {
            "user_idx": user_idx.astype(np.int32),
            "vectors": vectors,
            "seen_offsets": np.r_[0, np.cumsum(lengths)].astype(np.int32),
            "seen_items": s_item[take].astype(np.int32),
        }
        if carry is not None:
            columns[carry] = users.column(carry).take(pa.array(order)).combine_chunks()
        yield pa.RecordBatch.from_arrays(one_row_lists(**columns), names=list(columns))

    return run


def one_row_lists(**arrays) -> list:
    """Each array as a one-row Arrow list column: numpy float32 → list<float>, other numpy
    → list<int>, an Arrow array → a list of its own type."""
    import pyarrow as pa

    columns = []
    for values in arrays.values():
        if not isinstance(values, pa.Array):
            kind = pa.float32() if values.dtype == np.float32 else pa.int32()
            values = pa.array(np.ravel(values), type=kind)
        offsets = pa.array([0, len(values)], type=pa.int32())
        columns.append(pa.ListArray.from_arrays(offsets, values))
    return columns


def score_block_pairs(k: int, rank: int, carry: str | None = None, group: str | None = None):
    """mapInArrow body: each input row is one (user block, item block) pair; the output is
    ``([carry,] [group,] user_idx, item_idx, score, rank)``, ranks within the item block (the
    block's ``group`` value copied onto its rows)."""
    import pyarrow as pa

    def run(batches):
        for batch in batches:
            cols = {name: batch.column(name) for name in batch.schema.names}
            for i in range(batch.num_rows):
                user_idx = list_values(cols["user_idx"], i)
                item_idx = list_values(cols["item_idx"], i)
                item_vectors = list_values(cols["item_vectors"], i)
                if item_vectors.size != item_idx.size * rank:
                    raise ValueError(f"top-k: item vectors are not all of length {rank}")
                rows, top_items, scores = top_k_block(
                    list_values(cols["user_vectors"], i).reshape(-1, rank),
                    item_idx,
                    item_vectors.reshape(-1, rank),
                    k,
                    list_values(cols["seen_offsets"], i),
                    list_values(cols["seen_items"], i),
                )
                arrays = [
                    pa.array(user_idx[rows], type=pa.int32()),
                    pa.array(top_items, type=pa.int32()),
                    pa.array(scores, type=pa.float32()),
                    pa.array(ranks_within_rows(rows), type=pa.int32()),
                ]
                names = ["user_idx", "item_idx", "score", "rank"]
                if group is not None:
                    value = cols[group][i].as_py()
                    arrays.insert(0, pa.array(np.full(len(rows), value, dtype=np.int32)))
                    names.insert(0, group)
                if carry is not None:
                    arrays.insert(0, cols[carry][i].values.take(pa.array(rows)))
                    names.insert(0, carry)
                yield pa.RecordBatch.from_arrays(arrays, names=names)

    return run


def reaching_pairs(items):
    """mapInArrow body: rows ``(user_idx, vector, kth)`` → ``(user_idx, item_idx)`` for every
    item that scores at least the row's ``kth`` — the items that would enter a list whose
    k-th score is ``kth``. ``items`` is ``(item indexes, item vectors)`` or a Spark broadcast
    of it. Users are scored in chunks of at most MAX_SCORE_FLOATS scores; no per-row Python."""
    import pyarrow as pa

    def run(batches):
        item_ids, item_vectors = items.value if hasattr(items, "value") else items
        rank = item_vectors.shape[1]
        items_t = np.ascontiguousarray(np.asarray(item_vectors, dtype=np.float32).T)
        chunk = max(1, MAX_SCORE_FLOATS // max(1, len(item_ids)))
        for batch in batches:
            if batch.num_rows == 0 or len(item_ids) == 0:
                continue
            user_idx = batch.column("user_idx").to_numpy(zero_copy_only=False)
            user_vectors = vector_rows(batch.column("vector"), rank, "re-score check: user vectors")
            kth = batch.column("kth").to_numpy(zero_copy_only=False).astype(np.float32)
            for start in range(0, batch.num_rows, chunk):
                stop = start + chunk
                hit = user_vectors[start:stop] @ items_t >= kth[start:stop, None]
                rows, cols = np.nonzero(hit)
                if rows.size:
                    yield pa.RecordBatch.from_arrays(
                        [
                            pa.array(user_idx[start:stop][rows], type=pa.int32()),
                            pa.array(item_ids[cols], type=pa.int32()),
                        ],
                        names=["user_idx", "item_idx"],
                    )

    return run


# --- Spark wrapper ----------------------------------------------------------------------


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
            in several groups, with a different vector in each).

    Returns:
        DataFrame ``([carry,] [item_group_col,] user_idx, item_idx, score, rank)``, rank 1..k
        per user (and group), ordered by score descending then item index ascending.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    extra = [carry] if carry else []
    users = user_vectors.select(
        "user_idx", F.col(user_vector_col).alias("vector"), *extra
    ).withColumn("item_idx", F.lit(-1))
    stats = users.agg(F.count(F.lit(1)), F.max(F.size("vector"))).first()
    if not stats[0]:
        n_user_blocks, rank = 1, 0
    else:
        # Blocks of at most users_per_block users, counted (not the largest index: a refresh
        # scores a sparse subset), as many as a whole number of waves over the cores (13
        # blocks on 2 cores would leave one core idle for the last). Each block costs a task,
        # the item blocks' transfer and the kernel's set-up: at 10^7 interactions 16,384
        # users per block ran the scoring in 18 s, 4,096 in 23 s.
        from wals_roberta.jobs.runs.session import parallelism

        cores = parallelism(user_vectors.sparkSession)
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
        "user_idx array<int>, vectors array<float>, seen_offsets array<int>, seen_items array<int>"
    )
    if carry:
        user_schema += f", {carry} array<{column_type(user_vectors, carry)}>"
    user_blocks = users.repartition(n_user_blocks, "user_idx").mapInArrow(
        pack_user_rows(rank, carry), user_schema
    )
    groups = [item_group_col] if item_group_col else []
    items = item_vectors.select(
        "item_idx", F.col(item_vector_col).alias("vector"), *[F.col(g).cast("int") for g in groups]
    )
    items = items.withColumn("item_block", (F.col("item_idx") / items_per_block).cast("int"))
    n_item_blocks = (items.agg(F.max("item_block")).first()[0] or 0) + 1
    # Packed in the JVM (no Python worker): each block's items sorted by index, their
    # vectors concatenated in that order.
    item_blocks = (
        items.groupBy(*groups, "item_block")
        .agg(F.sort_array(F.collect_list(F.struct("item_idx", "vector"))).alias("items"))
        .select(
            *groups,
            F.col("items.item_idx").alias("item_idx"),
            F.flatten(F.col("items.vector")).alias("vectors"),
        )
    )
    # The item blocks are what is broadcast, never the user blocks.
    pairs = user_blocks.select(
        "user_idx", F.col("vectors").alias("user_vectors"), "seen_offsets", "seen_items", *extra
    ).crossJoin(
        F.broadcast(item_blocks.select(*groups, "item_idx", F.col("vectors").alias("item_vectors")))
    )
    out_schema = TOP_K_SCHEMA
    if item_group_col:
        out_schema = f"{item_group_col} int, " + out_schema
    if carry:
        out_schema = f"{carry} {column_type(user_vectors, carry)}, " + out_schema
    partial = pairs.mapInArrow(score_block_pairs(k, rank, carry, item_group_col), out_schema)
    if n_item_blocks == 1:
        return partial
    # Merge the partial lists of each item block: explicit order, ties by item index.
    order = Window.partitionBy("user_idx", *groups).orderBy(
        F.col("score").desc(), F.col("item_idx")
    )
    return (
        partial.withColumn("rank", F.row_number().over(order))
        .filter(F.col("rank") <= k)
        .select(*extra, *groups, "user_idx", "item_idx", "score", F.col("rank").cast("int"))
    )


def user_block_count(n_users: int, users_per_block: int, cores: int) -> int:
    """Blocks of at most ``users_per_block`` users, a multiple of ``cores`` (at least one
    per core)."""
    waves = max(1, -(-n_users // (users_per_block * cores)))
    return waves * cores


def column_type(df, name: str) -> str:
    """The Spark SQL type of column ``name``, as a DDL string."""
    return df.schema[name].dataType.simpleString()
