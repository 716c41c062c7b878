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
    """YᵀY, summed per partition on the executors; one rank × rank matrix per partition
    reaches the driver."""

    def partial(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total = np.zeros((rank, rank))
        for pdf in batches:
            if len(pdf):
                y = np.stack(pdf[vector_col].to_numpy()).astype(np.float64)
                total += y.T @ y
        yield pd.DataFrame({"gram": [total.ravel()]})

    gram = np.zeros((rank, rank))
    parts = item_vectors.select(vector_col).mapInPandas(partial, "gram array<double>")
    for row in parts.toLocalIterator():
        gram += np.asarray(row["gram"]).reshape(rank, rank)
    return gram


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
    """
    if method not in METHODS:
        raise ValueError(f"fold-in method must be one of {METHODS}, got {method!r}")
    gram = (
        gram_matrix(gram_items if gram_items is not None else item_vectors, vector_col, rank)
        if method == "solve"
        else None
    )
    per_user = (
        history.select(key, other, C.RATING)
        .join(item_vectors.select(other, F.col(vector_col).alias("y")), other)
        .groupBy(key)
        # Sorted by item so the float sums do not depend on the shuffle order.
        .agg(F.sort_array(F.collect_list(F.struct(other, C.RATING, "y"))).alias("rows"))
        .select(key, F.col("rows")[C.RATING].alias("r"), F.col("rows.y").alias("y"))
    )

    def solve(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            out = []
            for ratings, vectors in zip(pdf["r"], pdf["y"], strict=True):
                y_u = np.stack(vectors).astype(np.float64)
                rating = np.asarray(ratings, dtype=np.float64)
                if gram is None:
                    x = weighted_mean(y_u, rating, alpha=alpha)
                else:
                    x = solve_user(gram, y_u, rating, reg=reg, alpha=alpha)
                out.append(x.astype(np.float32))
            yield pd.DataFrame({key: pdf[key].to_numpy(), C.FACTORS: out})

    return per_user.mapInPandas(solve, f"{key} int, {C.FACTORS} array<float>")
