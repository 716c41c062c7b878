"""Fold-in: the closed-form user step against numpy and against MLlib's own user factors."""

import numpy as np
import pytest
from pyspark.sql import functions as F

from wals_roberta.jobs.config import WalsConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model import fold_in
from wals_roberta.jobs.model.fold_in import (
    fold_in_users,
    gram_matrix,
    solve_rows,
    solve_user,
    weighted_mean,
)
from wals_roberta.jobs.model.wals import fit_wals

pytestmark = pytest.mark.spark


def dense_half_step(y: np.ndarray, prefs: dict[int, float], reg: float, alpha: float):
    """Hu, Koren & Volinsky's user step written out with the full diagonal C_u and p_u over
    every item (no shortcuts), MLlib's λ·n_u regularization."""
    n_items, rank = y.shape
    c = np.ones(n_items)
    p = np.zeros(n_items)
    for i, r in prefs.items():
        c[i] = 1 + alpha * r
        p[i] = 1.0
    a = y.T @ np.diag(c) @ y + reg * len(prefs) * np.eye(rank)
    return np.linalg.solve(a, y.T @ np.diag(c) @ p)


def frames(spark, y: np.ndarray, history: list[tuple[int, int, float]]):
    items = spark.createDataFrame(
        [(i, [float(v) for v in row]) for i, row in enumerate(y)],
        "item_idx int, factors array<float>",
    )
    hist = spark.createDataFrame(history, "user_idx int, item_idx int, rating float")
    return items, hist


def test_fold_in_equals_a_dense_numpy_half_step(spark):
    rng = np.random.default_rng(3)
    y = rng.normal(size=(40, 5)).astype(np.float32)
    history = []
    for u in range(12):
        for i in rng.choice(40, size=int(rng.integers(1, 9)), replace=False):
            history.append((u, int(i), float(rng.integers(1, 4))))
    items, hist = frames(spark, y, history)
    got = {
        r.user_idx: np.asarray(r.factors)
        for r in fold_in_users(hist, items, rank=5, reg=0.3, alpha=4.0).collect()
    }
    assert sorted(got) == list(range(12))
    for u in range(12):
        prefs = {i: r for uu, i, r in history if uu == u}
        want = dense_half_step(y.astype(np.float64), prefs, 0.3, 4.0)
        np.testing.assert_allclose(got[u], want, rtol=1e-4, atol=1e-5)


def test_weighted_mean_method(spark):
    y = np.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]], dtype=np.float32)
    items, hist = frames(spark, y, [(7, 0, 1.0), (7, 1, 3.0)])
    (row,) = fold_in_users(hist, items, rank=2, reg=0.1, alpha=1.0, method="mean").collect()
    # confidences 2 and 4: (2·[1,0] + 4·[0,2]) / 6
    np.testing.assert_allclose(row.factors, [2 / 6, 8 / 6], rtol=1e-6)


def test_gram_matrix_is_summed_over_partitions(spark):
    y = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    items, _ = frames(spark, y, [(0, 0, 1.0)])
    gram = gram_matrix(items.repartition(3), C.FACTORS, 4)
    np.testing.assert_allclose(gram, y.astype(np.float64).T @ y, rtol=1e-5)


def test_fold_in_gives_back_the_trained_user_factors(spark, tmp_path):
    # MLlib's last step of each iteration solves the users against the final item factors,
    # so folding a trained user's own history in must reproduce their factors.
    rng = np.random.default_rng(5)
    rows = [
        (u, int(i), float(rng.integers(1, 5)))
        for u in range(50)
        for i in rng.choice(60, size=int(rng.integers(2, 15)), replace=False)
    ]
    train = spark.createDataFrame(rows, "user_idx int, item_idx int, rating float")
    wals = WalsConfig(rank=6, reg=0.2, alpha=3.0, iterations=4, user_blocks=2, item_blocks=2)
    model = fit_wals(train, wals, str(tmp_path / "ckpt"))
    item_factors = model.itemFactors.select(
        F.col("id").alias(C.ITEM_IDX), F.col("features").alias(C.FACTORS)
    )
    trained = {r.id: np.asarray(r.features) for r in model.userFactors.collect()}
    folded = fold_in_users(train, item_factors, rank=6, reg=0.2, alpha=3.0).collect()
    assert len(folded) == len(trained) == 50
    for r in folded:
        np.testing.assert_allclose(r.factors, trained[r.user_idx], rtol=2e-3, atol=2e-4)


def test_solve_rows_without_spark_one_solve_per_row_entries_without_vector_ignored():
    rng = np.random.default_rng(8)
    fixed = rng.normal(size=(12, 3))
    present = np.ones(12, dtype=bool)
    present[[5, 6]] = False  # no vector for items 5 and 6
    offsets = np.array([0, 3, 4, 7, 9])
    others = np.array([0, 5, 2, 9, 1, 6, 11, 5, 6])
    ratings = np.array([1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 2.0, 4.0, 1.0])
    gram = fixed.T @ fixed
    got, solved = solve_rows(offsets, others, ratings, fixed, present, gram, reg=0.2, alpha=2.0)
    assert solved.tolist() == [True, True, True, False]  # row 3 only has vectorless items
    for n, keep in enumerate([[0, 2], [3], [4, 6]]):
        want = solve_user(gram, fixed[others[keep]], ratings[keep], reg=0.2, alpha=2.0)
        np.testing.assert_allclose(got[n], want, rtol=1e-5)


@pytest.mark.parametrize("caps", [(64, 1 << 17), (5, 300)])
def test_solve_rows_in_padded_groups_equals_one_solve_per_row(monkeypatch, caps):
    # Rows of very different lengths (1..250 entries, some vectorless, some ratings <= 0),
    # solved in groups; small caps force many groups, single-row groups and rows longer
    # than the entry budget.
    monkeypatch.setattr(fold_in, "GROUP_ROWS", caps[0])
    monkeypatch.setattr(fold_in, "GROUP_ENTRIES", caps[1])
    rng = np.random.default_rng(3)
    fixed = rng.normal(size=(400, 8)).astype(np.float32)
    present = rng.random(400) > 0.1
    lengths = rng.integers(1, 250, size=60)
    offsets = np.r_[0, np.cumsum(lengths)]
    others = rng.integers(0, 400, size=offsets[-1])
    ratings = rng.normal(loc=1.0, size=offsets[-1]).astype(np.float32)
    gram = fixed.T.astype(np.float64) @ fixed
    for g in (gram, None):
        got, solved = solve_rows(offsets, others, ratings, fixed, present, g, reg=0.3, alpha=4.0)
        assert solved.all()
        for n in range(len(lengths)):
            cols = others[offsets[n] : offsets[n + 1]]
            keep = present[cols]
            y_u, r = fixed[cols[keep]], ratings[offsets[n] : offsets[n + 1]][keep]
            if g is None:
                want = weighted_mean(y_u, r, alpha=4.0)
            else:
                want = solve_user(g, y_u, r, reg=0.3, alpha=4.0)
            np.testing.assert_allclose(got[n], want, rtol=1e-4, atol=1e-6)


def test_history_with_items_without_vectors(spark):
    # Items 3 and 4 have no vector: user 0's entries on them are ignored, user 1 (only such
    # items) gets no vector at all.
    y = np.random.default_rng(2).normal(size=(3, 2)).astype(np.float32)
    items, hist = frames(spark, y, [(0, 0, 1.0), (0, 3, 5.0), (0, 2, 2.0), (1, 4, 1.0)])
    got = fold_in_users(hist, items, rank=2, reg=0.1, alpha=1.5).collect()
    assert [r.user_idx for r in got] == [0]
    want = dense_half_step(y.astype(np.float64), {0: 1.0, 2: 2.0}, 0.1, 1.5)
    np.testing.assert_allclose(got[0].factors, want, rtol=1e-4, atol=1e-5)


def test_users_whose_rows_span_arrow_batches_are_solved_once(spark):
    # Batches of 3 rows split most users' histories; each must still get one exact solve.
    rng = np.random.default_rng(4)
    y = rng.normal(size=(25, 4)).astype(np.float32)
    history = [(u, i, 1.0 + (u + i) % 3) for u in range(9) for i in range(u, u + 2 + u % 5)]
    items, hist = frames(spark, y, history)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")
    try:
        got = fold_in_users(hist, items, rank=4, reg=0.1, alpha=2.0).collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert sorted(r.user_idx for r in got) == list(range(9))
    for r in got:
        prefs = {i: rating for u, i, rating in history if u == r.user_idx}
        want = dense_half_step(y.astype(np.float64), prefs, 0.1, 2.0)
        np.testing.assert_allclose(r.factors, want, rtol=1e-4, atol=1e-5)


def test_fold_in_rows_are_found_by_the_prepare_counts_or_by_a_scan(spark, tmp_path):
    from pathlib import Path

    from wals_roberta.jobs.config import load_config
    from wals_roberta.jobs.recommend import needs_fold_in
    from wals_roberta.jobs.runs import tables

    conf = Path(__file__).resolve().parent.parent / "conf" / "demo.yaml"
    cfg = load_config(conf, [f"output.root={tmp_path}"])
    run = tables.open_run(spark, cfg, "r", create=True)
    rows = spark.createDataFrame(
        [(0, 1, C.TRAIN), (1, 2, C.FOLD_IN)], "user_idx int, item_idx int, split string"
    )
    trained_only = rows.filter(F.col(C.SPLIT) == C.TRAIN)
    # No prepare counts in the manifest: the split column is scanned.
    assert needs_fold_in(spark, run, rows)
    assert not needs_fold_in(spark, run, trained_only)
    # A complete prepare stage's counts answer without a scan (here they disagree with the
    # rows passed, to show which one was read).
    counts = {"split": {C.TRAIN: 1, C.FOLD_IN: 1}}
    tables.update_manifest(spark, run, stages={"prepare": {"status": "complete", "counts": counts}})
    assert needs_fold_in(spark, run, trained_only)
    counts["split"].pop(C.FOLD_IN)
    tables.update_manifest(spark, run, stages={"prepare": {"status": "complete", "counts": counts}})
    assert not needs_fold_in(spark, run, rows)
