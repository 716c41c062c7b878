"""The conjugate-gradient WALS solver against closed-form ALS computed in numpy."""

import numpy as np
import pytest

from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.fold_in import solve_user
from wals_roberta.jobs.model.wals_cg import fit_wals_cg, initial_vectors, solve_block


def random_csr(rng, n_rows, n_other, max_per_row=12):
    offsets, others, conf = [0], [], []
    for _ in range(n_rows):
        cols = np.sort(rng.choice(n_other, rng.integers(1, max_per_row), replace=False))
        signs = np.where(rng.random(len(cols)) < 0.85, 1.0, -1.0)  # some negative feedback
        others += cols.tolist()
        conf += (signs * rng.uniform(0.5, 5.0, len(cols))).tolist()
        offsets.append(len(others))
    return np.array(offsets), np.array(others), np.array(conf, dtype=np.float32)


def exact(offsets, others, conf, fixed, reg):
    """Closed-form WALS rows (the fold-in solve; conf = alpha · r with alpha = 1)."""
    gram = fixed.T.astype(np.float64) @ fixed
    return np.stack(
        [
            solve_user(gram, fixed[others[a:b]], conf[a:b], reg=reg, alpha=1.0)
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        ]
    )


def test_enough_cg_steps_reach_the_closed_form():
    """CG on a rank-r system is exact after r steps: the λ·n_u scaling (positive entries
    only), negative entries' confidence and the preference vector all match the normal
    equations MLlib solves."""
    rng = np.random.default_rng(1)
    offsets, others, conf = random_csr(rng, 40, 60)
    fixed = rng.normal(size=(60, 6)).astype(np.float32)
    start = np.zeros((40, 6), dtype=np.float32)
    x = solve_block(offsets, others, conf, fixed, start, reg=0.1, steps=18)
    np.testing.assert_allclose(x, exact(offsets, others, conf, fixed, 0.1), atol=2e-3)


def test_few_steps_from_a_warm_start_move_towards_the_solution():
    rng = np.random.default_rng(2)
    offsets, others, conf = random_csr(rng, 50, 80)
    fixed = rng.normal(size=(80, 8)).astype(np.float32)
    target = exact(offsets, others, conf, fixed, 0.05)
    start = (target + rng.normal(scale=0.5, size=target.shape)).astype(np.float32)
    x = solve_block(offsets, others, conf, fixed, start, reg=0.05, steps=3)
    assert np.linalg.norm(x - target) < 0.2 * np.linalg.norm(start - target)


@pytest.mark.spark
@pytest.mark.parametrize("blocks", [(2, 3), (5, 1)])
def test_spark_fit_equals_alternating_closed_form_solves(spark, tmp_path, blocks):
    """Packing into blocks, routing the fixed side to every block and the warm starts give
    exactly the alternating least squares iterations (users, then items) computed densely;
    more blocks than users' partitions hold leaves some partitions empty."""
    rng = np.random.default_rng(3)
    n_users, n_items, rank, reg, alpha, seed = 23, 17, 4, 0.1, 2.0, 5
    rows = [
        (u, int(i), float(rng.integers(1, 4)))
        for u in range(n_users)
        for i in rng.choice(n_items, rng.integers(1, 8), replace=False)
    ]
    train = spark.createDataFrame(rows, "user_idx int, item_idx int, rating float")
    spark.sparkContext.setCheckpointDir(str(tmp_path / "ckpt"))
    users_df, items_df = fit_wals_cg(
        train,
        rank=rank,
        reg=reg,
        alpha=alpha,
        iterations=3,
        steps=3 * rank,
        user_blocks=blocks[0],
        item_blocks=blocks[1],
        seed=seed,
        checkpoint_interval=2,
    )
    got_users = users_df.toPandas().sort_values(C.USER_IDX)
    got_items = items_df.toPandas().sort_values(C.ITEM_IDX)

    def csr(key, other):
        ordered = sorted(rows, key=lambda r: (r[key], r[other]))
        keys = np.array([r[key] for r in ordered])
        offsets = np.searchsorted(keys, np.arange(max(keys) + 2))
        return (
            offsets,
            np.array([r[other] for r in ordered]),
            np.array([alpha * r[2] for r in ordered], dtype=np.float32),
        )

    by_user, by_item = csr(0, 1), csr(1, 0)
    items = initial_vectors(np.arange(n_items), rank, seed)
    for _ in range(3):
        users = exact(*by_user, items, reg).astype(np.float32)
        items = exact(*by_item, users, reg).astype(np.float32)
    assert got_users[C.USER_IDX].tolist() == list(range(n_users))
    np.testing.assert_allclose(np.stack(got_users[C.FACTORS]), users, atol=2e-3)
    np.testing.assert_allclose(np.stack(got_items[C.FACTORS]), items, atol=2e-3)


@pytest.mark.spark
@pytest.mark.slow
def test_cg_solver_on_ml100k_ranks_as_well_as_mllib(ml100k, tmp_path):
    """The documented ML-100k pipeline with wals.solver=cg: same split, same settings; its
    lists must rank held-out interactions as well as MLlib's (0.42 is the bar the MLlib
    pipeline is held to in test_ml100k)."""
    import json

    from tests.conftest import ml100k_pipeline_args
    from wals_roberta.jobs import cli

    root = tmp_path / "out"
    args = [*ml100k_pipeline_args(ml100k, root, "wals.solver=cg"), "--run-id", "cg"]
    assert cli.main(args) == 0
    methods = json.loads((root / "runs" / "cg" / "metrics.json").read_text())["segments"]["all"][
        "methods"
    ]
    print(f"ML-100k Recall@20 cg={methods['wals']['recall@20']:.4f}")
    assert methods["wals"]["recall@20"] >= 0.42
    assert methods["wals"]["recall@20"] >= 1.8 * methods["popularity"]["recall@20"]
    assert not (root / "runs" / "cg" / "als_model").exists()
