"""Fold-in: vectors for users who are not in the trained model but have interactions.

With the item vectors Y fixed, a user's WALS vector has a closed form, the same user step
MLlib's implicit ALS takes in every iteration::

    x_u = (YᵀY + Y_uᵀ (C_u − I) Y_u + λ_u I)⁻¹ Y_uᵀ C_u p_u,   c_ui = 1 + alpha · r_ui

where Y_u holds the vectors of the user's items, p_u is 1 for each of them, and
λ_u = reg · n_u (MLlib scales the regularization by the user's number of positive
interactions, ALS-WR style), so a trained user folded in against the final item factors
gets back the factors training gave them. YᵀY (rank × rank) is summed over the item vectors
on the executors once and shipped to every task; the solves run per user on the executors.

``method="mean"`` is the cheaper alternative: the confidence-weighted mean of the vectors of
the user's items.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import columns as C

METHODS = ("solve", "mean")


def solve_user(
    gram: np.ndarray, y_u: np.ndarray, rating: np.ndarray, *, reg: float, alpha: float
) -> np.ndarray:
    """One user's closed-form WALS vector; ``y_u`` holds one item vector per row.

    Only positive ratings count as preferences (as in MLlib); a non-positive one still adds
    its confidence ``alpha · |r|`` to the weighting of that item.
    """
    rating = rating.astype(np.float64)
    y_u = y_u.astype(np.float64)
    c1 = alpha * np.abs(rating)
    positive = rating > 0
    a = gram + (y_u.T * c1) @ y_u
    a[np.diag_indices_from(a)] += reg * int(positive.sum())
    b = y_u[positive].T @ (1.0 + c1[positive])
    return np.linalg.solve(a, b)


def weighted_mean(y_u: np.ndarray, rating: np.ndarray, *, alpha: float) -> np.ndarray:
    """Σ c_ui y_i / Σ c_ui over the user's items."""
    c = 1.0 + alpha * np.abs(rating.astype(np.float64))
    return (y_u.astype(np.float64).T @ c) / c.sum()


def gram_matrix(item_vectors: DataFrame, vector_col: str, rank: int) -> np.ndarray:
    """YᵀY, summed per task on the executors (one task per core); one rank × rank matrix per
    task reaches the driver, in one Spark job."""

    def partial(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total = np.zeros((rank, rank))
        for pdf in batches:
            if len(pdf):
                y = np.stack(pdf[vector_col].to_numpy()).astype(np.float64)
                total += y.T @ y
        yield pd.DataFrame({"gram": [total.ravel()]})

    gram = np.zeros((rank, rank))
    tasks = item_vectors.sparkSession.sparkContext.defaultParallelism
    parts = (
        item_vectors.select(vector_col).coalesce(tasks).mapInPandas(partial, "gram array<double>")
    )
    for row in parts.collect():
        gram += np.asarray(row["gram"]).reshape(rank, rank)
    return gram


def solve_groups(
    keys: np.ndarray,
    ratings: np.ndarray,
    y: np.ndarray,
    gram: np.ndarray | None,
    *,
    reg: float,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, vectors)``: one closed-form solve (or weighted mean when ``gram`` is None)
    per run of equal ``keys``; rows of a key must be contiguous (sorted input)."""
    if len(keys) == 0:
        return keys[:0], np.zeros((0, y.shape[1]), dtype=np.float32)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    out = np.empty((len(starts), y.shape[1]), dtype=np.float32)
    for n, (a, b) in enumerate(zip(starts, ends, strict=True)):
        if gram is None:
            out[n] = weighted_mean(y[a:b], ratings[a:b], alpha=alpha)
        else:
            out[n] = solve_user(gram, y[a:b], ratings[a:b], reg=reg, alpha=alpha)
    return keys[starts], out


def _solve_batches(gram: np.ndarray | None, *, key: str, rank: int, reg: float, alpha: float):
    """The executor side: Arrow batches of ``(key, rating, y)`` sorted by key within the
    partition, vectors as flat float buffers (no per-row Python); a key whose rows run on
    into the next batch is carried over."""
    import pyarrow as pa

    def emit(keys: np.ndarray, vectors: np.ndarray) -> pa.RecordBatch:
        offsets = pa.array(np.arange(0, vectors.size + 1, rank, dtype=np.int32))
        values = pa.array(vectors.ravel(), type=pa.float32())
        return pa.RecordBatch.from_arrays(
            [pa.array(keys, type=pa.int32()), pa.ListArray.from_arrays(offsets, values)],
            names=[key, C.FACTORS],
        )

    def run(batches):
        carry_k = np.zeros(0, dtype=np.int32)
        carry_r = np.zeros(0, dtype=np.float64)
        carry_y = np.zeros((0, rank), dtype=np.float64)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            flat = batch.column("y").flatten().to_numpy(zero_copy_only=False)
            if flat.size != batch.num_rows * rank:
                raise ValueError(f"fold-in: vectors are not all of length {rank}")
            k = np.concatenate([carry_k, batch.column(key).to_numpy(zero_copy_only=False)])
            r = np.concatenate([carry_r, batch.column(C.RATING).to_numpy(zero_copy_only=False)])
            y = np.concatenate([carry_y, flat.reshape(-1, rank).astype(np.float64)])
            last = int(np.flatnonzero(np.r_[True, k[1:] != k[:-1]])[-1])
            if last:
                yield emit(*solve_groups(k[:last], r[:last], y[:last], gram, reg=reg, alpha=alpha))
            carry_k, carry_r, carry_y = k[last:], r[last:], y[last:]
        if len(carry_k):
            yield emit(*solve_groups(carry_k, carry_r, carry_y, gram, reg=reg, alpha=alpha))

    return run


def fold_in_users(
    history: DataFrame,
    item_vectors: DataFrame,
    *,
    gram_items: DataFrame | None = None,
    vector_col: str = C.FACTORS,
    rank: int,
    reg: float,
    alpha: float,
    method: str = "solve",
    key: str = C.USER_IDX,
    other: str = C.ITEM_IDX,
) -> DataFrame:
    """``(user_idx, factors)`` for every user of ``history(user_idx, item_idx, rating)``.

    ``item_vectors(item_idx, <vector_col>)`` gives Y_u (interactions with items that have no
    vector are ignored); ``gram_items`` (default: all of ``item_vectors``) are the items
    whose vectors make up YᵀY, i.e. the items the model was trained on. With
    ``key=item_idx, other=user_idx`` (and user vectors in place of item vectors) it is the
    item step instead: items folded in against fixed user factors.

    The joined rows are hash-partitioned by user and sorted by (user, item) within each
    partition, so every user's rows are contiguous and in a fixed order (the float sums do
    not depend on the shuffle); the solves read them as Arrow buffers.
    """
    if method not in METHODS:
        raise ValueError(f"fold-in method must be one of {METHODS}, got {method!r}")
    gram = (
        gram_matrix(gram_items if gram_items is not None else item_vectors, vector_col, rank)
        if method == "solve"
        else None
    )
    rows = (
        history.select(key, other, F.col(C.RATING).cast("double").alias(C.RATING))
        .join(item_vectors.select(other, F.col(vector_col).alias("y")), other)
        .repartition(key)
        .sortWithinPartitions(key, other)
        .select(F.col(key).cast("int").alias(key), C.RATING, "y")
    )
    solve = _solve_batches(gram, key=key, rank=rank, reg=reg, alpha=alpha)
    return rows.mapInArrow(solve, f"{key} int, {C.FACTORS} array<float>")
