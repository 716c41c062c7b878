"""WALS by conjugate gradient on executors: ``wals.solver: cg``.

The same objective as MLlib's implicit ALS (Hu, Koren & Volinsky with MLlib's λ·n_u
scaling), so the factors are interchangeable with MLlib's: for each user (and in turn each
item) with the other side's vectors Y fixed::

    (YᵀY + Y_uᵀ (C_u − I) Y_u + λ n_u I) x_u = Y_uᵀ C_u p_u,   c_ui = 1 + alpha · |r_ui|

MLlib forms that rank × rank matrix for every user (one rank-1 update per interaction, then
a Cholesky solve); here it is never formed. A few conjugate-gradient steps, warm-started
from the previous iteration's vector (as the ``implicit`` library does), need only products
with it: ``P YᵀY`` (dense) and ``Y_uᵀ (C_u − I) Y_u p`` as one sampled dense-dense product
and one sparse-dense product over the block's interactions (torch CSR kernels).

Layout: the interactions are packed once into rating blocks, one row per block of users
(and one per block of items): sorted keys, CSR offsets, the other side's indexes and the
signed confidence ``alpha · r``. Each half-step shuffles every block of the fixed side's
vectors to every block being solved (no factor passes through the driver) and solves the
blocks on executors.
"""

from __future__ import annotations

import warnings

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.data import columns as C

RATING_BLOCK_SCHEMA = (
    "block int, keys array<int>, offsets array<int>, others array<int>, conf array<float>"
)
FACTOR_BLOCK_SCHEMA = "block int, keys array<int>, vectors array<float>"
RATINGS, PREVIOUS, FIXED = 0, 1, 2


# --- executor logic (plain numpy / torch) -------------------------------------------------


def initial_vectors(keys: np.ndarray, rank: int, seed: int) -> np.ndarray:
    """Deterministic start vectors, one per key whatever the blocking: N(0, 1) rows scaled to
    norm 0.1 (small, as CG-based WALS starts)."""
    out = np.empty((len(keys), rank), dtype=np.float32)
    for n, key in enumerate(keys):
        out[n] = np.random.default_rng([seed, int(key)]).standard_normal(rank)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return 0.1 * out / np.maximum(norms, 1e-12)


def solve_block(
    offsets: np.ndarray,
    others: np.ndarray,
    conf: np.ndarray,
    fixed: np.ndarray,
    start: np.ndarray,
    *,
    reg: float,
    steps: int,
) -> np.ndarray:
    """Conjugate-gradient WALS solves for one block.

    Args:
        offsets, others, conf: CSR rows of the block (row n's entries are
            ``others[offsets[n]:offsets[n+1]]`` with signed confidence ``conf = alpha · r``).
        fixed: (n_other, rank) vectors of the fixed side, indexed by ``others``.
        start: (n_rows, rank) start vectors (the previous iteration's).
        reg: λ; row n is regularised by λ times its number of positive entries.
        steps: conjugate-gradient steps per row.

    Returns:
        (n_rows, rank) float32 vectors.
    """
    import torch

    n_rows, rank = start.shape
    if n_rows == 0:
        return start.astype(np.float32)
    y = torch.from_numpy(np.ascontiguousarray(fixed, dtype=np.float32))
    crow = torch.from_numpy(np.asarray(offsets, dtype=np.int64))
    col = torch.from_numpy(np.asarray(others, dtype=np.int64))
    signed = torch.from_numpy(np.asarray(conf, dtype=np.float32))
    c1 = signed.abs()
    positive = (signed > 0).to(torch.float32)

    def csr(values):
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                crow, col, values, size=(n_rows, y.shape[0]), check_invariants=False
            )

    counts = torch.diff(crow)
    n_pos = torch.segment_reduce(positive, "sum", lengths=counts) if len(positive) else None
    lam = reg * (n_pos if n_pos is not None else torch.zeros(n_rows))
    gram = y.T @ y
    pattern = csr(torch.ones_like(c1))
    b = csr(positive * (1.0 + c1)) @ y

    def product(p):
        dots = torch.sparse.sampled_addmm(pattern, p, y.T, beta=0.0).values()
        return p @ gram + lam[:, None] * p + csr(dots * c1) @ y

    x = torch.from_numpy(np.array(start, dtype=np.float32))
    r = b - product(x)
    p = r.clone()
    rs = (r * r).sum(1)
    for _ in range(steps):
        ap = product(p)
        denom = (p * ap).sum(1)
        alpha = torch.where(denom > 0, rs / denom.clamp_min(1e-30), torch.zeros_like(rs))
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = (r * r).sum(1)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta[:, None] * p
        rs = rs_new
    return x.numpy()


def pack_ratings(key: str, other: str, alpha: float):
    """mapInArrow body: one partition's ``(key, other, rating)`` rows → one rating block
    (block = partition id), keys ascending, each key's entries by ``other``."""
    import pyarrow as pa
    from pyspark import TaskContext

    def run(batches):
        batches = [b for b in batches if b.num_rows]
        if not batches:  # an empty partition
            return
        table = pa.Table.from_batches(batches)
        block = TaskContext.get().partitionId()
        k = table.column(key).to_numpy()
        o = table.column(other).to_numpy()
        v = (alpha * table.column(C.RATING).to_numpy()).astype(np.float32)
        order = np.lexsort((o, k))
        k, o, v = k[order], o[order], v[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        yield block_batch(
            block,
            keys=k[starts].astype(np.int32),
            offsets=np.r_[starts, len(k)].astype(np.int32),
            others=o.astype(np.int32),
            conf=v,
        )

    return run


def block_batch(block: int, **arrays: np.ndarray):
    import pyarrow as pa

    from wals_roberta.udfs.topk_arrow import one_row_lists

    cols = [pa.array([block], type=pa.int32()), *one_row_lists(**arrays)]
    return pa.RecordBatch.from_arrays(cols, names=["block", *arrays])


def initial_factor_blocks(rank: int, seed: int):
    """mapInArrow body: rating blocks → factor blocks of start vectors."""

    def run(batches):
        for batch in batches:
            for i in range(batch.num_rows):
                keys = batch.column("keys")[i].values.to_numpy()
                yield block_batch(
                    batch.column("block")[i].as_py(),
                    keys=keys.astype(np.int32),
                    vectors=initial_vectors(keys, rank, seed),
                )

    return run


def cg_solver(reg: float, steps: int):
    """The half-step solver of training: ``steps`` conjugate-gradient steps per row, warm
    started from the previous vectors (:func:`solve_block`); every row is solved."""

    def solve(offsets, others, conf, fixed, present, start):
        x = solve_block(offsets, others, conf, fixed, start, reg=reg, steps=steps)
        return x, np.ones(len(x), dtype=bool)

    return solve


def cap_torch_threads() -> None:
    """Torch threads follow the task's cores (spark.task.cpus), not the machine's."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    cpus = ctx.cpus() if ctx is not None else 1
    if torch.get_num_threads() != cpus:
        torch.set_num_threads(max(1, cpus))


def solve_partition(n_fixed: int | None, rank: int, solve):
    """mapInArrow body of a half-step: rows ``(target, kind, keys, offsets, others, conf,
    vectors)`` for one or more target blocks (a rating block, its previous vectors, every
    block of the fixed side) → one factor block per target.

    ``solve(offsets, others, conf, fixed, present, start)`` returns ``(vectors, solved)``:
    a vector per row of the rating block and which rows were solved (only those are
    emitted); ``present`` marks the fixed-side indexes that arrived with a vector.
    ``n_fixed`` of None sizes the fixed table from the largest index the partition sees."""
    import pyarrow as pa

    from wals_roberta.udfs.topk_arrow import list_values

    def run(batches):
        cap_torch_threads()
        batches = [b for b in batches if b.num_rows]
        if not batches:  # an empty partition
            return
        table = pa.Table.from_batches(batches)
        targets = table.column("target").to_numpy()
        kinds = table.column("kind").to_numpy()

        def values(name, row):
            return list_values(table.column(name), int(row))

        for target in np.unique(targets):
            rows = np.flatnonzero(targets == target)
            rating_rows = rows[kinds[rows] == RATINGS]
            if len(rating_rows) == 0:
                continue
            ratings = int(rating_rows[0])
            keys = values("keys", ratings)
            others = values("others", ratings)
            fixed_rows = rows[kinds[rows] == FIXED]
            size = n_fixed
            if size is None:
                tops = [others.max(initial=-1)]
                tops += [values("keys", row).max(initial=-1) for row in fixed_rows]
                size = int(max(tops)) + 1
            fixed = np.zeros((size, rank), dtype=np.float32)
            present = np.zeros(size, dtype=bool)
            for row in fixed_rows:
                fixed_keys = values("keys", row)
                fixed[fixed_keys] = values("vectors", row).reshape(-1, rank)
                present[fixed_keys] = True
            previous = rows[kinds[rows] == PREVIOUS]
            start = (
                values("vectors", previous[0]).reshape(-1, rank)
                if len(previous)
                else np.zeros((len(keys), rank), dtype=np.float32)
            )
            x, solved = solve(
                values("offsets", ratings),
                others,
                values("conf", ratings),
                fixed,
                present,
                start,
            )
            yield block_batch(int(target), keys=keys[solved].astype(np.int32), vectors=x[solved])

    return run


def explode_factor_blocks(idx_col: str):
    """mapInArrow body: factor blocks → ``(idx_col, factors)`` rows."""
    import pyarrow as pa

    def run(batches):
        for batch in batches:
            for i in range(batch.num_rows):
                keys = batch.column("keys")[i].values
                vectors = batch.column("vectors")[i].values
                rank = len(vectors) // max(len(keys), 1)
                offsets = pa.array(np.arange(0, len(vectors) + 1, rank, dtype=np.int32))
                yield pa.RecordBatch.from_arrays(
                    [keys, pa.ListArray.from_arrays(offsets, vectors)],
                    names=[idx_col, C.FACTORS],
                )

    return run


# --- Spark side ---------------------------------------------------------------------------


def rating_blocks(
    ratings: DataFrame, *, key: str, other: str, n_blocks: int, alpha: float, persist: bool = True
):
    """One row per block of ``key`` values; persisted unless ``persist`` is False (training
    reads it in every half-step, a fold-in once)."""
    blocks = ratings.select(key, other, C.RATING).repartition(n_blocks, key)
    packed = blocks.mapInArrow(pack_ratings(key, other, alpha), RATING_BLOCK_SCHEMA)
    return packed.persist(StorageLevel.MEMORY_AND_DISK) if persist else packed


def half_step(
    ratings: DataFrame,
    previous: DataFrame | None,
    fixed: DataFrame,
    *,
    n_blocks: int,
    n_fixed: int | None,
    rank: int,
    solve,
    routes: list[int],
) -> DataFrame:
    """New factor blocks for the side of ``ratings`` with ``fixed``'s vectors held fixed,
    solved by ``solve`` (see :func:`solve_partition`). Every block of ``fixed`` is copied to
    every target block by a shuffle: each fixed vector travels once per block, not once
    per interaction."""
    empty_int, empty_float = F.array().cast("array<int>"), F.array().cast("array<float>")

    def shaped(df: DataFrame, kind: int, target: str) -> DataFrame:
        cols = {
            "target": F.col(target).cast("int"),
            "kind": F.lit(kind),
            "keys": F.col("keys"),
            "offsets": F.col("offsets") if "offsets" in df.columns else empty_int,
            "others": F.col("others") if "others" in df.columns else empty_int,
            "conf": F.col("conf") if "conf" in df.columns else empty_float,
            "vectors": F.col("vectors") if "vectors" in df.columns else empty_float,
        }
        return df.select(*[c.alias(n) for n, c in cols.items()])

    copies = fixed.withColumn("target_block", F.explode(F.sequence(F.lit(0), F.lit(n_blocks - 1))))
    parts = [shaped(ratings, RATINGS, "block"), shaped(copies, FIXED, "target_block")]
    if previous is not None:
        parts.append(shaped(previous, PREVIOUS, "block"))
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)
    # Hashing the block ids 0..n-1 into n partitions would put some blocks together and
    # leave cores idle: each block is routed by a key that hashes to its own partition.
    route = F.element_at(F.array(*[F.lit(r) for r in routes]), F.col("target") + 1)
    return (
        rows.withColumn("route", route)
        .repartition(n_blocks, "route")
        .drop("route")
        .mapInArrow(solve_partition(n_fixed, rank, solve), FACTOR_BLOCK_SCHEMA)
    )


def routing_keys(spark: SparkSession, n: int) -> list[int]:
    """For each partition p < n, an int whose Spark hash partitioning lands in p (the same
    Murmur3 hash that ``repartition(n, col)`` uses)."""
    candidates = spark.range(64 * n).select(F.col("id").cast("int").alias("v"))
    found = dict(
        candidates.groupBy(F.pmod(F.hash("v"), F.lit(n)).alias("p")).agg(F.min("v")).collect()
    )
    return [int(found[p]) for p in range(n)]


def fit_wals_cg(
    train: DataFrame,
    *,
    rank: int,
    reg: float,
    alpha: float,
    iterations: int,
    steps: int,
    user_blocks: int,
    item_blocks: int,
    seed: int,
    checkpoint_interval: int,
) -> tuple[DataFrame, DataFrame]:
    """``(user_factors, item_factors)`` as ``(user_idx|item_idx, factors)`` DataFrames from
    ``train(user_idx, item_idx, rating)``; users are solved first in each iteration, from
    seeded item start vectors. A checkpoint directory must be set on the SparkContext."""
    sizes = train.agg(F.max(C.USER_IDX), F.max(C.ITEM_IDX)).first()
    n_users, n_items = int(sizes[0]) + 1, int(sizes[1]) + 1
    by_user = rating_blocks(
        train, key=C.USER_IDX, other=C.ITEM_IDX, n_blocks=user_blocks, alpha=alpha
    )
    by_item = rating_blocks(
        train, key=C.ITEM_IDX, other=C.USER_IDX, n_blocks=item_blocks, alpha=alpha
    )
    items = _materialise(
        by_item.mapInArrow(initial_factor_blocks(rank, seed), FACTOR_BLOCK_SCHEMA), None
    )
    users = None
    spark = train.sparkSession
    settings = {"rank": rank, "solve": cg_solver(reg, steps)}
    user_side = {
        "n_blocks": user_blocks,
        "n_fixed": n_items,
        "routes": routing_keys(spark, user_blocks),
    }
    item_side = {
        "n_blocks": item_blocks,
        "n_fixed": n_users,
        "routes": routing_keys(spark, item_blocks),
    }
    for it in range(iterations):
        reliable = checkpoint_interval > 0 and (it + 1) % checkpoint_interval == 0
        users = _materialise(
            half_step(by_user, users, items, **user_side, **settings), users, reliable
        )
        items = _materialise(
            half_step(by_item, items, users, **item_side, **settings), items, reliable
        )
    by_user.unpersist()
    by_item.unpersist()
    user_factors = users.mapInArrow(
        explode_factor_blocks(C.USER_IDX), f"{C.USER_IDX} int, {C.FACTORS} array<float>"
    )
    item_factors = items.mapInArrow(
        explode_factor_blocks(C.ITEM_IDX), f"{C.ITEM_IDX} int, {C.FACTORS} array<float>"
    )
    return user_factors, item_factors


def _materialise(df: DataFrame, old: DataFrame | None, reliable: bool = False) -> DataFrame:
    """Computed once and kept on the executors (the next half-step and the final tables read
    it), its plan cut so that it does not grow with the iterations; every
    ``checkpoint_interval`` iterations written to the checkpoint directory instead, so a
    lost executor costs at most that many iterations of lineage. The previous version is
    released."""
    if reliable:
        df = df.checkpoint(eager=True)
    else:
        df = df.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
    if old is not None:
        old.unpersist()
    return df
