"""Ranking metrics at cut-offs K, computed in Spark from explicitly ranked lists.

For a user with relevant set R (held-out items) and list L ranked 1..k:
- Recall@K = hits@K / min(|R|, K)
- Precision@K = hits@K / K
- NDCG@K = DCG@K / IDCG@K, binary relevance, DCG = Σ_{hit at rank i ≤ K} 1 / log2(i + 1)
- MAP@K = (Σ_{hit at rank i ≤ K} hits@i / i) / min(|R|, K)
- HitRate@K = 1 if hits@K > 0
Each is averaged over users with at least one relevant item; a user without a list
scores 0. Coverage@K = distinct items in the top K of the lists / catalog size.
ColdShare@K = list slots at rank ≤ K holding a cold item / list slots at rank ≤ K, over the
lists of the evaluated users together (a slot-weighted share, not a mean of per-user
shares); 0 without cold items or without slots.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from wals_roberta.jobs.data import columns as C

METRICS = ("recall", "precision", "ndcg", "map", "hit_rate", "coverage", "cold_share")


def ideal_dcg(n_relevant: F.Column, k: int) -> F.Column:
    positions = F.sequence(F.lit(1), F.least(n_relevant, F.lit(k)))
    return F.aggregate(
        positions, F.lit(0.0), lambda acc, i: acc + F.lit(1.0) / F.log2(i.cast("double") + 1)
    )


def ranking_metrics(
    lists: DataFrame,
    relevant: DataFrame,
    ks: tuple[int, ...] | list[int],
    *,
    n_catalog_items: int,
    cold_items: DataFrame | None = None,
) -> dict[str, float]:
    """Metrics for ``lists(user_idx, item_idx, rank)`` against ``relevant(user_idx, item_idx)``.

    Args:
        lists: Ranked lists, rank from 1.
        relevant: Held-out pairs; users with at least one are the evaluated users.
        ks: Cut-offs K.
        n_catalog_items: Size of the item universe the lists were ranked over (coverage).
        cold_items: ``(item_idx)`` of the cold items (no training interactions), for
            ``cold_share@K``; ``None`` means there are none.

    Returns:
        ``{"recall@10": ..., "cold_share@10": ..., ...}`` plus ``users`` (evaluated) and
        ``relevant`` (pairs).
    """
    relevant = relevant.select(C.USER_IDX, C.ITEM_IDX).distinct()
    n_rel = relevant.groupBy(C.USER_IDX).agg(F.count(F.lit(1)).alias("n_rel"))
    marked = (
        lists.select(C.USER_IDX, C.ITEM_IDX, C.RANK)
        .join(n_rel, C.USER_IDX)
        .join(relevant.withColumn("hit", F.lit(1)), [C.USER_IDX, C.ITEM_IDX], "left")
        .withColumn("hit", F.coalesce(F.col("hit"), F.lit(0)))
    )
    if cold_items is None:
        marked = marked.withColumn("cold", F.lit(0))
    else:
        cold = cold_items.select(C.ITEM_IDX).distinct().withColumn("cold", F.lit(1))
        marked = marked.join(cold, C.ITEM_IDX, "left").withColumn(
            "cold", F.coalesce(F.col("cold"), F.lit(0))
        )
    running = (
        Window.partitionBy(C.USER_IDX)
        .orderBy(C.RANK)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    marked = marked.withColumn("hits_so_far", F.sum("hit").over(running))
    per_user_aggs = []
    for k in ks:
        within = F.col(C.RANK) <= k
        per_user_aggs += [
            F.sum(F.when(within, F.col("hit")).otherwise(0)).alias(f"hits_{k}"),
            F.sum(
                F.when(within, F.col("hit") / F.log2(F.col(C.RANK).cast("double") + 1)).otherwise(
                    0.0
                )
            ).alias(f"dcg_{k}"),
            F.sum(
                F.when(
                    within & (F.col("hit") == 1), F.col("hits_so_far") / F.col(C.RANK)
                ).otherwise(0.0)
            ).alias(f"ap_{k}"),
            F.sum(F.when(within, 1).otherwise(0)).alias(f"slots_{k}"),
            F.sum(F.when(within, F.col("cold")).otherwise(0)).alias(f"cold_{k}"),
        ]
    per_user = n_rel.join(
        marked.groupBy(C.USER_IDX).agg(*per_user_aggs), C.USER_IDX, "left"
    ).fillna(0)
    means = []
    for k in ks:
        denom = F.least(F.col("n_rel"), F.lit(k))
        hits = F.col(f"hits_{k}")
        means += [
            F.avg(hits / denom).alias(f"recall@{k}"),
            F.avg(hits / F.lit(k)).alias(f"precision@{k}"),
            F.avg(F.col(f"dcg_{k}") / ideal_dcg(F.col("n_rel"), k)).alias(f"ndcg@{k}"),
            F.avg(F.col(f"ap_{k}") / denom).alias(f"map@{k}"),
            F.avg(F.when(hits > 0, 1.0).otherwise(0.0)).alias(f"hit_rate@{k}"),
            # No slots at all: null (ANSI mode refuses x / 0), 0.0 below.
            F.try_divide(F.sum(f"cold_{k}"), F.sum(f"slots_{k}")).alias(f"cold_share@{k}"),
        ]
    means += [F.count(F.lit(1)).alias("users"), F.sum("n_rel").alias("relevant")]
    result = {key: float(v or 0.0) for key, v in per_user.agg(*means).first().asDict().items()}
    result["users"] = int(result["users"])
    result["relevant"] = int(result["relevant"])
    coverage = lists.agg(
        *[F.countDistinct(F.when(F.col(C.RANK) <= k, F.col(C.ITEM_IDX))).alias(str(k)) for k in ks]
    ).first()
    for k in ks:
        result[f"coverage@{k}"] = coverage[str(k)] / n_catalog_items if n_catalog_items else 0.0
    return result


def format_table(title: str, rows: dict[str, dict[str, float]], ks: tuple[int, ...]) -> str:
    """A plain-text table: one line per (metric, method), one column per K."""
    header = f"{'metric':<12}{'method':<14}" + "".join(f"{'@' + str(k):>10}" for k in ks)
    lines = [title, header, "-" * len(header)]
    for metric in METRICS:
        for method, values in rows.items():
            cells = "".join(f"{values.get(f'{metric}@{k}', float('nan')):>10.4f}" for k in ks)
            lines.append(f"{metric:<12}{method:<14}{cells}")
    return "\n".join(lines)
