"""The choice of the merge (:mod:`cold.merge`) on the validation split.

The validation users' warm lists (validation model, its training pairs excluded) and their
lists of the pseudo-cold items (the chosen text map) are merged under every setting of the
grid, as production merges them, and scored against the held-out pairs in one pass: the
settings are a broadcast table, the candidates are scored under each without a second
top-k. Anything but raw is kept only when it beats raw by ``validation.min_gain`` and by
MIN_Z standard errors of the paired per-user difference.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.merge import (
    COLD,
    Merge,
    Moments,
    configured_merge,
    merged_rows,
    scale_columns,
    select_merged,
    vector_moments,
)
from wals_roberta.jobs.cold.validation import ValidationSet, metric_and_error
from wals_roberta.jobs.config import Config, metric_cut
from wals_roberta.jobs.data import columns as C
from wals_roberta.udfs.topk import recommend_top_k

SETTING = "setting"
# Offsets tried by auto, in warm standard deviations; slots tried as shares of k.
OFFSETS = (-2.0, -1.5, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5)
SLOT_SHARES = (0.0, 0.1, 0.2, 0.3)
# A merge other than raw must beat it by this many standard errors of the paired per-user
# difference on validation: a gain within the noise of a few thousand users is not kept.
MIN_Z = 2.0


def merge_grid(k: int, cold_slots: int | None, cut: int) -> list[Merge]:
    """Raw first, then standardize at every offset, each with every slot count (the
    configured ``cold_slots`` only, when set). Reserved items are placed by score, so a
    count of at most ``k − cut`` leaves the top ``cut`` places (all the metric reads) as
    they are without it: only larger counts are tried."""
    if cold_slots is not None:
        slots = [cold_slots]
    else:
        shares = {int(round(share * k)) for share in SLOT_SHARES}
        slots = sorted({0} | {c for c in shares if c > k - cut})
    grid = [Merge("raw", 0.0, s) for s in slots]
    grid += [Merge("standardize", off, s) for off in OFFSETS for s in slots]
    return grid


def candidate_lists(
    warm_lists: DataFrame, cold_lists: DataFrame, scales: DataFrame, grid: list[Merge], k: int
) -> DataFrame:
    """``(setting, user_idx, item_idx, rank)``: the lists every merge of ``grid`` makes from
    the same candidates (raw scores; ``scales`` per user from :func:`scale_columns`): the
    settings are a broadcast table, the candidates scored under each without a second
    top-k."""
    spark = warm_lists.sparkSession
    settings = spark.createDataFrame(
        [(i, m.method == "standardize", m.offset, m.cold_slots) for i, m in enumerate(grid)],
        f"{SETTING} int, _std boolean, _offset double, _slots int",
    )
    sd_c = F.col("sd_c")
    a = F.when(sd_c > 1e-12, F.col("sd_w") / sd_c).otherwise(F.lit(1.0))
    standardized = (
        a * F.col(C.SCORE) + F.col("m_w") - a * F.col("m_c") + F.col("_offset") * F.col("sd_w")
    )
    rows = merged_rows(warm_lists, cold_lists.join(scales, C.USER_IDX)).crossJoin(
        F.broadcast(settings)
    )
    score = F.when(F.col(COLD) & F.col("_std"), standardized).otherwise(F.col(C.SCORE))
    rows = rows.withColumn(C.SCORE, score.cast("double"))
    picked = select_merged(
        rows.select(SETTING, C.USER_IDX, C.ITEM_IDX, C.SCORE, COLD, "_slots"),
        k,
        F.col("_slots"),
        keys=(SETTING,),
    )
    return picked.select(SETTING, C.USER_IDX, C.ITEM_IDX, C.RANK)


def choose_merge(
    scores: dict[int, float], errors: dict[int, float], min_gain: float, z: float = MIN_Z
) -> int:
    """The index of the best merge among those that beat the first (raw) by ``min_gain``
    (relative) and by ``z`` standard errors of the paired per-user difference (``errors``);
    the first when none does. Ties go to the earlier setting."""
    base = scores[0]
    clear = [
        i
        for i in scores
        if i == 0 or (scores[i] >= base * (1 + min_gain) and scores[i] - base >= z * errors[i])
    ]
    return max(clear, key=lambda i: (scores[i], -i))


def validate_merge(
    val: ValidationSet, pseudo_vectors: DataFrame, cfg: Config
) -> tuple[Merge, list[dict], Moments]:
    """Choose the merge on validation: the validation users' warm lists (validation model,
    its training pairs excluded) and their lists of the pseudo-cold items
    (``pseudo_vectors(item_idx, vector)``, the chosen map) are merged under every setting of
    :func:`merge_grid` and scored against the held-out pairs; returns the choice, every
    setting with its figure, and the pseudo-cold vectors' moments."""
    rc, k = cfg.recommend, cfg.recommend.k
    cut = min(k, _cut(cfg.validation.metric))
    if rc.merge == "auto":
        grid = merge_grid(k, rc.cold_slots, cut)
    else:
        fixed = configured_merge(rc.merge, rc.cold_offset, rc.cold_slots)
        grid = [Merge("raw", 0.0, fixed.cold_slots), fixed]
    # Only the top `cut` places are scored: each source's best `cut` candidates decide them,
    # and the cold side's best `cold_slots` where more are reserved.
    depth = {"warm": cut, "cold": max(cut, *(m.cold_slots for m in grid))}
    blocks = {
        "users_per_block": rc.users_per_block,
        "items_per_block": rc.items_per_block,
        "broadcast_max_mb": rc.broadcast_max_mb,
    }
    warm_lists = recommend_top_k(
        val.users, val.item_factors, k=depth["warm"], seen=val.seen, **blocks
    ).localCheckpoint()
    cold_lists = recommend_top_k(
        val.users, pseudo_vectors, k=depth["cold"], item_vector_col=C.VECTOR, **blocks
    ).localCheckpoint()
    warm = vector_moments(val.item_factors, C.FACTORS)
    cold = vector_moments(pseudo_vectors, C.VECTOR)
    scales = scale_columns(val.users, warm, cold).localCheckpoint()
    lists = candidate_lists(warm_lists, cold_lists, scales, grid, k).localCheckpoint()
    figures = metric_and_error(
        lists, val.held, cfg.validation.metric, k, SETTING, list(range(len(grid)))
    )
    scores = {i: mean for i, (mean, _) in figures.items()}
    errors = {i: error for i, (_, error) in figures.items()}
    shares = cold_shares(lists, val.pseudo_cold, cut)
    best = choose_merge(scores, errors, cfg.validation.min_gain) if rc.merge == "auto" else 1
    tried = [
        {
            "merge": m.to_dict(),
            "label": m.label(),
            "value": round(scores[i], 6),
            "standard_error_vs_raw": round(errors[i], 6),
            "cold_share": round(shares.get(i, 0.0), 6),
        }
        for i, m in enumerate(grid)
    ]
    for df in (warm_lists, cold_lists, scales, lists):
        df.unpersist()
    return grid[best], tried, cold


def _cut(metric: str) -> int:
    return (metric_cut(metric) or ("recall", 20))[1]


def cold_shares(lists: DataFrame, cold_items: DataFrame, k: int) -> dict[int, float]:
    """Per setting: the share of list slots at rank ≤ k that hold a cold item."""
    marked = lists.filter(F.col(C.RANK) <= k).join(
        cold_items.select(C.ITEM_IDX, F.lit(1.0).alias("_c")), C.ITEM_IDX, "left"
    )
    rows = marked.groupBy(SETTING).agg(F.avg(F.coalesce(F.col("_c"), F.lit(0.0))).alias("s"))
    return {int(r[SETTING]): float(r["s"]) for r in rows.collect()}
