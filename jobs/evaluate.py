"""Stage ``evaluate``: ranking metrics of the run's lists on the held-out split, against a
popularity baseline scored on the same split. Writes ``metrics.json`` in the run directory
and prints a table."""

from __future__ import annotations

import json
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import columns as C
from jobs import storage, tables
from jobs.config import Config, RecommendConfig
from jobs.errors import ConfigError
from jobs.metrics import format_table, ranking_metrics
from jobs.recommend import seen_items, top_k_lists


def popularity_lists(
    interactions: DataFrame, users: DataFrame, items: DataFrame, rc: RecommendConfig, k: int
) -> DataFrame:
    """Most popular training items per user, the user's own training items excluded.

    Scored by the same blocked top-k as the model: users get the vector [1] and items
    [training count], so ties are broken the same way (by item index).
    """
    train = interactions.filter(F.col(C.SPLIT) == C.TRAIN)
    counts = train.groupBy(C.ITEM_IDX).agg(F.count(F.lit(1)).alias("n"))
    item_vectors = items.join(counts, C.ITEM_IDX, "left").select(
        C.ITEM_IDX, F.array(F.coalesce(F.col("n"), F.lit(0)).cast("float")).alias(C.FACTORS)
    )
    user_vectors = users.select(C.USER_IDX, F.array(F.lit(1.0).cast("float")).alias(C.FACTORS))
    return top_k_lists(user_vectors, item_vectors, seen_items(interactions), rc, k=k)


def lists_by_index(recs: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """Published-form lists ``(user_id, rank, item_id, score)`` back on indexes."""
    return recs.join(users, C.USER_ID).join(items, C.ITEM_ID).select(C.USER_IDX, C.ITEM_IDX, C.RANK)


def evaluate_lists(
    lists: dict[str, DataFrame], test: DataFrame, ks: tuple[int, ...], n_catalog_items: int
) -> dict[str, dict[str, float]]:
    return {
        name: ranking_metrics(df, test, ks, n_catalog_items=n_catalog_items)
        for name, df in lists.items()
    }


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    if cfg.split.holdout == "none":
        raise ConfigError(
            "evaluate: split.holdout is none, so nothing was held out; "
            "set split.holdout=random or time and run prepare again"
        )
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    ks = tuple(sorted(cfg.evaluate.ks))
    with tables.stage(spark, run_, "evaluate", cfg) as report:
        interactions = tables.read_table(spark, run_, "interactions")
        users = tables.read_table(spark, run_, "users")
        items = tables.read_table(spark, run_, "items")
        test = interactions.filter(F.col(C.SPLIT) == C.TEST).select(C.USER_IDX, C.ITEM_IDX)
        recs = tables.read_table(spark, run_, "recommendations")
        lists = {
            "wals": lists_by_index(recs, users, items),
            "popularity": popularity_lists(interactions, users, items, cfg.recommend, max(ks)),
        }
        n_catalog = items.count()
        results = evaluate_lists(lists, test, ks, n_catalog)
        model, base = results["wals"], results["popularity"]
        metrics = {
            "protocol": {
                "holdout": cfg.split.holdout,
                "fraction": cfg.split.fraction,
                "seed": cfg.split.seed,
                "ks": list(ks),
                "catalog_items": n_catalog,
            },
            "segments": {
                "all": {
                    "users": model["users"],
                    "relevant": model["relevant"],
                    "methods": results,
                    "lift_over_popularity": {
                        f"recall@{k}": _ratio(model[f"recall@{k}"], base[f"recall@{k}"]) for k in ks
                    },
                }
            },
        }
        storage.write_text(spark, run_.path(tables.METRICS), json.dumps(metrics, indent=2))
        tables.update_manifest(spark, run_, metrics=metrics)
        title = (
            f"segment all: {model['users']:,} users, {model['relevant']:,} held-out interactions"
        )
        print(format_table(title, results, ks), flush=True)
        report["metrics_path"] = run_.path(tables.METRICS)
        report["rows"]["evaluated_users"] = model["users"]
    return metrics


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import run_stage

    return run_stage("evaluate", argv)


if __name__ == "__main__":
    raise SystemExit(main())
