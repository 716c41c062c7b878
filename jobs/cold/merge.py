"""Projected (cold) and WALS scores on one scale in one list, and the choice of the merge.

A raw dot product rarely lets a cold item in: the text map shrinks toward the mean, so
projected scores sit far below WALS scores. ``standardize`` puts each source on the user's
own scale: for user u with vector x and a source with item-vector mean μ and covariance Σ
(over the source's items), the source's scores have mean ``x·μ`` and standard deviation
``√(xᵀΣx)``, exactly, without scoring every item. A cold score s becomes the warm score the
same number of warm standard deviations above the warm mean, plus ``offset`` warm standard
deviations: ``a·s + c`` with ``a = sd_w / sd_c`` and ``c = m_w − a·m_c + offset·sd_w``.
Warm scores stay as they are, so published scores keep the WALS scale. The top-k does the
arithmetic itself: cold items are scored with the user vector ``[a·x, c]`` against
``[v, 1]``. ``cold_slots`` reserves that many places of each list for the best cold items;
the rest go by score, and the list is ordered by score.

``auto`` chooses among raw and standardize with offsets and reserved slots on validation
(:mod:`cold.merge_choice`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from wals_roberta.jobs.data import columns as C

COLD = "is_cold"
# Fewer cold items than this give no usable covariance: the validation's moments are used.
MIN_SCALE_ITEMS = 20
WARM_SOURCE, COLD_SOURCE = "warm", "cold"


@dataclass(frozen=True)
class Merge:
    method: str = "raw"  # raw | standardize
    offset: float = 0.0
    cold_slots: int = 0

    def label(self) -> str:
        scale = "raw" if self.method == "raw" else f"standardize(offset={self.offset:+g})"
        return scale + (f" + {self.cold_slots} cold slots" if self.cold_slots else "")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(raw: dict) -> Merge:
        return Merge(str(raw["method"]), float(raw["offset"]), int(raw["cold_slots"]))

    @property
    def is_plain(self) -> bool:
        """Raw scores and no reserved slots: one top-k over every item gives the lists."""
        return self.method == "raw" and self.cold_slots == 0


@dataclass(frozen=True)
class Moments:
    """Mean and covariance of a set of item vectors."""

    n: int
    mean: np.ndarray
    cov: np.ndarray


# --- moments and per-user scales ----------------------------------------------------------


def _partial_moments(col: str):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        n, total, outer = 0, None, None
        for pdf in batches:
            if pdf.empty:
                continue
            v = np.stack(pdf[col].to_numpy()).astype(np.float64)
            n += len(v)
            total = v.sum(axis=0) if total is None else total + v.sum(axis=0)
            outer = v.T @ v if outer is None else outer + v.T @ v
        if n:
            yield pd.DataFrame({"n": [n], "total": [total], "outer": [outer.ravel()]})

    return run


def vector_moments(vectors: DataFrame, col: str) -> Moments | None:
    """Moments of ``vectors[col]``: sums per task on the executors, r + r² numbers per task
    reach the driver; None without rows."""
    parts = vectors.select(col).mapInPandas(
        _partial_moments(col), "n long, total array<double>, outer array<double>"
    )
    n, total, outer = 0, None, None
    for row in parts.collect():
        t, o = np.asarray(row["total"]), np.asarray(row["outer"])
        n += int(row["n"])
        total = t if total is None else total + t
        outer = o if outer is None else outer + o
    if not n:
        return None
    mean = total / n
    cov = outer.reshape(len(mean), len(mean)) / n - np.outer(mean, mean)
    return Moments(n, mean, (cov + cov.T) / 2)


def user_scales(x: np.ndarray, warm: Moments, cold: Moments) -> dict[str, np.ndarray]:
    """Per user (rows of ``x``): mean and standard deviation of their scores over each
    source, ``m_w, sd_w, m_c, sd_c``."""
    x = x.astype(np.float64)
    sd_w = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, warm.cov, x), 0.0))
    sd_c = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, cold.cov, x), 0.0))
    return {"m_w": x @ warm.mean, "sd_w": sd_w, "m_c": x @ cold.mean, "sd_c": sd_c}


def cold_affine(scales: dict[str, np.ndarray], offset: float) -> tuple[np.ndarray, np.ndarray]:
    """``(a, c)`` per user: a cold score s is listed as ``a·s + c`` (see the module doc); a
    user whose cold scores do not vary keeps ``a = 1``."""
    sd_c = scales["sd_c"]
    a = np.where(sd_c > 1e-12, scales["sd_w"] / np.where(sd_c > 1e-12, sd_c, 1.0), 1.0)
    c = scales["m_w"] - a * scales["m_c"] + offset * scales["sd_w"]
    return a, c


def standardized_cold_scores(
    x: np.ndarray, cold_vectors: np.ndarray, warm: Moments, cold: Moments, offset: float
) -> np.ndarray:
    """The listed scores of cold items (numpy reference of what the Spark path computes)."""
    a, c = cold_affine(user_scales(x, warm, cold), offset)
    return (x @ cold_vectors.T) * a[:, None] + c[:, None]


def _cold_user_rows(warm: Moments, cold: Moments, offset: float, col: str):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            if pdf.empty:
                continue
            x = np.stack(pdf[col].to_numpy()).astype(np.float64)
            a, c = cold_affine(user_scales(x, warm, cold), offset)
            scaled = np.hstack([x * a[:, None], c[:, None]]).astype(np.float32)
            out = pdf.drop(columns=[col])
            out[col] = list(scaled)
            yield out

    return run


def cold_user_vectors(
    users: DataFrame, warm: Moments, cold: Moments, offset: float, col: str = C.FACTORS
) -> DataFrame:
    """``users`` with ``col`` replaced by ``[a·x, c]`` (float32), for scoring cold items
    given as ``[v, 1]``."""
    schema = users.schema
    return users.mapInPandas(_cold_user_rows(warm, cold, offset, col), schema)


def scale_columns(
    users: DataFrame, warm: Moments, cold: Moments, col: str = C.FACTORS
) -> DataFrame:
    """``(user_idx, m_w, sd_w, m_c, sd_c)`` per user of ``users(user_idx, col)``."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            if pdf.empty:
                continue
            x = np.stack(pdf[col].to_numpy())
            yield pd.DataFrame({C.USER_IDX: pdf[C.USER_IDX], **user_scales(x, warm, cold)})

    return users.select(C.USER_IDX, col).mapInPandas(
        run, f"{C.USER_IDX} int, m_w double, sd_w double, m_c double, sd_c double"
    )


def with_bias_column(vectors: DataFrame, col: str) -> DataFrame:
    """``vectors`` with ``col`` extended by a trailing 1.0 (the cold items' ``[v, 1]``)."""
    return vectors.withColumn(col, F.concat(F.col(col), F.array(F.lit(1.0).cast("float"))))


# --- the moments as a table ---------------------------------------------------------------


def moments_frame(spark: SparkSession, by_source: dict[str, Moments]) -> DataFrame:
    rows = [
        (name, m.n, [float(v) for v in m.mean], [float(v) for v in m.cov.ravel()])
        for name, m in by_source.items()
    ]
    schema = "source string, n long, mean array<double>, cov array<double>"
    return spark.createDataFrame(rows, schema).coalesce(1)


def read_moments(df: DataFrame) -> dict[str, Moments]:
    out = {}
    for row in df.collect():
        mean = np.asarray(row["mean"], dtype=np.float64)
        cov = np.asarray(row["cov"], dtype=np.float64).reshape(len(mean), len(mean))
        out[row["source"]] = Moments(int(row["n"]), mean, cov)
    return out


# --- one list from the two sources --------------------------------------------------------


def select_merged(
    rows: DataFrame, k: int, slots: int | Column, keys: tuple[str, ...] = ()
) -> DataFrame:
    """Each user's list of at most ``k`` from ``rows(*keys, user_idx, item_idx, score,
    is_cold)`` (every candidate of both sources): the best ``slots`` cold items are in it
    (all of them where fewer), the other places go to the best remaining candidates of
    either source; ranked 1.. by score descending, then item index. One shuffle (by user)."""
    by_user = [*keys, C.USER_IDX]
    order = [F.col(C.SCORE).desc(), F.col(C.ITEM_IDX)]
    rows = rows.repartition(*by_user)
    in_source = Window.partitionBy(*by_user, COLD).orderBy(*order)
    rows = rows.withColumn("_reserved", F.col(COLD) & (F.row_number().over(in_source) <= slots))
    n_reserved = F.sum(F.col("_reserved").cast("int")).over(Window.partitionBy(*by_user))
    others = Window.partitionBy(*by_user, "_reserved").orderBy(*order)
    rows = rows.withColumn("_n_reserved", n_reserved).withColumn(
        "_place", F.row_number().over(others)
    )
    kept = rows.filter(
        F.col("_reserved") | (F.col("_place") <= F.lit(k) - F.col("_n_reserved"))
    ).drop("_n_reserved", "_place")
    final = Window.partitionBy(*by_user).orderBy(*order)
    return kept.withColumn(C.RANK, F.row_number().over(final).cast("int")).drop("_reserved")


def merged_rows(warm_lists: DataFrame, cold_lists: DataFrame) -> DataFrame:
    """The two sources' lists as one set of candidates with ``is_cold``."""
    return (
        warm_lists.drop(C.RANK)
        .withColumn(COLD, F.lit(False))
        .unionByName(
            cold_lists.drop(C.RANK).withColumn(COLD, F.lit(True)), allowMissingColumns=True
        )
    )


def configured_merge(merge: str, offset: float, cold_slots: int | None) -> Merge:
    """The merge a fixed ``recommend.merge`` names (auto without a choice: raw)."""
    method = "standardize" if merge == "standardize" else "raw"
    return Merge(method, offset if method == "standardize" else 0.0, cold_slots or 0)


def merged_top_k(
    users: DataFrame,
    item_vectors: DataFrame,
    seen: DataFrame | None,
    *,
    k: int,
    merge: Merge,
    moments: dict[str, Moments] | None,
    top_k,
) -> DataFrame:
    """Lists over warm and cold items (``item_vectors(item_idx, vector, source)``, cold:
    ``projected``) merged by ``merge``: ``top_k(users, items, seen, k)`` is called once per
    source (the cold side scored with ``[a·x, c]`` against ``[v, 1]`` when standardized),
    then :func:`select_merged`. Returns the top-k's columns plus ``is_cold``."""
    is_cold = F.col(C.SOURCE) == "projected"
    warm_items, cold_items = item_vectors.filter(~is_cold), item_vectors.filter(is_cold)
    warm = top_k(users, warm_items, seen, k)
    cold_users = users
    if merge.method == "standardize":
        cold_users = cold_user_vectors(
            users, moments[WARM_SOURCE], moments[COLD_SOURCE], merge.offset
        )
        cold_items = with_bias_column(cold_items, C.VECTOR)
    cold_seen = None
    if seen is not None:
        cold_seen = seen.join(F.broadcast(cold_items.select(C.ITEM_IDX)), C.ITEM_IDX, "left_semi")
    cold = top_k(cold_users, cold_items, cold_seen, k)
    return select_merged(merged_rows(warm, cold), k, merge.cold_slots)
