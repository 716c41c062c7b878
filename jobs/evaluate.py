"""Stage ``evaluate``: ranking metrics of the run's lists on the held-out split, per segment
(all, warm items, cold items, held-out users), against baselines scored on the same split,
with the share of list slots that hold cold items (``cold_share@K``). Writes ``metrics.json``
and the report (``report.md``, ``recall_at_k.svg``, see :mod:`runs.report`) in the run
directory and prints a table per segment and a line on the cold items."""

from __future__ import annotations

import json
import time
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config, RecommendConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.model.lists import known_history, seen_items, top_k_lists
from wals_roberta.jobs.model.metrics import format_table, ranking_metrics_by_list
from wals_roberta.jobs.model.wals import fit_wals
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.errors import ConfigError
from wals_roberta.jobs.runs.report import cold_summary, write_report

RANDOM_DIM = 16


def popularity_lists(
    interactions: DataFrame, users: DataFrame, items: DataFrame, rc: RecommendConfig, k: int
) -> DataFrame:
    """Most popular training items of ``items`` per user, the user's own training items
    excluded.

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


def table_sizes(spark: SparkSession, run: tables.Run) -> dict[str, int]:
    """Rows of what decides the segments, counted in one job: ``items``, ``cold`` (projected
    item vectors) and ``trained`` (the other item vectors, or the item factors without
    them), ``fold_in`` (folded-in users)."""
    frames = {"items": tables.read_table(spark, run, "items")}
    if tables.has_table(spark, run, "item_vectors"):
        vectors = tables.read_table(spark, run, "item_vectors")
        is_cold = F.col(C.SOURCE) == "projected"
        frames["cold"] = vectors.filter(is_cold)
        frames["trained"] = vectors.filter(~is_cold)
    else:
        frames["trained"] = tables.read_table(spark, run, "item_factors")
    if tables.has_table(spark, run, "fold_in_factors"):
        frames["fold_in"] = tables.read_table(spark, run, "fold_in_factors")
    named = reduce(
        DataFrame.unionByName,
        [df.select(F.lit(name).alias("_name")) for name, df in frames.items()],
    )
    counted = {r["_name"]: int(r["count"]) for r in named.groupBy("_name").count().collect()}
    return {name: counted.get(name, 0) for name in frames}


def cold_items_of(spark: SparkSession, run: tables.Run) -> DataFrame | None:
    """``(item_idx)`` of the items with a projected vector (text, no training interactions);
    ``None`` when the run has no ``item_vectors`` table."""
    if not tables.has_table(spark, run, "item_vectors"):
        return None
    vectors = tables.read_table(spark, run, "item_vectors")
    return vectors.filter(F.col(C.SOURCE) == "projected").select(C.ITEM_IDX)


def random_lists(
    users: DataFrame, items: DataFrame, rc: RecommendConfig, k: int, seed: int
) -> DataFrame:
    """A seeded random ranking per user: users and items get hash-seeded random vectors, so
    dot products order the items differently for each user, reproducibly."""

    def vector(idx_col: str, salt: str) -> F.Column:
        coords = [
            F.pmod(F.xxhash64(F.lit(seed), F.lit(salt), F.lit(j), F.col(idx_col)), F.lit(1 << 20))
            / F.lit(float(1 << 20))
            - F.lit(0.5)
            for j in range(RANDOM_DIM)
        ]
        return F.array(*[c.cast("float") for c in coords]).alias(C.FACTORS)

    return top_k_lists(
        users.select(C.USER_IDX, vector(C.USER_IDX, "u")),
        items.select(C.ITEM_IDX, vector(C.ITEM_IDX, "i")),
        None,
        rc,
        k=k,
    )


Segment = tuple[int, DataFrame, dict[str, DataFrame]]


def segment_lists(
    spark: SparkSession, run: tables.Run, cfg: Config, k: int, sizes: dict[str, int]
) -> dict[str, Segment]:
    """For each segment with items to rank: (items in its universe, held-out pairs,
    {method: lists}); the first method is the model, the second its baseline. ``sizes``
    are :func:`table_sizes`.

    all: every held-out interaction, the production lists. When the projection stage gave
    some items projected vectors, also warm (held-out interactions on warm items, ranked over
    warm items) and cold (interactions with items unseen in training, ranked over those
    items only).
    With held-out users, new_users: their held-out interactions on trained items, ranked over
    those items, fold-in against popularity and a model trained with them.
    """
    interactions = tables.read_table(spark, run, "interactions")
    users = tables.read_table(spark, run, "users")
    items = tables.read_table(spark, run, "items")
    test = interactions.filter(F.col(C.SPLIT) == C.TEST).select(C.USER_IDX, C.ITEM_IDX)
    recs = lists_by_index(tables.read_table(spark, run, "recommendations"), users, items)
    popularity = popularity_lists(interactions, users, items, cfg.recommend, k)
    segments: dict[str, Segment] = {
        "all": (sizes["items"], test, {"wals": recs, "popularity": popularity})
    }
    seen = seen_items(interactions)
    user_factors = tables.read_table(spark, run, "user_factors").select(C.USER_IDX, C.FACTORS)
    if tables.has_table(spark, run, "fold_in_factors"):
        folded = tables.read_table(spark, run, "fold_in_factors")
        user_factors = user_factors.unionByName(folded.select(C.USER_IDX, C.FACTORS))
    if tables.has_table(spark, run, "item_vectors"):
        vectors = tables.read_table(spark, run, "item_vectors")
        is_cold = F.col(C.SOURCE) == "projected"
        # Without cold items the warm segment would repeat `all`: both are left out then.
        by_source = (
            ("warm", ~is_cold, "popularity", "trained"),
            ("cold", is_cold, "random", "cold"),
        )
        for name, cond, baseline, size in by_source if sizes["cold"] else ():
            universe = vectors.filter(cond)
            pairs = test.join(universe.select(C.ITEM_IDX), C.ITEM_IDX)
            model = top_k_lists(
                user_factors, universe, seen, cfg.recommend, k=k, item_vector_col=C.VECTOR
            )
            if baseline == "popularity":
                base = popularity_lists(interactions, users, universe, cfg.recommend, k)
            else:
                base = random_lists(users, universe, cfg.recommend, k, cfg.split.seed)
            segments[name] = (sizes[size], pairs, {"wals": model, baseline: base})
        trained_items = vectors.filter(~is_cold).select(C.ITEM_IDX, F.col(C.VECTOR))
    else:
        trained_items = tables.read_table(spark, run, "item_factors").select(
            C.ITEM_IDX, F.col(C.FACTORS).alias(C.VECTOR)
        )
    if sizes.get("fold_in", 0):
        segment = new_user_segment(spark, run, cfg, k, interactions, trained_items, seen)
        segments["new_users"] = (sizes["trained"], *segment)
    return {name: segment for name, segment in segments.items() if segment[0]}


def new_user_segment(
    spark: SparkSession,
    run: tables.Run,
    cfg: Config,
    k: int,
    interactions: DataFrame,
    trained_items: DataFrame,
    seen: DataFrame,
) -> tuple[DataFrame, dict[str, DataFrame]]:
    """Held-out pairs and lists of the held-out users: scored by fold-in, against popularity
    and, when ``evaluate.trained_reference``, against the lists of a model trained with
    their given history (same settings and seed), over the same items."""
    folded = tables.read_table(spark, run, "fold_in_factors").select(C.USER_IDX, C.FACTORS)
    new_users = folded.select(C.USER_IDX)
    pairs = (
        interactions.filter(F.col(C.SPLIT) == C.TEST)
        .join(new_users, C.USER_IDX)
        .join(trained_items.select(C.ITEM_IDX), C.ITEM_IDX)
        .select(C.USER_IDX, C.ITEM_IDX)
    )
    methods = {
        "fold_in": top_k_lists(
            folded, trained_items, seen, cfg.recommend, k=k, item_vector_col=C.VECTOR
        ),
        "popularity": popularity_lists(interactions, new_users, trained_items, cfg.recommend, k),
    }
    if cfg.evaluate.trained_reference:
        model = fit_wals(
            known_history(interactions),
            cfg.wals,
            storage.join(run.root, "checkpoints", f"{run.run_id}-reference"),
        )
        ref_users = model.userFactors.select(
            F.col("id").alias(C.USER_IDX), F.col("features").alias(C.FACTORS)
        ).join(new_users, C.USER_IDX)
        ref_items = model.itemFactors.select(
            F.col("id").alias(C.ITEM_IDX), F.col("features").alias(C.FACTORS)
        ).join(trained_items.select(C.ITEM_IDX), C.ITEM_IDX)
        methods["trained"] = top_k_lists(ref_users, ref_items, seen, cfg.recommend, k=k)
    return pairs, methods


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    if cfg.split.holdout == "none":
        raise ConfigError(
            "evaluate: split.holdout is none, so nothing was held out; "
            "set split.holdout=random or time and run prepare again"
        )
    started = time.time()
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    ks = tuple(sorted(cfg.evaluate.ks))
    with tables.stage(spark, run_, "evaluate", cfg) as report:
        results: dict[str, Any] = {}
        sizes = table_sizes(spark, run_)
        segments = segment_lists(spark, run_, cfg, max(ks), sizes)
        scored = ranking_metrics_by_list(
            {(s, m): df for s, (_, _, lists) in segments.items() for m, df in lists.items()},
            {s: pairs for s, (_, pairs, _) in segments.items()},
            ks,
            n_catalog_items={s: n for s, (n, _, _) in segments.items()},
            cold_items=cold_items_of(spark, run_),
        )
        for name, (n_items, _, lists) in segments.items():
            methods = {method: scored[(name, method)] for method in lists}
            model_name, *others = methods
            model = methods[model_name]
            results[name] = {
                "users": model["users"],
                "relevant": model["relevant"],
                "items": n_items,
                "methods": methods,
            }
            if name == "all":  # the catalog: how many of its items are cold
                results[name]["cold_items"] = sizes.get("cold", 0)
            for other in others:
                label = "trained_in_model" if other == "trained" else f"lift_over_{other}"
                results[name][label] = {
                    f"recall@{k}": _ratio(model[f"recall@{k}"], methods[other][f"recall@{k}"])
                    for k in ks
                }
            title = (
                f"segment {name}: {model['users']:,} users, {model['relevant']:,} held-out "
                f"interactions, ranked over {n_items:,} items"
            )
            print(format_table(title, methods, ks), flush=True)
        metrics: dict[str, Any] = {
            "protocol": {
                "holdout": cfg.split.holdout,
                "fraction": cfg.split.fraction,
                "seed": cfg.split.seed,
                "cold_item_fraction": cfg.split.cold_item_fraction,
                "heldout_user_fraction": cfg.split.heldout_user_fraction,
                "ks": list(ks),
            },
            "segments": results,
        }
        summary = cold_summary(metrics)
        if summary is not None:
            print(summary, flush=True)
        storage.write_text(spark, run_.path(tables.METRICS), json.dumps(metrics, indent=2))
        manifest = tables.update_manifest(spark, run_, metrics=metrics)
        report["metrics_path"] = run_.path(tables.METRICS)
        report["rows"]["evaluated_users"] = results["all"]["users"]
        # This stage is still running while its report is written: show its time so far.
        manifest["stages"]["evaluate"].update(
            status="running (at report time)",
            seconds=round(time.time() - started, 3),
            rows=report["rows"],
        )
        written = write_report(spark, run_, metrics, manifest)
        report["report_path"], report["plot_path"] = written["report"], written["plot"]
    return metrics


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.evaluate``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("evaluate", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
