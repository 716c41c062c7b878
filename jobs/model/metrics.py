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

from collections.abc import Iterable
from functools import reduce

from pyspark import StorageLevel
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
    key = ("", "")
    scored = ranking_metrics_by_list(
        {key: lists}, {"": relevant}, ks, n_catalog_items={"": n_catalog_items},
        cold_items=cold_items,
    )  # fmt: skip
    return scored[key]


def ranking_metrics_by_list(
    lists: dict[tuple[str, str], DataFrame],
    relevant: dict[str, DataFrame],
    ks: tuple[int, ...] | list[int],
    *,
    n_catalog_items: dict[str, int],
    cold_items: DataFrame | None = None,
) -> dict[tuple[str, str], dict[str, float]]:
    """:func:`ranking_metrics` of many lists in one Spark job chain instead of a few jobs
    per list: ``lists`` keyed by ``(segment, method)``, each scored against
    ``relevant[segment]`` with ``n_catalog_items[segment]`` items in its universe.

    The lists are tagged, unioned and cached once; one grouped pass computes every list's
    per-user sums, means and coverage, collected together.
    """
    spark = next(iter(lists.values())).sparkSession
    tagged = _tagged(
        (
            df.select(C.USER_IDX, C.ITEM_IDX, F.col(C.RANK).cast("int").alias(C.RANK)),
            {SEGMENT: segment, METHOD: method},
        )
        for (segment, method), df in lists.items()
    ).persist(StorageLevel.MEMORY_AND_DISK)
    used = sorted({segment for segment, _ in lists})
    pairs = _tagged(
        (relevant[s].select(C.USER_IDX, C.ITEM_IDX).distinct(), {SEGMENT: s}) for s in used
    )
    n_rel = pairs.groupBy(SEGMENT, C.USER_IDX).agg(F.count(F.lit(1)).alias("n_rel"))
    methods = spark.createDataFrame(list(lists), f"{SEGMENT} string, {METHOD} string")
    per_user = (
        n_rel.join(F.broadcast(methods), SEGMENT)
        .join(_per_user_sums(tagged, pairs, n_rel, ks, cold_items), LIST_KEY + [C.USER_IDX], "left")
        .fillna(0)
    )
    means = per_user.groupBy(*LIST_KEY).agg(*_means(ks))
    coverage = tagged.groupBy(*LIST_KEY).agg(
        *[
            F.countDistinct(F.when(F.col(C.RANK) <= k, F.col(C.ITEM_IDX))).alias(f"_distinct_{k}")
            for k in ks
        ]
    )
    rows = {
        (r[SEGMENT], r[METHOD]): r.asDict()
        for r in means.join(coverage, LIST_KEY, "full").collect()
    }
    tagged.unpersist()
    return {key: _list_result(rows.get(key, {}), ks, n_catalog_items[key[0]]) for key in lists}


SEGMENT = "_segment"
METHOD = "_method"
LIST_KEY = [SEGMENT, METHOD]


def _tagged(parts: Iterable[tuple[DataFrame, dict[str, str]]]) -> DataFrame:
    """The union of DataFrames, each with constant string columns naming where it came from."""
    frames = [
        df.select(*[F.lit(v).alias(k) for k, v in tags.items()], *df.columns) for df, tags in parts
    ]
    return reduce(DataFrame.unionByName, frames)


def _per_user_sums(
    tagged: DataFrame,
    pairs: DataFrame,
    n_rel: DataFrame,
    ks: tuple[int, ...] | list[int],
    cold_items: DataFrame | None,
) -> DataFrame:
    """Per (list, evaluated user): hits, DCG, AP terms, slots and cold slots at each K."""
    marked = (
        tagged.join(n_rel, [SEGMENT, C.USER_IDX])
        .join(pairs.withColumn("hit", F.lit(1)), [SEGMENT, C.USER_IDX, C.ITEM_IDX], "left")
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
        Window.partitionBy(*LIST_KEY, C.USER_IDX)
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
    return marked.groupBy(*LIST_KEY, C.USER_IDX).agg(*per_user_aggs)


def _means(ks: tuple[int, ...] | list[int]) -> list[F.Column]:
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
    return means + [F.count(F.lit(1)).alias("users"), F.sum("n_rel").alias("relevant")]


def _list_result(
    row: dict, ks: tuple[int, ...] | list[int], n_catalog_items: int
) -> dict[str, float]:
    """One list's figures from its collected row (empty: a segment without evaluated users)."""
    names = [f"{m}@{k}" for k in ks for m in METRICS if m != "coverage"]
    result: dict[str, float] = {name: float(row.get(name) or 0.0) for name in names}
    result["users"] = int(row.get("users") or 0)
    result["relevant"] = int(row.get("relevant") or 0)
    for k in ks:
        distinct = row.get(f"_distinct_{k}") or 0
        result[f"coverage@{k}"] = distinct / n_catalog_items if n_catalog_items else 0.0
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
