"""Validation for the cold-start choices (the text map and the score merge), carved from the
training rows; the test split is never read.

The training rows are split again the way the evaluation split is made
(:func:`data.splitting.split_interactions`): each user's ``split.fraction`` of rows (by a
seeded hash, or their latest with ``split.holdout: time``) and every training row of a share
of warm items, held out as pseudo-cold. A second WALS model, with the run's settings, is
fitted on the rest. In it the pseudo-cold items have no factors, like the run's cold items,
so their text-mapped vectors are ranked against interactions that neither the model nor the
map saw, and the merge of the two sources is scored exactly as production lists are made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config, metric_cut
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.splitting import cold_item_flag, split_interactions
from wals_roberta.jobs.model.metrics import ideal_dcg
from wals_roberta.jobs.model.wals import fit_factors
from wals_roberta.jobs.runs import storage

# Bounds of the pseudo-cold share when it follows the run's share of cold items.
MIN_PSEUDO_COLD, MAX_PSEUDO_COLD = 0.05, 0.5
SAMPLE_BUCKETS = 1_000_000


@dataclass(frozen=True)
class ValidationSet:
    """The validation model and what it is scored on (index columns only)."""

    users: DataFrame  # (user_idx, factors): the scored validation users
    item_factors: DataFrame  # (item_idx, factors): the validation model's items
    seen: DataFrame  # (user_idx, item_idx): the validation model's training pairs
    held: DataFrame  # (user_idx, item_idx): validation pairs of the scored users
    pseudo_cold: DataFrame  # (item_idx): warm items held out entirely
    item_counts: DataFrame  # (item_idx, n): the validation model's training pairs per item
    counts: dict[str, Any]
    # Of every user, not only the scored ones (what fine-tuning trains on, jobs/finetune.py):
    user_factors: DataFrame  # (user_idx, factors): the validation model's users
    fit: DataFrame  # (user_idx, item_idx): the validation model's training pairs

    def release(self) -> None:
        for df in (self.users, self.item_factors, self.seen, self.held, self.pseudo_cold):
            df.unpersist()
        self.item_counts.unpersist()


def pseudo_cold_share(configured: float | None, n_cold: int, n_items: int) -> float:
    """The configured share, else the run's share of cold items clipped to
    [MIN_PSEUDO_COLD, MAX_PSEUDO_COLD], so that validation ranks about as many text-mapped
    items against the warm ones as production does."""
    if configured is not None:
        return configured
    share = n_cold / n_items if n_items else 0.0
    return min(MAX_PSEUDO_COLD, max(MIN_PSEUDO_COLD, share))


def validation_rows(
    train: DataFrame, *, holdout: str, fraction: float, seed: int, pseudo_cold: float
) -> DataFrame:
    """``train`` (the run's training rows) with ``split`` again: ``train`` for the validation
    model, ``test`` for validation (each user's share, and every row of the pseudo-cold
    items)."""
    return split_interactions(
        train.drop(C.SPLIT),
        holdout="time" if holdout == "time" else "random",
        fraction=fraction,
        seed=seed,
        cold_item_fraction=pseudo_cold,
    )


def sampled(users: DataFrame, n_users: int, max_users: int, seed: int) -> DataFrame:
    """About ``max_users`` of ``users(user_idx)`` by a seeded hash (all when fewer)."""
    if n_users <= max_users:
        return users
    bucket = F.pmod(
        F.xxhash64(F.lit(seed), F.lit("validation"), F.col(C.USER_IDX)), F.lit(SAMPLE_BUCKETS)
    )
    return users.filter(bucket < F.lit(int(SAMPLE_BUCKETS * max_users / n_users)))


def build_validation(
    interactions: DataFrame, cfg: Config, checkpoint_dir: str, *, n_cold: int, n_items: int
) -> ValidationSet:
    """Carve the validation split from the training rows of ``interactions`` and fit the
    validation model on the rest (the run's ``wals`` settings)."""
    v = cfg.validation
    share = pseudo_cold_share(v.pseudo_cold_fraction, n_cold, n_items)
    train = interactions.filter(F.col(C.SPLIT) == C.TRAIN)
    rows = validation_rows(
        train,
        holdout=cfg.split.holdout,
        fraction=cfg.split.fraction,
        seed=v.seed,
        pseudo_cold=share,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    fit = rows.filter(F.col(C.SPLIT) == C.TRAIN)
    user_factors, item_factors = fit_factors(fit, cfg.wals, checkpoint_dir)
    user_factors = user_factors.select(
        F.col("id").alias(C.USER_IDX), F.col("features").alias(C.FACTORS)
    )
    item_factors = item_factors.select(
        F.col("id").alias(C.ITEM_IDX), F.col("features").alias(C.FACTORS)
    ).localCheckpoint()
    held_all = rows.filter(F.col(C.SPLIT) == C.TEST).select(C.USER_IDX, C.ITEM_IDX)
    held_users = held_all.select(C.USER_IDX).distinct().join(user_factors, C.USER_IDX)
    n_held_users = held_users.count()
    users = sampled(held_users, n_held_users, v.max_users, v.seed).localCheckpoint()
    held = held_all.join(users.select(C.USER_IDX), C.USER_IDX, "left_semi").localCheckpoint()
    seen = (
        fit.select(C.USER_IDX, C.ITEM_IDX)
        .join(users.select(C.USER_IDX), C.USER_IDX, "left_semi")
        .localCheckpoint()
    )
    pseudo_cold = (
        train.select(C.ITEM_IDX)
        .distinct()
        .filter(cold_item_flag(train, fraction=share, seed=v.seed))
        .localCheckpoint()
    )
    item_counts = fit.groupBy(C.ITEM_IDX).agg(F.count(F.lit(1)).alias("n")).localCheckpoint()
    counts = {
        "pseudo_cold_fraction": round(share, 4),
        "pseudo_cold_items": pseudo_cold.count(),
        "fit_rows": fit.count(),
        "validation_rows": held_all.count(),
        "scored_users": users.count(),
        "scored_pairs": held.count(),
    }
    rows.unpersist()
    storage.delete(held.sparkSession, checkpoint_dir)
    return ValidationSet(
        users,
        item_factors,
        seen,
        held,
        pseudo_cold,
        item_counts,
        counts,
        user_factors=user_factors,
        fit=fit.select(C.USER_IDX, C.ITEM_IDX),
    )


def metric_and_error(
    lists: DataFrame,
    held: DataFrame,
    metric: str,
    k: int,
    by: str,
    groups: list[int],
) -> dict[int, tuple[float, float]]:
    """For each of ``groups`` (values of ``by``): ``metric`` (``recall@K`` or ``ndcg@K``, K
    cut to ``k``) of ``lists(by, user_idx, item_idx, rank)`` against ``held(user_idx,
    item_idx)``, averaged over the users of ``held`` (a user without a list or a hit counts
    0, as in :func:`model.metrics.ranking_metrics`), and the standard error of its paired
    per-user difference from the first group's, ``√(var(d) / n)`` with ``d`` the
    users' differences (users without hits count 0 on both sides). Three small
    aggregations over the users' values, whatever the number of groups."""
    name, cut = metric_cut(metric) or ("recall", 20)
    cut = min(cut, k)
    held = held.select(C.USER_IDX, C.ITEM_IDX).distinct()
    n_rel = held.groupBy(C.USER_IDX).agg(F.count(F.lit(1)).alias("n_rel"))
    n_users = n_rel.count()
    hits = (
        lists.filter(F.col(C.RANK) <= cut)
        .join(held, [C.USER_IDX, C.ITEM_IDX])
        .join(n_rel, C.USER_IDX)
    )
    if name == "recall":
        per_user = F.count(F.lit(1)) / F.least(F.first("n_rel"), F.lit(cut))
    else:
        dcg = F.sum(F.lit(1.0) / F.log2(F.col(C.RANK).cast("double") + 1))
        per_user = dcg / ideal_dcg(F.first("n_rel"), cut)
    values = hits.groupBy(by, C.USER_IDX).agg(per_user.alias("v")).localCheckpoint()
    sums = {
        int(r[by]): (float(r["s"]), float(r["s2"]))
        for r in values.groupBy(by)
        .agg(F.sum("v").alias("s"), F.sum(F.col("v") ** 2).alias("s2"))
        .collect()
    }
    first = values.filter(F.col(by) == groups[0]).select(C.USER_IDX, F.col("v").alias("v0"))
    cross = {
        int(r[by]): float(r["x"])
        for r in values.join(first, C.USER_IDX)
        .groupBy(by)
        .agg(F.sum(F.col("v") * F.col("v0")).alias("x"))
        .collect()
    }
    values.unpersist()
    out = {}
    s0, q0 = sums.get(groups[0], (0.0, 0.0))
    for g in groups:
        s, q = sums.get(g, (0.0, 0.0))
        if not n_users:
            out[g] = (0.0, 0.0)
            continue
        mean_d = (s - s0) / n_users
        mean_d2 = (q + q0 - 2 * cross.get(g, 0.0)) / n_users
        out[g] = (s / n_users, math.sqrt(max(mean_d2 - mean_d**2, 0.0) / n_users))
    return out
