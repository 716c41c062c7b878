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

from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.wals_cg import (
    FACTOR_BLOCK_SCHEMA,
    block_batch,
    explode_factor_blocks,
    half_step,
    rating_blocks,
    routing_keys,
)
from wals_roberta.jobs.runs.session import in_canonical_order, parallelism
from wals_roberta.udfs.topk_arrow import vector_rows

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


def gram_matrix(
    item_vectors: DataFrame, vector_col: str, rank: int, *, key: str = C.ITEM_IDX
) -> np.ndarray:
    """YᵀY, summed per task on the executors (one task per core); one rank × rank matrix per
    task reaches the driver, in one Spark job. The rows are hashed and sorted by index first,
    so the sums run in the same order in every run, whatever order the files are read in."""

    def partial(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total = np.zeros((rank, rank))
        for pdf in batches:
            if len(pdf):
                y = np.stack(pdf[vector_col].to_numpy()).astype(np.float64)
                total += y.T @ y
        yield pd.DataFrame({"gram": [total.ravel()]})

    gram = np.zeros((rank, rank))
    tasks = parallelism(item_vectors.sparkSession)
    parts = (
        in_canonical_order(item_vectors.select(key, vector_col), tasks, key)
        .select(vector_col)
        .mapInPandas(partial, "gram array<double>")
    )
    for row in parts.collect():
        gram += np.asarray(row["gram"]).reshape(rank, rank)
    return gram


# Rows are solved in groups of similar length (up to a quarter longer than the shortest),
# padded to the longest: one batched product and one batched LAPACK solve per group
# instead of a dozen numpy calls per row. A group holds at most GROUP_ROWS rows and
# GROUP_ENTRIES padded entries (float64 vectors of rank 64: about 64 MB).
GROUP_ROWS = 64
GROUP_ENTRIES = 1 << 17


def solve_rows(
    offsets: np.ndarray,
    others: np.ndarray,
    ratings: np.ndarray,
    fixed: np.ndarray,
    present: np.ndarray,
    gram: np.ndarray | None,
    *,
    reg: float,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, solved)`` for the CSR rows of one block: row n's entries are
    ``others[offsets[n]:offsets[n+1]]`` with ``ratings``; ``fixed[j]`` is the vector of
    index j where ``present[j]``. Entries without a vector are ignored, and a row left
    without entries is not solved. Each row gets the closed form of :func:`solve_user` (or
    :func:`weighted_mean` when ``gram`` is None), computed for groups of rows at once."""
    n_rows, rank = len(offsets) - 1, fixed.shape[1]
    out = np.zeros((n_rows, rank), dtype=np.float32)
    keep = present[others]
    kept_before = np.r_[0, np.cumsum(keep)]
    starts = kept_before[offsets[:-1]]  # each row's first entry among the kept ones
    lengths = kept_before[offsets[1:]] - starts
    cols, values = others[keep], np.asarray(ratings)[keep].astype(np.float64)
    solved = lengths > 0
    order = np.flatnonzero(solved)
    order = order[np.argsort(lengths[order], kind="stable")]  # similar lengths together
    sorted_lengths = lengths[order]
    diagonal = np.arange(rank)
    at = 0
    while at < len(order):
        shortest = sorted_lengths[at]
        end = np.searchsorted(sorted_lengths, shortest + shortest // 4 + 8, side="right")
        end = min(end, at + GROUP_ROWS)
        end = max(at + 1, min(end, at + GROUP_ENTRIES // sorted_lengths[end - 1]))
        rows, width = order[at:end], int(sorted_lengths[end - 1])
        at = end
        pad = np.arange(width) >= lengths[rows][:, None]  # (rows, width): padding
        pos = np.where(pad, 0, starts[rows][:, None] + np.arange(width))
        y = fixed[cols[pos]].astype(np.float64)
        r = np.where(pad, 0.0, values[pos])
        c1 = alpha * np.abs(r)
        if gram is None:
            c = np.where(pad, 0.0, 1.0 + c1)
            out[rows] = np.einsum("glr,gl->gr", y, c) / c.sum(axis=1, keepdims=True)
            continue
        positive = r > 0
        a = gram + np.matmul(y.transpose(0, 2, 1) * c1[:, None, :], y)
        a[:, diagonal, diagonal] += reg * positive.sum(axis=1, keepdims=True)
        b = np.einsum("glr,gl->gr", y, np.where(positive, 1.0 + c1, 0.0))
        out[rows] = np.linalg.solve(a, b[..., None])[..., 0]
    return out, solved


def closed_form_solver(gram: np.ndarray | None, *, reg: float, alpha: float):
    """A half-step solver (see :func:`model.wals_cg.solve_partition`) that folds in exactly:
    :func:`solve_rows` over the block; the block's ratings are packed unscaled."""

    def solve(offsets, others, conf, fixed, present, start):
        return solve_rows(offsets, others, conf, fixed, present, gram, reg=reg, alpha=alpha)

    return solve


def vector_blocks(idx_col: str, vector_col: str, rank: int):
    """mapInArrow body: ``(idx, vector)`` rows → one factor block per Arrow batch (flat
    float32 vectors, no per-row Python)."""

    def run(batches):
        for batch in batches:
            if batch.num_rows == 0:
                continue
            vectors = vector_rows(batch.column(vector_col), rank, f"fold-in: {vector_col} vectors")
            yield block_batch(
                0,
                keys=batch.column(idx_col).to_numpy(zero_copy_only=False).astype(np.int32),
                vectors=vectors,
            )

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

    Laid out like a training half-step (:mod:`model.wals_cg`): the history is packed into
    one rating block per core (each user's entries sorted by item, so the float sums do not
    depend on the shuffle), every block receives one copy of the item vectors, and the
    solves run per block on the executors. A vector travels once per block, not once per
    interaction as a join of history and vectors would ship it.
    """
    if method not in METHODS:
        raise ValueError(f"fold-in method must be one of {METHODS}, got {method!r}")
    gram = (
        gram_matrix(
            gram_items if gram_items is not None else item_vectors, vector_col, rank, key=other
        )
        if method == "solve"
        else None
    )
    spark = history.sparkSession
    n_blocks = parallelism(spark)
    ratings = rating_blocks(
        history.select(
            F.col(key).cast("int").alias(key), F.col(other).cast("int").alias(other), C.RATING
        ),
        key=key,
        other=other,
        n_blocks=n_blocks,
        alpha=1.0,  # ratings as they are: the solver weighs them by alpha itself
        persist=False,
    )
    fixed = item_vectors.select(F.col(other).cast("int").alias(other), vector_col).mapInArrow(
        vector_blocks(other, vector_col, rank), FACTOR_BLOCK_SCHEMA
    )
    blocks = half_step(
        ratings,
        None,
        fixed,
        n_blocks=n_blocks,
        n_fixed=None,
        rank=rank,
        solve=closed_form_solver(gram, reg=reg, alpha=alpha),
        routes=routing_keys(spark, n_blocks),
    )
    return blocks.mapInArrow(explode_factor_blocks(key), f"{key} int, {C.FACTORS} array<float>")
