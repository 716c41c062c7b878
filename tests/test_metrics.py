"""Ranking metrics against values worked out by hand."""

import math

import pytest

from wals_roberta.jobs.model.metrics import ranking_metrics

pytestmark = pytest.mark.spark


def hand_lists(spark):
    """user 0: list [10, 11, 12, 13], relevant {11, 13, 99} -> hits at ranks 2 and 4
    user 1: list [20, 21, 22, 23], relevant {20}       -> hit at rank 1
    user 2: no list at all,          relevant {30}       -> zeros
    user 3: a list [40, 41, 42, 43] but nothing relevant -> not evaluated
    """
    lists = spark.createDataFrame(
        [(0, 10 + r, r + 1) for r in range(4)]
        + [(1, 20 + r, r + 1) for r in range(4)]
        + [(3, 40 + r, r + 1) for r in range(4)],
        "user_idx int, item_idx int, rank int",
    )
    relevant = spark.createDataFrame(
        [(0, 11), (0, 13), (0, 99), (1, 20), (2, 30)], "user_idx int, item_idx int"
    )
    return lists, relevant


def test_metrics_match_hand_computation(spark):
    lists, relevant = hand_lists(spark)
    m = ranking_metrics(lists, relevant, [2, 4], n_catalog_items=50)
    log2 = math.log2
    assert m["users"] == 3 and m["relevant"] == 5
    assert m["recall@2"] == pytest.approx((1 / 2 + 1 / 1 + 0) / 3)
    assert m["recall@4"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert m["precision@4"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    ndcg0_2 = (1 / log2(3)) / (1 + 1 / log2(3))
    ndcg0_4 = (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3) + 1 / log2(4))
    assert m["ndcg@2"] == pytest.approx((ndcg0_2 + 1 + 0) / 3)
    assert m["ndcg@4"] == pytest.approx((ndcg0_4 + 1 + 0) / 3)
    assert m["map@2"] == pytest.approx(((1 / 2) / 2 + 1 + 0) / 3)
    assert m["map@4"] == pytest.approx(((1 / 2 + 2 / 4) / 3 + 1 + 0) / 3)
    assert m["hit_rate@2"] == pytest.approx(2 / 3)
    assert m["coverage@2"] == pytest.approx(6 / 50)
    assert m["coverage@4"] == pytest.approx(12 / 50)
    assert m["cold_share@2"] == 0.0 and m["cold_share@4"] == 0.0  # no cold items given


def test_cold_share_counts_the_slots_of_the_evaluated_lists(spark):
    lists, relevant = hand_lists(spark)
    # Cold: 11 and 12 (user 0, ranks 2 and 3), 23 (user 1, rank 4), 40 and 41 (user 3, not
    # evaluated, so not counted), 30 (relevant to user 2, who has no list); 11 twice.
    cold = spark.createDataFrame([(i,) for i in (11, 12, 23, 40, 41, 30, 11)], "item_idx int")
    m = ranking_metrics(lists, relevant, [2, 4, 6], n_catalog_items=50, cold_items=cold)
    assert m["cold_share@2"] == pytest.approx(1 / 4)  # ranks <= 2: 10, 11 | 20, 21
    assert m["cold_share@4"] == pytest.approx(3 / 8)
    # K beyond the lists' length: the share is over the slots there are (8), not K per user.
    assert m["cold_share@6"] == pytest.approx(3 / 8)
    # The cold items change nothing else.
    plain = ranking_metrics(lists, relevant, [2, 4, 6], n_catalog_items=50)
    assert {k: v for k, v in m.items() if not k.startswith("cold_share")} == pytest.approx(
        {k: v for k, v in plain.items() if not k.startswith("cold_share")}
    )


def test_cold_share_is_zero_without_cold_items_in_the_lists(spark):
    lists, relevant = hand_lists(spark)
    none_listed = spark.createDataFrame([(99,), (30,), (42,)], "item_idx int")  # off the lists
    empty = spark.createDataFrame([], "item_idx int")
    for cold in (None, empty, none_listed):
        m = ranking_metrics(lists, relevant, [2, 4], n_catalog_items=50, cold_items=cold)
        assert m["cold_share@2"] == 0.0 and m["cold_share@4"] == 0.0
    # Nobody evaluated has a list: no slots at all, still 0.0 (not NaN).
    only_user_2 = relevant.filter("user_idx = 2")
    m = ranking_metrics(lists, only_user_2, [2], n_catalog_items=50, cold_items=none_listed)
    assert m["users"] == 1 and m["cold_share@2"] == 0.0
