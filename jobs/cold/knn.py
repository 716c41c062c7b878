"""kNN map from text embeddings to WALS item factors, computed on executors.

A query item (one without usable factors, e.g. a cold item) gets the softmax-weighted mean of
the factors of its K nearest warm items by cosine similarity of their text embeddings:
``w_i = exp((sim_i - sim_max) / T) / Σ_j exp((sim_j - sim_max) / T)`` over the top K.

1. Embeddings are L2-normalised in the JVM (SQL higher-order functions), both sides.
2. The neighbours are the blocked top-k of :func:`udfs.topk.recommend_top_k` at the largest
   K, the queries in the place of users and the warm items in the place of items.
3. The neighbours' factors are joined on and gathered per query in rank order in the JVM.
4. The vectors of every ``(K, T)`` setting are computed in one ``mapInArrow`` with numpy.

:func:`knn_vectors_numpy` is the brute-force reference of the same map.
"""

from __future__ import annotations

import math

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from wals_roberta.jobs.data import columns as C
from wals_roberta.udfs.topk import BROADCAST_MAX_MB

KNN_SCHEMA = f"{C.ITEM_IDX} int, setting int, {C.VECTOR} array<float>"

# Padded neighbour factors of one chunk of query rows stay under this many floats (8 MB).
MAX_CHUNK_FLOATS = 2 * 1024 * 1024


def knn_weights(sims: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax weights over the last axis of ``sims`` at temperature ``temperature``.

    Args:
        sims: (n, K) similarities; ``-inf`` entries (padding) get weight 0.
        temperature: T > 0.

    Returns:
        (n, K) float64 weights, each row summing to 1 (the row maximum is subtracted first,
        so a small T does not overflow).

    Raises:
        ValueError: when ``temperature`` is not a finite number > 0.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"kNN temperature must be > 0, got {temperature!r}")
    sims = np.asarray(sims, dtype=np.float64)
    logits = np.exp((sims - sims.max(axis=-1, keepdims=True)) / temperature)
    return logits / logits.sum(axis=-1, keepdims=True)


def normalized_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm; a zero row stays zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def knn_vectors_numpy(
    query_emb: np.ndarray,
    warm_emb: np.ndarray,
    warm_factors: np.ndarray,
    k: int,
    temperature: float,
) -> np.ndarray:
    """Brute-force reference of the kNN map.

    Args:
        query_emb: (n_query, d) text embeddings of the query items.
        warm_emb: (n_warm, d) text embeddings of the warm items.
        warm_factors: (n_warm, rank) ALS factors of the warm items, rows matching ``warm_emb``.
        k: neighbours per query; more than ``n_warm`` uses all of them.
        temperature: softmax temperature T > 0.

    Returns:
        (n_query, rank) float32: per query, the softmax-weighted mean of the factors of its
        top-k warm items by cosine similarity (ties by lower warm row index).

    Raises:
        ValueError: when ``k`` < 1, ``temperature`` <= 0 or there are no warm items.
    """
    check_settings([(k, temperature)])
    warm_factors = np.asarray(warm_factors, dtype=np.float64)
    if len(warm_factors) == 0:
        raise ValueError("kNN map: no warm items")
    sims = normalized_rows(query_emb) @ normalized_rows(warm_emb).T
    kk = min(k, sims.shape[1])
    # A stable sort on -sim keeps equal similarities in warm row order.
    top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
    weights = knn_weights(np.take_along_axis(sims, top, axis=1), temperature)
    return np.einsum("nk,nkr->nr", weights, warm_factors[top]).astype(np.float32)


def check_settings(settings: list[tuple[int, float]]) -> None:
    """Raise ValueError naming the first bad ``(K, T)``: K an integer >= 1, T finite > 0."""
    if not settings:
        raise ValueError("kNN settings: at least one (K, T) is needed, got none")
    for i, setting in enumerate(settings):
        k, temperature = setting
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"kNN settings[{i}] {setting!r}: K must be an integer >= 1, got {k!r}")
        if not (
            isinstance(temperature, int | float | np.floating)
            and math.isfinite(temperature)
            and temperature > 0
        ):
            raise ValueError(
                f"kNN settings[{i}] {setting!r}: temperature must be > 0, got {temperature!r}"
            )


def setting_vectors(
    scores: np.ndarray, factors: np.ndarray, settings: list[tuple[int, float]]
) -> list[np.ndarray]:
    """The vector of every setting from neighbours in rank order.

    Args:
        scores: (n, m) similarities, best first; ``-inf`` where a row has fewer than m.
        factors: (n, m, rank) the neighbours' factors (zeros where padded).
        settings: ``[(K, T), ...]``.

    Returns:
        One (n, rank) float32 array per setting.
    """
    out = []
    for k, temperature in settings:
        kk = min(k, scores.shape[1])
        weights = knn_weights(scores[:, :kk], temperature)
        out.append(np.einsum("nk,nkr->nr", weights, factors[:, :kk]).astype(np.float32))
    return out


def vectors_of_neighbours(settings: list[tuple[int, float]]):
    """mapInArrow body: rows ``(item_idx, neighbours list<struct<rank, score, factors>>)``
    (neighbours in rank order) → ``(item_idx, setting, vector)`` for every setting."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from wals_roberta.udfs.topk_arrow import vector_rows

    def run(batches):
        for batch in batches:
            if batch.num_rows == 0:
                continue
            neighbours = batch.column("neighbours")
            counts = pc.list_value_length(neighbours).to_numpy(zero_copy_only=False)
            entries = neighbours.flatten()
            first = entries.field("factors")
            rank = len(first[0]) if len(first) else 0
            scores = entries.field("score").to_numpy(zero_copy_only=False).astype(np.float32)
            factors = vector_rows(first, rank, "kNN map: warm factors")
            # Padded to (rows, most neighbours): padding scores -inf, so its weight is 0.
            width = int(counts.max())
            starts = np.r_[0, np.cumsum(counts)[:-1]]
            rows = np.repeat(np.arange(len(counts)), counts)
            cols = np.arange(len(scores)) - np.repeat(starts, counts)
            item_idx = batch.column(C.ITEM_IDX).to_numpy(zero_copy_only=False).astype(np.int32)
            chunk = max(1, MAX_CHUNK_FLOATS // max(1, width * rank))
            for lo in range(0, len(counts), chunk):
                hi = min(lo + chunk, len(counts))
                a, b = starts[lo], starts[hi - 1] + counts[hi - 1]
                padded_scores = np.full((hi - lo, width), -np.inf, dtype=np.float32)
                padded_factors = np.zeros((hi - lo, width, rank), dtype=np.float32)
                padded_scores[rows[a:b] - lo, cols[a:b]] = scores[a:b]
                padded_factors[rows[a:b] - lo, cols[a:b]] = factors[a:b]
                for setting, vectors in enumerate(
                    setting_vectors(padded_scores, padded_factors, settings)
                ):
                    offsets = pa.array(np.arange(hi - lo + 1) * rank, type=pa.int32())
                    yield pa.RecordBatch.from_arrays(
                        [
                            pa.array(item_idx[lo:hi], type=pa.int32()),
                            pa.array(np.full(hi - lo, setting, dtype=np.int32)),
                            pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel())),
                        ],
                        names=[C.ITEM_IDX, "setting", C.VECTOR],
                    )

    return run


def unit_vector(col: str) -> Column:
    """``col`` (array<float>) scaled to unit L2 norm, in the JVM; a zero vector stays zero."""
    values = F.col(col)
    norm = F.sqrt(
        F.aggregate(values, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") ** 2)
    )
    return F.transform(
        values, lambda x: F.when(norm > 0, x.cast("double") / norm).otherwise(0.0).cast("float")
    )


def knn_vectors(
    queries: DataFrame,
    warm: DataFrame,
    settings: list[tuple[int, float]],
    *,
    emb_col: str = "embedding",
    factors_col: str = "factors",
    items_per_block: int = 65536,
    broadcast_max_mb: float = BROADCAST_MAX_MB,
) -> DataFrame:
    """kNN-mapped factors of the query items, for every ``(K, T)`` setting in one pass.

    Args:
        queries: ``(item_idx int, <emb_col> array<float>)``, the items to give vectors.
        warm: ``(item_idx int, <emb_col> array<float>, <factors_col> array<float>)``, the
            items whose factors are averaged.
        settings: ``[(K, T), ...]``, K neighbours >= 1 and softmax temperature T > 0.
        emb_col: the embedding column of both sides.
        factors_col: the factors column of ``warm``.
        items_per_block: warm items per block of the top-k kernel.
        broadcast_max_mb: warm embeddings (MB) up to which the top-k broadcasts them.

    Returns:
        DataFrame ``(item_idx int, setting int, vector array<float>)``: one row per query
        item and setting index (position in ``settings``). Queries without an embedding
        give no rows; an empty warm side gives an empty DataFrame.

    Raises:
        ValueError: naming the first setting with K < 1 or T <= 0.
    """
    from wals_roberta.udfs.topk import recommend_top_k

    check_settings(settings)
    settings = [(int(k), float(t)) for k, t in settings]
    spark = queries.sparkSession
    usable = F.col(emb_col).isNotNull() & (F.size(emb_col) > 0)
    warm_rows = warm.filter(usable & F.col(factors_col).isNotNull()).select(
        F.col(C.ITEM_IDX).cast("int").alias(C.ITEM_IDX),
        unit_vector(emb_col).alias(C.VECTOR),
        F.col(factors_col).alias("factors"),
    )
    if warm_rows.isEmpty():
        return spark.createDataFrame([], KNN_SCHEMA)
    query_rows = queries.filter(usable).select(
        F.col(C.ITEM_IDX).cast("int").alias(C.USER_IDX), unit_vector(emb_col).alias(C.VECTOR)
    )
    neighbours = recommend_top_k(
        query_rows,
        warm_rows.select(C.ITEM_IDX, C.VECTOR),
        k=max(k for k, _ in settings),
        seen=None,
        user_vector_col=C.VECTOR,
        item_vector_col=C.VECTOR,
        items_per_block=items_per_block,
        broadcast_max_mb=broadcast_max_mb,
    )
    # Gathered in the JVM, ordered by rank explicitly (collect_list alone has no order).
    gathered = (
        neighbours.join(warm_rows.select(C.ITEM_IDX, "factors"), on=C.ITEM_IDX)
        .groupBy(C.USER_IDX)
        .agg(F.sort_array(F.collect_list(F.struct(C.RANK, C.SCORE, "factors"))).alias("neighbours"))
        .select(F.col(C.USER_IDX).alias(C.ITEM_IDX), "neighbours")
    )
    return gathered.mapInArrow(vectors_of_neighbours(settings), KNN_SCHEMA)
