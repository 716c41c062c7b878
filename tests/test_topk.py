"""Blocked top-k against a brute-force numpy reference, exclusion included."""

import numpy as np
import pytest

from wals_roberta.udfs.topk import recommend_top_k, user_block_count
from wals_roberta.udfs.topk_arrow import reaching_pairs, vector_rows
from wals_roberta.udfs.topk_kernel import ranks_within_rows, top_k_block

# The two plans of recommend_top_k: item blocks broadcast, or met by a shuffle join.
PLANS = {"broadcast": 256.0, "shuffle": 0.0}


def brute_force(users, items, k, seen):
    """Reference: full score matrix, seen items removed, sorted by (-score, item)."""
    scores = users @ items.T
    out = []
    for u in range(users.shape[0]):
        cand = [(-scores[u, i], i) for i in range(items.shape[0]) if i not in seen.get(u, set())]
        out.append([i for _, i in sorted(cand)[:k]])
    return out


def random_problem(seed=0, n_users=57, n_items=83, rank=6):
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, rank)).astype(np.float32)
    items = rng.normal(size=(n_items, rank)).astype(np.float32)
    seen = {
        u: set(rng.choice(n_items, size=rng.integers(0, 20), replace=False).tolist())
        for u in range(n_users)
    }
    seen[3] = set(range(n_items - 4))  # fewer unseen items than k: all remaining are listed
    return users, items, seen


def to_csr(seen, n_users):
    lists = [sorted(seen.get(u, ())) for u in range(n_users)]
    offsets = np.r_[0, np.cumsum([len(s) for s in lists])]
    flat = np.array([i for s in lists for i in s], dtype=np.int32)
    return offsets, flat


def test_top_k_block_matches_brute_force_with_exclusion(monkeypatch):
    users, items, seen = random_problem()
    offsets, flat = to_csr(seen, len(users))
    monkeypatch.setattr(
        "wals_roberta.udfs.topk_kernel.MAX_SCORE_FLOATS", 83 * 10
    )  # several user chunks
    rows, top, scores = top_k_block(users, np.arange(len(items)), items, 10, offsets, flat)
    expected = brute_force(users, items, 10, seen)
    for u in range(len(users)):
        got = top[rows == u].tolist()
        assert got == expected[u]
        assert not set(got) & seen[u]
    assert (rows == 3).sum() == 4
    ranks = ranks_within_rows(rows)
    assert ranks[rows == 0].tolist() == list(range(1, 11))
    np.testing.assert_allclose(
        scores[rows == 0], np.sort((users[0] @ items.T)[expected[0]])[::-1], rtol=1e-5
    )


def test_reaching_pairs_are_the_items_scoring_at_least_each_kth(monkeypatch):
    import pyarrow as pa

    rng = np.random.default_rng(4)
    users = rng.normal(size=(40, 6)).astype(np.float32)
    items = rng.normal(size=(9, 6)).astype(np.float32)
    ids = np.arange(100, 109, dtype=np.int32)  # item indexes are not positions
    scores = users @ items.T
    ordered = np.sort(scores, axis=1)
    kth = (ordered[:, -3] + ordered[:, -4]) / 2  # between each user's 3rd and 4th best
    kth[:5] = np.inf  # nothing reaches these
    monkeypatch.setattr(
        "wals_roberta.udfs.topk_kernel.MAX_SCORE_FLOATS", 9 * 7
    )  # several chunks per batch
    run = reaching_pairs((ids, items))
    batches = [
        pa.RecordBatch.from_pydict(
            {
                "user_idx": pa.array(np.arange(lo, hi, dtype=np.int32) + 1000),
                "vector": pa.array([u.tolist() for u in users[lo:hi]], pa.list_(pa.float32())),
                "kth": pa.array(kth[lo:hi], pa.float32()),
            }
        )
        for lo, hi in [(0, 25), (25, 40)]
    ]
    out = [b for b in run(iter(batches))]
    got = sorted(
        zip(
            np.concatenate([b.column("user_idx").to_numpy() for b in out]).tolist(),
            np.concatenate([b.column("item_idx").to_numpy() for b in out]).tolist(),
            strict=True,
        )
    )
    rows, cols = np.nonzero(scores >= kth[:, None])
    want = sorted(zip((rows + 1000).tolist(), (cols + 100).tolist(), strict=True))
    assert got == want
    assert len(want) == 3 * 35


def test_ties_are_broken_by_item_index():
    users = np.ones((1, 2), dtype=np.float32)
    items = np.ones((6, 2), dtype=np.float32)
    _, top, _ = top_k_block(users, np.array([10, 11, 12, 13, 14, 15]), items, 4)
    assert top.tolist() == [10, 11, 12, 13]


def test_ties_across_the_cut_keep_lowest_indexes_with_exclusion(monkeypatch):
    """Integer-valued scores tie often: wherever a tie crosses the k-th place the lowest item
    indexes are kept, seen items never, for every user and user chunk; k above the item
    count lists every unseen item."""
    rng = np.random.default_rng(5)
    users = rng.integers(0, 3, size=(40, 3)).astype(np.float32)
    items = rng.integers(0, 3, size=(30, 3)).astype(np.float32)
    seen = {
        u: set(rng.choice(30, size=rng.integers(0, 8), replace=False).tolist()) for u in range(40)
    }
    offsets, flat = to_csr(seen, len(users))
    monkeypatch.setattr(
        "wals_roberta.udfs.topk_kernel.MAX_SCORE_FLOATS", 30 * 7
    )  # several user chunks
    for k in (1, 5, 12, 40):
        rows, top, _ = top_k_block(users, np.arange(30), items, k, offsets, flat)
        expected = brute_force(users, items, k, seen)
        assert [top[rows == u].tolist() for u in range(len(users))] == expected


def test_grouped_selection_is_exact_with_ties_and_exclusion(monkeypatch):
    """Enough items that candidates come from groups of items (the k-th best group maximum
    bounds the k-th score): integer scores tie within and across groups, a user who has seen
    all but three items gets those three, item indexes are not positions."""
    rng = np.random.default_rng(11)
    n_items = 2000
    users = rng.integers(0, 4, size=(25, 4)).astype(np.float32)
    items = rng.integers(0, 4, size=(n_items, 4)).astype(np.float32)
    seen = {u: set(rng.choice(n_items, size=300, replace=False).tolist()) for u in range(25)}
    seen[7] = set(range(n_items)) - {5, 999, 1998}
    offsets, flat = to_csr(seen, len(users))
    ids = np.arange(n_items) * 3 + 1
    monkeypatch.setattr(
        "wals_roberta.udfs.topk_kernel.MAX_SCORE_FLOATS", n_items * 6
    )  # several user chunks
    for k in (1, 7, 30):
        rows, top, scores = top_k_block(users, ids, items, k, offsets, ids[flat])
        expected = brute_force(users, items, k, seen)
        assert [top[rows == u].tolist() for u in range(len(users))] == [
            ids[e].tolist() for e in expected
        ]
        assert len(top[rows == 7]) == min(k, 3)
        assert np.all(np.diff(scores[rows == 0]) <= 0)


def test_vector_rows_checks_every_length():
    import pyarrow as pa

    good = pa.chunked_array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0]]], pa.list_(pa.float32()))
    np.testing.assert_array_equal(vector_rows(good, 2, "v"), [[1, 2], [3, 4], [5, 6]])
    assert vector_rows(good.combine_chunks().slice(1), 2, "v").tolist() == [[3, 4], [5, 6]]
    ragged = pa.array([[1.0, 2.0, 3.0], [4.0]], pa.list_(pa.float32()))  # total 2 × 2
    with pytest.raises(ValueError, match="user vectors are not all of length 2"):
        vector_rows(ragged, 2, "user vectors")
    with pytest.raises(ValueError, match="not all of length 2"):
        vector_rows(pa.array([[1.0, 2.0], None], pa.list_(pa.float32())), 2, "v")
    assert vector_rows(pa.array([], pa.list_(pa.float32())), 2, "v").shape == (0, 2)


def test_user_blocks_are_whole_waves_of_at_most_the_block_size():
    for cores in (1, 2, 3, 8):
        for n_users in (0, 1, 99, 100, 101, 250, 799, 800, 801, 12_345):
            blocks = user_block_count(n_users, 100, cores)
            assert blocks % cores == 0 and blocks >= cores
            assert -(-n_users // blocks) <= 100  # no block over the size
            fewer = blocks - cores  # the next smaller whole wave would overfill a block
            assert fewer == 0 or -(-n_users // fewer) > 100


@pytest.mark.spark
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("exclude", [True, False])
def test_spark_blocks_match_brute_force(spark, exclude, plan):
    users, items, seen = random_problem(seed=1)
    udf = spark.createDataFrame(
        [(u, users[u].tolist()) for u in range(len(users))], "user_idx int, factors array<float>"
    )
    # Items in no particular order: each block sorts its own by index.
    order = np.random.default_rng(2).permutation(len(items))
    idf = spark.createDataFrame(
        [(int(i), items[i].tolist()) for i in order], "item_idx int, factors array<float>"
    )
    sdf = spark.createDataFrame(
        [(u, sorted(s)) for u, s in seen.items()], "user_idx int, seen array<int>"
    )
    top = recommend_top_k(
        udf,
        idf,
        k=7,
        seen=sdf if exclude else None,
        users_per_block=10,
        items_per_block=20,
        broadcast_max_mb=PLANS[plan],
    ).toPandas()
    expected = brute_force(users, items, 7, seen if exclude else {})
    for u in range(len(users)):
        mine = top[top.user_idx == u].sort_values("rank")
        assert mine.item_idx.tolist() == expected[u]
        assert mine["rank"].tolist() == list(range(1, len(expected[u]) + 1))


@pytest.mark.spark
@pytest.mark.parametrize("plan", PLANS)
def test_spark_item_groups_are_ranked_apart(spark, plan):
    """With an item group column, each group is a catalog of its own: the lists of every
    (user, group) equal a brute force over that group's vectors, seen items excluded, with
    one item index in both groups under different vectors and several item blocks."""
    users, items, seen = random_problem(seed=4, n_users=23, n_items=41)
    other = np.random.default_rng(5).normal(size=items.shape).astype(np.float32)
    udf = spark.createDataFrame(
        [(u, users[u].tolist()) for u in range(len(users))], "user_idx int, factors array<float>"
    )
    rows = [(int(i), items[i].tolist(), 0) for i in range(len(items))]
    rows += [(int(i), other[i].tolist(), 1) for i in range(0, len(items), 2)]
    idf = spark.createDataFrame(rows, "item_idx int, factors array<float>, grp int")
    sdf = spark.createDataFrame(
        [(u, sorted(s)) for u, s in seen.items()], "user_idx int, seen array<int>"
    )
    top = recommend_top_k(
        udf,
        idf,
        k=5,
        seen=sdf,
        users_per_block=8,
        items_per_block=9,
        item_group_col="grp",
        broadcast_max_mb=PLANS[plan],
    ).toPandas()
    assert list(top.columns) == ["grp", "user_idx", "item_idx", "score", "rank"]
    evens = list(range(0, len(items), 2))
    expected_other = brute_force(
        users,
        other[evens],
        5,
        {u: {evens.index(i) for i in s if i % 2 == 0} for u, s in seen.items()},
    )
    expected = brute_force(users, items, 5, seen)
    for u in range(len(users)):
        mine = top[(top.user_idx == u) & (top.grp == 0)].sort_values("rank")
        assert mine.item_idx.tolist() == expected[u]
        theirs = top[(top.user_idx == u) & (top.grp == 1)].sort_values("rank")
        assert theirs.item_idx.tolist() == [evens[j] for j in expected_other[u]]


def test_pack_user_rows_groups_vectors_and_seen_pairs():
    """One partition in any order → users sorted, vectors and carried ids aligned with them,
    each user's seen items sorted in CSR form; seen rows of a user without a vector and
    users without seen rows handled."""
    import pyarrow as pa

    from wals_roberta.udfs.topk_arrow import pack_user_rows

    rng = np.random.default_rng(3)
    vectors = {u: rng.normal(size=3).astype(np.float32) for u in (9, 2, 5, 7)}
    seen = {9: [4, 1, 8], 2: [6], 5: [], 7: [3, 0], 11: [2, 5]}  # 11 has no vector
    rows = [(u, v.tolist(), -1, f"u{u}") for u, v in vectors.items()]
    rows += [(u, [], i, None) for u, items in seen.items() for i in items]
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    schema = pa.schema(
        [
            ("user_idx", pa.int32()),
            ("vector", pa.list_(pa.float32())),
            ("item_idx", pa.int32()),
            ("user_id", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(
        [dict(zip(schema.names, r, strict=True)) for r in rows], schema=schema
    )
    batches = table.to_batches(max_chunksize=4)  # a user's rows span batches
    assert list(pack_user_rows(3)(iter([]))) == []  # an empty partition packs to nothing
    (packed,) = list(pack_user_rows(3, carry="user_id")(iter(batches)))
    users = packed.column("user_idx")[0].values.to_numpy()
    assert users.tolist() == [2, 5, 7, 9]
    got_vectors = packed.column("vectors")[0].values.to_numpy().reshape(-1, 3)
    np.testing.assert_array_equal(got_vectors, np.stack([vectors[u] for u in users]))
    assert packed.column("user_id")[0].values.to_pylist() == ["u2", "u5", "u7", "u9"]
    offsets = packed.column("seen_offsets")[0].values.to_numpy()
    flat = packed.column("seen_items")[0].values.to_numpy()
    for n, u in enumerate(users):
        assert flat[offsets[n] : offsets[n + 1]].tolist() == sorted(seen[u])


@pytest.mark.spark
@pytest.mark.parametrize("plan", PLANS)
def test_spark_seen_pairs_and_carried_ids(spark, plan):
    """Seen items given as (user, item) pairs exclude the same items as lists; a carried
    column arrives on every list row of its user; users without a vector get no list."""
    users, items, seen = random_problem(seed=4)
    udf = spark.createDataFrame(
        [(u, users[u].tolist(), f"id{u}") for u in range(len(users))],
        "user_idx int, factors array<float>, user_id string",
    )
    idf = spark.createDataFrame(
        [(i, items[i].tolist()) for i in range(len(items))], "item_idx int, factors array<float>"
    )
    pairs = [(u, i) for u, s in seen.items() for i in s] + [(999, 1)]
    sdf = spark.createDataFrame(pairs, "user_idx int, item_idx int")
    top = recommend_top_k(
        udf,
        idf,
        k=6,
        seen=sdf,
        users_per_block=9,
        items_per_block=30,
        carry="user_id",
        broadcast_max_mb=PLANS[plan],
    ).toPandas()
    expected = brute_force(users, items, 6, seen)
    assert set(top.user_idx) == set(range(len(users)))
    assert (top.user_id == "id" + top.user_idx.astype(str)).all()
    for u in range(len(users)):
        assert top[top.user_idx == u].sort_values("rank").item_idx.tolist() == expected[u]


@pytest.mark.spark
def test_spark_item_vector_of_another_length_is_named(spark):
    users, items, _ = random_problem(seed=5, n_users=6, n_items=30, rank=4)
    udf = spark.createDataFrame(
        [(u, users[u].tolist()) for u in range(len(users))], "user_idx int, factors array<float>"
    )
    rows = [(i, items[i].tolist()) for i in range(len(items))]
    rows[4] = (4, items[4].tolist() + [0.5])  # one item vector of length 5
    idf = spark.createDataFrame(rows, "item_idx int, factors array<float>")
    with pytest.raises(Exception, match="item vectors are not all of length 4"):
        recommend_top_k(udf, idf, k=3).collect()


def test_kernel_benchmark_checks_its_selection_and_writes_results(tmp_path):
    """bench/bench_topk.py at a small size: both selections agree, results are written."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import bench_topk

    args = ["--users", "300", "--items", "2500", "--k", "10", "--repeats", "1"]
    assert bench_topk.main([*args, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "topk.json").read_text())
    assert result["shape"] == {"users": 300, "items": 2500, "rank": 64, "k": 10}
    assert set(result["seconds"]) == {"top_k_block", "matmul_torch_topk", "matmul_only"}
    assert "| `top_k_block`" in (tmp_path / "topk.md").read_text()


def test_running_lists_merge_partial_lists_exactly_with_ties():
    """Partial lists of disjoint item blocks, merged in any order (and one user missing from
    some blocks), give the brute-force top-k of the whole catalog: integer scores tie across
    blocks, carried ids follow their rows, a block leaves as soon as its last list arrived."""
    import pyarrow as pa

    from wals_roberta.udfs.topk_arrow import RunningLists

    rng = np.random.default_rng(8)
    users = rng.integers(0, 3, size=(12, 3)).astype(np.float32)
    items = rng.integers(0, 3, size=(50, 3)).astype(np.float32)
    user_ids = np.arange(100, 112)  # user indexes are not positions
    partials = []
    for lo in range(0, 50, 10):
        ids = np.arange(lo, lo + 10)
        rows, top, scores = top_k_block(users, ids, items[lo : lo + 10], 4)
        keep = rows != 5 if lo == 20 else slice(None)  # user 5 has no list in one block
        partials.append((rows[keep], top[keep], scores[keep]))
    running = RunningLists(4, carry="user_id", group=None, expected=len(partials))
    out = []
    for n in rng.permutation(len(partials)):
        rows, top, scores = partials[n]
        carried = pa.array([f"u{user_ids[r]}" for r in rows])
        out += running.add(7, None, user_ids[rows], top, scores, carried)
    assert len(out) == 1 and not running.lists  # handed out at the last expected list
    got = out[0].to_pandas()
    assert (got.user_id == "u" + got.user_idx.astype(str)).all()
    expected = brute_force(users, items, 4, {})
    for u in range(len(users)):
        mine = got[got.user_idx == user_ids[u]]
        assert mine.item_idx.tolist() == expected[u]
        assert mine["rank"].tolist() == [1, 2, 3, 4]


@pytest.mark.spark
def test_spark_shuffle_plan_broadcasts_no_item_vectors(spark, capsys):
    """Past broadcast_max_mb the item blocks meet the user blocks by a sort-merge join; below
    it they are broadcast to every task and nothing is sort-merge joined."""
    users, items, _ = random_problem(seed=6, n_users=20, n_items=40)
    udf = spark.createDataFrame(
        [(u, users[u].tolist()) for u in range(len(users))], "user_idx int, factors array<float>"
    )
    idf = spark.createDataFrame(
        [(i, items[i].tolist()) for i in range(len(items))], "item_idx int, factors array<float>"
    )
    for plan, joined in (("shuffle", True), ("broadcast", False)):
        top = recommend_top_k(udf, idf, k=3, items_per_block=16, broadcast_max_mb=PLANS[plan])
        top.explain()
        assert ("SortMergeJoin" in capsys.readouterr().out) is joined


@pytest.mark.slow
def test_plans_benchmark_checks_both_plans_against_brute_force(tmp_path, monkeypatch):
    """bench_topk_plans at a tiny size: both plans run in their own JVMs, their lists match
    its brute force over the whole catalog (several item blocks: 300,000 items), results
    written; lists that differ from the brute force are reported, not hidden."""
    import json
    import subprocess
    import sys

    import pandas as pd

    from tests.conftest import REPO

    out, data = tmp_path / "results", tmp_path / "data"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_topk_plans.py"), "--case", "300x300000:2g",
         "--rank", "8", "--k", "5", "--data", str(data), "--out", str(out),
         "--sample-users", "20"],
        check=True,
    )  # fmt: skip
    rows = json.loads((out / "topk-plans.json").read_text())
    assert [r["plan"] for r in rows] == ["broadcast", "shuffle"]
    assert all(r["status"] == "ok" and r["exact_on_sample"] is True for r in rows)
    assert "| 300 | 300,000 |" in (out / "topk-plans.md").read_text()

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import bench_topk_plans as plans

    case_dir = data / "300x300000r8"
    lists = pd.read_parquet(case_dir / "out-shuffle")
    lists[lists["rank"] != 2].to_parquet(case_dir / "out-broken")  # every 2nd place gone
    case = {"users": 300, "items": 300_000, "rank": 8, "k": 5}
    assert plans.check(case_dir, "shuffle", case, 300)
    assert not plans.check(case_dir, "broken", case, 300)
