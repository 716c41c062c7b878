"""ALS + top-k on a checkerboard whose answer is known."""

import numpy as np
import pytest
from pyspark.sql import functions as F

from wals_roberta.jobs.config import WalsConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.lists import seen_items
from wals_roberta.jobs.model.wals import fit_wals
from wals_roberta.udfs.topk import recommend_top_k

pytestmark = pytest.mark.spark


def test_checkerboard_recovers_each_users_own_block(spark, tmp_path):
    # Two taste groups: users 0-29 use items 0-19, users 30-59 items 20-39. Each user saw
    # 15 of their group's 20 items; the 5 unseen ones must be exactly their top 5.
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        group = u // 30
        own = np.arange(20) + 20 * group
        for i in rng.choice(own, size=15, replace=False):
            rows.append((u, int(i), 1.0, C.TRAIN))
    train = spark.createDataFrame(rows, "user_idx int, item_idx int, rating float, split string")
    wals = WalsConfig(rank=2, reg=0.1, alpha=10.0, iterations=15, user_blocks=2, item_blocks=2)
    model = fit_wals(train, wals, str(tmp_path / "ckpt"))
    users = model.userFactors.select(
        F.col("id").alias("user_idx"), F.col("features").alias("factors")
    )
    items = model.itemFactors.select(
        F.col("id").alias("item_idx"), F.col("features").alias("factors")
    )
    top = recommend_top_k(users, items, k=5, seen=seen_items(train)).toPandas()
    seen = {(u, i) for u, i, _, _ in rows}
    assert len(top) == 60 * 5
    for u, group in top.groupby("user_idx"):
        wanted = {i for i in range(20 * (u // 30), 20 * (u // 30) + 20) if (u, i) not in seen}
        assert set(group.item_idx) == wanted
