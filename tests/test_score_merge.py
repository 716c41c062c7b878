"""The merge of projected and WALS scores: known answers, each able to fail."""

import numpy as np
import pytest

from wals_roberta.jobs.cold.merge import (
    COLD,
    COLD_SOURCE,
    WARM_SOURCE,
    Merge,
    Moments,
    merged_top_k,
    select_merged,
    standardized_cold_scores,
    vector_moments,
)
from wals_roberta.jobs.cold.merge_choice import choose_merge, merge_grid
from wals_roberta.jobs.config import RecommendConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.lists import top_k_lists


def moments_of(v: np.ndarray) -> Moments:
    mean = v.mean(axis=0)
    return Moments(len(v), mean, np.cov(v.T, bias=True))


def shifted_problem(seed=0, n_users=30, n_warm=40, rank=5):
    """Warm item vectors; cold items whose true vectors are the warm ones reflected about
    their mean (so both sources have the same mean and covariance, and distinct scores),
    observed with a constant shift vector: each user's cold scores are off by x·δ."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, rank))
    warm = rng.normal(size=(n_warm, rank))
    true_cold = 2 * warm.mean(axis=0) - warm
    delta = -3.0 * np.abs(rng.normal(size=rank)) - 1.0
    return users, warm, true_cold, true_cold + delta


def test_standardized_scores_undo_a_shift_of_one_source():
    users, warm, true_cold, observed = shifted_problem()
    listed = standardized_cold_scores(
        users, observed, moments_of(warm), moments_of(observed), offset=0.0
    )
    np.testing.assert_allclose(listed, users @ true_cold.T, rtol=1e-9, atol=1e-9)
    # Raw, the shifted source sits lower: the test would catch a no-op merge.
    assert not np.allclose(users @ observed.T, users @ true_cold.T)


def test_moments_on_executors_equal_numpy(spark):
    rng = np.random.default_rng(3)
    v = rng.normal(size=(57, 4)).astype(np.float32)
    df = spark.createDataFrame(
        [(i, v[i].tolist()) for i in range(len(v))], "item_idx int, vector array<float>"
    ).repartition(3)
    got = vector_moments(df, C.VECTOR)
    want = moments_of(v.astype(np.float64))
    assert got.n == 57
    np.testing.assert_allclose(got.mean, want.mean, atol=1e-9)
    np.testing.assert_allclose(got.cov, want.cov, atol=1e-9)


def vectors_frame(spark, warm, cold):
    rows = [(i, warm[i].astype(np.float32).tolist(), "wals") for i in range(len(warm))]
    rows += [
        (len(warm) + j, cold[j].astype(np.float32).tolist(), "projected") for j in range(len(cold))
    ]
    return spark.createDataFrame(rows, "item_idx int, vector array<float>, source string")


def users_frame(spark, users):
    return spark.createDataFrame(
        [(u, users[u].astype(np.float32).tolist()) for u in range(len(users))],
        "user_idx int, factors array<float>",
    )


def expected_lists(scores: np.ndarray, k: int) -> list[list[int]]:
    return [sorted(range(scores.shape[1]), key=lambda i: (-row[i], i))[:k] for row in scores]


@pytest.mark.spark
def test_merge_restores_the_true_order_of_a_shifted_source(spark):
    """Cold scores shifted by a per-user constant: the standardized merge lists exactly what
    the true vectors would; raw merging does not."""
    users, warm, true_cold, observed = shifted_problem(n_warm=40)
    k, rc = 8, RecommendConfig(k=8)
    items = vectors_frame(spark, warm, observed)
    moments = {WARM_SOURCE: moments_of(warm), COLD_SOURCE: moments_of(observed)}

    def top_k(u, i, s, kk):
        return top_k_lists(u, i, s, rc, k=kk, item_vector_col=C.VECTOR)

    def lists(merge):
        out = merged_top_k(
            users_frame(spark, users), items, None, k=k, merge=merge, moments=moments, top_k=top_k
        ).toPandas()
        return [out[out.user_idx == u].sort_values(C.RANK).item_idx.tolist() for u in range(30)]

    truth = expected_lists(users @ np.vstack([warm, true_cold]).T, k)
    assert lists(Merge("standardize", 0.0, 0)) == truth
    assert lists(Merge("raw", 0.0, 0)) != truth
    assert sum(i >= len(warm) for row in truth for i in row) > 0


def candidate_rows(spark, scores: np.ndarray, cold: np.ndarray):
    rows = [
        (u, i, float(scores[u, i]), bool(cold[i]))
        for u in range(scores.shape[0])
        for i in range(scores.shape[1])
    ]
    return spark.createDataFrame(rows, f"user_idx int, item_idx int, score double, {COLD} boolean")


@pytest.mark.spark
@pytest.mark.parametrize("slots", [0, 2, 3])
def test_cold_slots_give_an_exact_count(spark, slots):
    """Cold items score below every warm one: each list holds exactly ``slots`` cold items,
    the best cold ones, and the best k − slots warm ones, ranked by score."""
    rng = np.random.default_rng(1)
    n_users, n_warm, n_cold, k = 9, 12, 7, 6
    scores = np.hstack(
        [rng.uniform(1, 2, size=(n_users, n_warm)), rng.uniform(-1, 0, size=(n_users, n_cold))]
    )
    cold = np.r_[np.zeros(n_warm, bool), np.ones(n_cold, bool)]
    got = select_merged(candidate_rows(spark, scores, cold), k, slots).toPandas()
    for u in range(n_users):
        mine = got[got.user_idx == u].sort_values(C.RANK)
        order = sorted(range(n_warm + n_cold), key=lambda i: -scores[u, i])
        best_cold = [i for i in order if cold[i]][:slots]
        best_warm = [i for i in order if not cold[i]][: k - slots]
        assert int(mine[COLD].sum()) == slots
        assert mine.item_idx.tolist() == best_warm + best_cold  # cold below warm
        assert mine[C.RANK].tolist() == list(range(1, k + 1))


@pytest.mark.spark
def test_cold_slots_are_a_floor_when_cold_items_win_on_score(spark):
    """Where cold items would win places anyway, the reserve adds none and takes none."""
    rng = np.random.default_rng(2)
    scores = rng.uniform(size=(6, 20))
    cold = np.arange(20) % 2 == 1
    got = select_merged(candidate_rows(spark, scores, cold), 8, 1).toPandas()
    for u in range(6):
        mine = got[got.user_idx == u].sort_values(C.RANK)
        natural = sorted(range(20), key=lambda i: -scores[u, i])[:8]
        if sum(cold[i] for i in natural) >= 1:
            assert mine.item_idx.tolist() == natural
        assert int(mine[COLD].sum()) >= 1


def test_choice_keeps_raw_unless_the_gain_is_clear():
    grid = merge_grid(20, None, 20)
    assert grid[0] == Merge("raw", 0.0, 0)
    assert {m.cold_slots for m in grid} == {0, 2, 4, 6}
    # Reserved items are placed by score: 15 of 50 never reach the top 20 by reserving.
    assert {m.cold_slots for m in merge_grid(50, None, 20)} == {0}
    assert {m.cold_slots for m in merge_grid(50, None, 40)} == {0, 15}
    scores = {i: 0.30 for i in range(len(grid))}
    errors = {i: 0.001 for i in range(len(grid))}
    scores[5] = 0.302  # +0.7%: under min_gain 1%
    assert choose_merge(scores, errors, 0.01) == 0
    scores[7] = 0.33
    assert choose_merge(scores, errors, 0.01) == 7
    errors[7] = 0.02  # +0.03 is 1.5 standard errors: noise
    assert choose_merge(scores, errors, 0.01) == 0
    assert choose_merge(scores, errors, 0.01, z=1.0) == 7
    assert merge_grid(20, 3, 20)[0] == Merge("raw", 0.0, 3)


@pytest.mark.spark
def test_metric_and_paired_error_by_hand(spark):
    """Recall@2 of two settings over four users (one without any hit), and the standard
    error of their paired per-user difference, against numpy."""
    from wals_roberta.jobs.cold.validation import metric_and_error

    held = spark.createDataFrame(
        [(0, 1), (0, 2), (1, 3), (2, 4), (2, 5), (2, 6), (3, 9)], "user_idx int, item_idx int"
    )
    lists = [
        (0, 0, 1, 1), (0, 0, 7, 2), (0, 1, 3, 1), (0, 2, 8, 1), (0, 2, 9, 2),
        (1, 0, 1, 1), (1, 0, 2, 2), (1, 1, 8, 1), (1, 2, 4, 1), (1, 2, 5, 2),
    ]  # fmt: skip
    df = spark.createDataFrame(lists, "setting int, user_idx int, item_idx int, rank int")
    got = metric_and_error(df, held, "recall@2", 10, "setting", [0, 1])
    first = np.array([1 / 2, 1, 0, 0])  # hits / min(|held|, 2), user 3 has no hit
    second = np.array([1, 0, 1, 0])
    d = second - first
    assert got[0][0] == pytest.approx(first.mean())
    assert got[1][0] == pytest.approx(second.mean())
    assert got[0][1] == pytest.approx(0.0)
    assert got[1][1] == pytest.approx(np.sqrt(d.var() / 4))
