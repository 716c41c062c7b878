"""kNN text → factor map: softmax weights, a hand-computed case, Spark against numpy."""

import math

import numpy as np
import pytest

from wals_roberta.jobs.cold.knn import knn_vectors, knn_vectors_numpy, knn_weights


def test_knn_weights_known_answers():
    np.testing.assert_allclose(knn_weights(np.full((2, 4), 0.3), 0.1), np.full((2, 4), 0.25))
    sims = np.array([[0.2, 0.9, 0.5], [0.7, 0.1, 0.6]])
    np.testing.assert_allclose(knn_weights(sims, 1e-4), [[0, 1, 0], [1, 0, 0]], atol=1e-12)
    weights = knn_weights(sims, 0.5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # exp(Δ/T) by hand: 0.9 vs 0.5 at T = 0.5 is a ratio of e^0.8.
    assert weights[0, 1] / weights[0, 2] == pytest.approx(math.exp(0.8))
    assert np.all(np.diff(weights[0][[0, 2, 1]]) > 0)


def test_knn_weights_rejects_a_non_positive_temperature():
    with pytest.raises(ValueError, match="0.0"):
        knn_weights(np.zeros((1, 2)), 0.0)


def test_knn_vectors_numpy_hand_made_case():
    # Warm embeddings along the axes; the query at 45° in (x, y) is equally near warm 0 and 1
    # (cos = 1/√2), orthogonal to warm 2 (cos = 0). Scale must not matter (cosine).
    warm_emb = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    warm_factors = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    query = np.array([[4.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    # k = 2: query 0 averages warm 0 and 1 equally; query 1 has sims (1, 0, -1) → warm 0 and 1
    # with weights e^0, e^-1 (T = 1); the zero query ties at 0 everywhere → warm 0 and 1.
    got = knn_vectors_numpy(query, warm_emb, warm_factors, 2, 1.0)
    w = 1 / (1 + math.exp(-1))
    np.testing.assert_allclose(got, [[0.5, 0.5], [w, 1 - w], [0.5, 0.5]], rtol=1e-6)
    assert got.dtype == np.float32
    # k = 1: the nearest only; the 45° tie goes to the lower warm row (0).
    np.testing.assert_allclose(
        knn_vectors_numpy(query, warm_emb, warm_factors, 1, 1.0), [[1, 0], [1, 0], [1, 0]]
    )
    # k above the number of warm items uses all three: query 1 at T = 1 weighs e^0, e^-1, e^-2.
    e = np.exp([0.0, -1.0, -2.0])
    np.testing.assert_allclose(
        knn_vectors_numpy(query[1:2], warm_emb, warm_factors, 10, 1.0),
        [(e / e.sum()) @ warm_factors],
        rtol=1e-6,
    )


@pytest.mark.spark
def test_spark_knn_vectors_equal_a_numpy_brute_force(spark):
    rng = np.random.default_rng(7)
    n_query, n_warm, dim, rank = 13, 40, 5, 4
    query_emb = rng.normal(size=(n_query, dim)).astype(np.float32)
    warm_emb = rng.normal(size=(n_warm, dim)).astype(np.float32)
    warm_factors = rng.normal(size=(n_warm, rank)).astype(np.float32)
    warm_ids = np.arange(n_warm) * 3 + 1  # indexes are not positions; ascending, as rows
    queries = spark.createDataFrame(
        [(1000 + i, e.tolist()) for i, e in enumerate(query_emb)] + [(2000, None)],
        "item_idx int, embedding array<float>",
    )
    warm = spark.createDataFrame(
        [
            (int(i), e.tolist(), f.tolist())
            for i, e, f in zip(warm_ids, warm_emb, warm_factors, strict=True)
        ],
        "item_idx int, embedding array<float>, factors array<float>",
    )
    settings = [(1, 1.0), (3, 0.05), (10, 0.2), (50, 1.0)]  # 50 > n_warm: all of them
    # 7 warm items per block: several blocks, lists merged across them.
    rows = knn_vectors(queries, warm, settings, items_per_block=7).collect()
    assert len(rows) == n_query * len(settings)  # no rows for the query without embedding
    got = {(r["item_idx"], r["setting"]): np.array(r["vector"]) for r in rows}
    for s, (k, t) in enumerate(settings):
        expected = knn_vectors_numpy(query_emb, warm_emb, warm_factors, k, t)
        for i in range(n_query):
            np.testing.assert_allclose(got[(1000 + i, s)], expected[i], atol=1e-5)
    # The settings differ, so the test would see a setting index mixed up.
    assert not np.allclose(got[(1000, 0)], got[(1000, 3)])


@pytest.mark.spark
def test_spark_empty_warm_side_gives_an_empty_frame(spark):
    queries = spark.createDataFrame([(1, [1.0, 0.0])], "item_idx int, embedding array<float>")
    warm = spark.createDataFrame([], "item_idx int, embedding array<float>, factors array<float>")
    out = knn_vectors(queries, warm, [(2, 1.0)])
    assert out.columns == ["item_idx", "setting", "vector"]
    assert out.count() == 0


@pytest.mark.spark
@pytest.mark.parametrize(
    ("settings", "named"),
    [([(5, 1.0), (0, 1.0)], "got 0"), ([(5, -0.5)], "got -0.5"), ([(2.5, 1.0)], "got 2.5")],
)
def test_a_bad_setting_is_named(spark, settings, named):
    queries = spark.createDataFrame([(1, [1.0, 0.0])], "item_idx int, embedding array<float>")
    warm = spark.createDataFrame(
        [(2, [1.0, 0.0], [1.0])], "item_idx int, embedding array<float>, factors array<float>"
    )
    with pytest.raises(ValueError, match=named):
        knn_vectors(queries, warm, settings)
    with pytest.raises(ValueError, match=named):
        knn_vectors_numpy(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 1)), *settings[-1])
