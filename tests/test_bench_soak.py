"""The soak benchmark on tiny data: two refreshes pass its checks, and its re-score check
flags a published table that is wrong."""

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def soaked(spark, tmp_path_factory):
    import bench_soak

    work = tmp_path_factory.mktemp("soak")
    args = bench_soak.parse_args(
        ["--days", "2", "--users", "150", "--items", "100", "--interactions", "3000",
         "--daily", "60", "--new-users", "4", "--new-items", "4", "--changed-texts", "3",
         "--keep-runs", "2", "--rank", "8", "--k", "10"]
    )  # fmt: skip
    return bench_soak.soak(spark, args, work), work / "out"


def test_two_refreshes_pass_every_check(soaked):
    result, _ = soaked
    checks = result["checks"]
    assert checks["rescore"]["mismatched_users"] == 0, checks["rescore"]
    assert checks["rescore"]["users_published"] == checks["rescore"]["users_reference"] > 150
    assert checks["interactions"]["pass"], checks["interactions"]
    assert checks["readable"]["pass"] and checks["readable"]["tables"] > 0
    assert checks["run_dirs"]["pass"]
    assert checks["layers"]["bounded"] and checks["layers"]["max_depth"] == 2
    # Two days are too few for a compaction (MAX_LAYERS is 7) or a storage verdict.
    assert not checks["layers"]["compacted"] and checks["storage"]["pass"] is None
    day = result["days"][-1]
    assert day["new_users"] == 4 and day["new_items"] == 4 and day["changed_texts"] == 3
    assert day["published_rows"] == checks["rescore"]["users_published"] * 10


def test_the_rescore_check_flags_a_wrong_published_table(spark, soaked):
    import soak_checks

    result, root = soaked
    final = result["days"][-1]["run_id"]
    published = spark.read.parquet(str(root / "recommendations")).toPandas()
    assert soak_checks.rescore_check(spark, str(root), final, 10, published)["pass"]
    # One user's top item swapped for an item far down their ranking: a mismatch.
    wrong = published.copy()
    user = wrong.user_id.iloc[0]
    top = wrong.index[(wrong.user_id == user) & (wrong["rank"] == 1)][0]
    listed = set(wrong.item_id[wrong.user_id == user])
    wrong.loc[top, "item_id"] = next(i for i in sorted(set(published.item_id)) if i not in listed)
    got = soak_checks.rescore_check(spark, str(root), final, 10, wrong)
    assert not got["pass"] and got["mismatched_users"] == 1
    # A score off by more than the tolerance is flagged too.
    off = published.copy()
    off.loc[0, "score"] += 1e-2
    assert soak_checks.rescore_check(spark, str(root), final, 10, off)["scores_off"] == 1


def test_the_layer_and_run_checks_fail_past_their_bounds():
    import soak_checks

    deep = [{"users": d} for d in range(10)]
    assert not soak_checks.layers_check(deep)["bounded"]
    assert soak_checks.layers_check([{"t": 0}, {"t": 1}, {"t": 0}])["compacted"]
    assert not soak_checks.runs_check([1, 2, 13], keep_runs=5)["pass"]
