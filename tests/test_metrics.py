"""Ranking metrics against values worked out by hand."""

import math

import pytest

from jobs.metrics import ranking_metrics

pytestmark = pytest.mark.spark


def test_metrics_match_hand_computation(spark):
    # user 0: list [10, 11, 12, 13], relevant {11, 13, 99} -> hits at ranks 2 and 4
    # user 1: list [20, 21, 22, 23], relevant {20}       -> hit at rank 1
    # user 2: no list at all,          relevant {30}       -> zeros
    # user 3: a list but nothing relevant                  -> not evaluated
    lists = spark.createDataFrame(
        [(0, 10 + r, r + 1) for r in range(4)]
        + [(1, 20 + r, r + 1) for r in range(4)]
        + [(3, 40 + r, r + 1) for r in range(4)],
        "user_idx int, item_idx int, rank int",
    )
    relevant = spark.createDataFrame(
        [(0, 11), (0, 13), (0, 99), (1, 20), (2, 30)], "user_idx int, item_idx int"
    )
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
