"""Stage ``project``: map text embeddings into the WALS space; build ``item_vectors``.

1. The text map (ridge, kNN or their blend, :mod:`cold.maps`) and the merge of
   projected and WALS scores (:mod:`cold.merge`) are chosen on a validation split
   carved from the training rows (:mod:`cold.validation`), unless the config fixes
   them; what was tried and chosen goes to the manifest.
2. Warm items (at least ``projection.min_interactions`` training interactions) fit the map
   to the run's factors (the ridge ``[embedding, 1] → factors`` by :mod:`model.projection`).
   Then every item gets one vector:
``wals`` (its factors), ``blended`` (``w·v_wals + (1−w)·v_proj``, ``w = n / (n + s)``, when
``projection.blend_shrinkage`` s > 0) or ``projected`` (text but no training interactions).
An item with neither is counted and left out.
3. Each source's vector moments (``score_scale``), from which ``recommend`` puts the two
   sources on each user's scale.
"""

from __future__ import annotations

import time
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.maps import TextMap, choose_map, map_vectors
from wals_roberta.jobs.cold.merge import (
    COLD_SOURCE,
    MIN_SCALE_ITEMS,
    WARM_SOURCE,
    Merge,
    Moments,
    configured_merge,
    moments_frame,
    vector_moments,
)
from wals_roberta.jobs.cold.merge_choice import validate_merge
from wals_roberta.jobs.cold.validation import build_validation
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.columns import EMBEDDING
from wals_roberta.jobs.model.projection import (
    FIT,
    HELD_OUT,
    accumulate_stats,
    choose_lambda,
    project_embeddings,
    ridge_solutions,
    warm_items,
    weights_frame,
)
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.errors import InputDataError

PROJECTED = "projected"


def _dot(a: Column, b: Column) -> Column:
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, v: acc + v)


def mean_cosine(df: DataFrame, a: str, b: str) -> float:
    cos = _dot(F.col(a), F.col(b)) / F.sqrt(_dot(F.col(a), F.col(a)) * _dot(F.col(b), F.col(b)))
    return float(df.agg(F.avg(cos)).first()[0] or 0.0)


def build_item_vectors(
    items: DataFrame,
    factors: DataFrame,
    projected: DataFrame,
    train_counts: DataFrame,
    *,
    blend_shrinkage: float,
) -> DataFrame:
    """``(item_idx, item_id, vector, source)`` for every item that has a vector."""
    joined = (
        items.select(C.ITEM_IDX, C.ITEM_ID)
        .join(factors.select(C.ITEM_IDX, C.FACTORS), C.ITEM_IDX, "left")
        .join(projected.select(C.ITEM_IDX, PROJECTED), C.ITEM_IDX, "left")
        .join(train_counts, C.ITEM_IDX, "left")
        .withColumn("n_train", F.coalesce(F.col("n_train"), F.lit(0)))
    )
    has_wals = F.col(C.FACTORS).isNotNull()
    has_proj = F.col(PROJECTED).isNotNull()
    if blend_shrinkage > 0:
        w = F.col("n_train") / (F.col("n_train") + F.lit(blend_shrinkage))
        blended = F.zip_with(
            F.col(C.FACTORS), F.col(PROJECTED), lambda x, y: (x * w + y * (1 - w)).cast("float")
        )
        vector = F.when(has_wals & has_proj, blended).when(has_wals, F.col(C.FACTORS))
        source = F.when(has_wals & has_proj, F.lit("blended")).when(has_wals, F.lit("wals"))
    else:
        vector = F.when(has_wals, F.col(C.FACTORS))
        source = F.when(has_wals, F.lit("wals"))
    vector = vector.when(has_proj, F.col(PROJECTED))
    source = source.when(has_proj, F.lit("projected"))
    return joined.select(
        C.ITEM_IDX, C.ITEM_ID, vector.alias(C.VECTOR), source.alias(C.SOURCE)
    ).filter(F.col(C.VECTOR).isNotNull())


def needs_validation(cfg: Config) -> bool:
    """Whether anything is chosen on validation: a map other than a fixed ridge (whose λ is
    then chosen by R²), or ``recommend.merge: auto``."""
    return cfg.projection.map != "ridge" or cfg.recommend.merge == "auto"


def choose_on_validation(
    spark: SparkSession,
    run: tables.Run,
    cfg: Config,
    interactions: DataFrame,
    embeddings: DataFrame,
    *,
    n_cold: int,
    n_items: int,
    dim: int,
    base_lambda: float,
) -> tuple[TextMap | None, Merge | None, Moments | None, dict[str, Any]]:
    """The text map and the merge chosen on the validation split (:mod:`cold.validation`),
    the pseudo-cold vectors' moments, and what was tried; ``None``s when validation has no
    pseudo-cold pairs to rank."""
    checkpoints = storage.join(run.root, "checkpoints", f"{run.run_id}-validation")
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 2)
        clock[0] = now

    val = build_validation(interactions, cfg, checkpoints, n_cold=n_cold, n_items=n_items)
    lap("split_and_model")
    record: dict[str, Any] = {
        "counts": val.counts,
        "metric": cfg.validation.metric,
        "seconds_by_step": seconds,
    }
    if not val.counts["pseudo_cold_items"] or not val.counts["scored_pairs"]:
        record["skipped"] = "no pseudo-cold items or validation pairs to rank"
        val.release()
        return None, None, None, record
    text_map, maps_tried, pseudo = choose_map(
        val, embeddings, cfg, dim=dim, base_lambda=base_lambda
    )
    lap("maps")
    merge, merges_tried, cold_moments = validate_merge(val, pseudo, cfg)
    lap("merges")
    record.update(
        maps_tried=maps_tried,
        map_chosen=text_map.label(),
        merges_tried=merges_tried,
        merge_chosen=merge.label(),
    )
    pseudo.unpersist()
    val.release()
    return text_map, merge, cold_moments, record


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    p = cfg.projection
    with tables.stage(spark, run_, "project", cfg) as report:
        interactions = tables.read_table(spark, run_, "interactions")
        items = tables.read_table(spark, run_, "items")
        factors = tables.read_table(spark, run_, "item_factors")
        embeddings = tables.read_table(spark, run_, "item_embeddings")
        train_counts, warm = warm_items(spark, interactions, factors, embeddings, p)
        dim = len(embeddings.select(EMBEDDING).first()[0])
        stats = accumulate_stats(
            warm, emb_col=EMBEDDING, target_col=C.FACTORS, dim=dim, rank=cfg.wals.rank
        )
        if FIT not in stats or HELD_OUT not in stats:
            raise InputDataError(
                "projection: too few warm items with text to fit and check the projection; "
                "lower projection.min_interactions"
            )
        best_r2, r2_by_lambda = choose_lambda(stats[FIT], stats[HELD_OUT], list(p.lambdas))
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        # 1. the map and the merge, chosen on validation (or fixed by the config)
        cold_ids = embeddings.select(C.ITEM_IDX).join(factors, C.ITEM_IDX, "left_anti")
        n_cold, n_items = cold_ids.count(), items.count()
        text_map = TextMap("ridge", lam=best_r2)
        merge = configured_merge(
            cfg.recommend.merge, cfg.recommend.cold_offset, cfg.recommend.cold_slots
        )
        val_moments = None
        if needs_validation(cfg):
            chosen_map, chosen_merge, val_moments, report["validation"] = choose_on_validation(
                spark, run_, cfg, interactions, embeddings.select(C.ITEM_IDX, EMBEDDING),
                n_cold=n_cold, n_items=n_items, dim=dim, base_lambda=best_r2,
            )  # fmt: skip
            text_map = chosen_map or text_map
            merge = chosen_merge or merge
        seconds["choice"] = round(time.perf_counter() - started, 2)
        lam = text_map.lam if text_map.lam is not None else best_r2
        w_fit = ridge_solutions(stats[FIT], [lam])[0]
        held = project_embeddings(
            warm.filter(F.col("fold") == HELD_OUT), w_fit, emb_col=EMBEDDING, out_col=PROJECTED
        )
        held_cosine = mean_cosine(held, PROJECTED, C.FACTORS)
        w = ridge_solutions(stats[FIT] + stats[HELD_OUT], [lam])[0]
        # 2. every item's vector: the map for items without factors (ridge for the warm
        # items' blend, projection.blend_shrinkage)
        projected = project_embeddings(embeddings, w, emb_col=EMBEDDING, out_col=PROJECTED)
        if text_map.kind != "ridge":
            neighbours = warm.select(C.ITEM_IDX, EMBEDDING, C.FACTORS)
            cold_vectors = map_vectors(
                text_map,
                embeddings.join(cold_ids, C.ITEM_IDX).select(C.ITEM_IDX, EMBEDDING),
                neighbours,
                w,
                items_per_block=cfg.recommend.items_per_block,
                broadcast_max_mb=cfg.recommend.broadcast_max_mb,
            ).withColumnRenamed(C.VECTOR, PROJECTED)
            projected = (
                projected.join(cold_ids, C.ITEM_IDX, "left_anti")
                .select(C.ITEM_IDX, PROJECTED)
                .unionByName(cold_vectors)
            )
        vectors = build_item_vectors(
            items, factors, projected, train_counts, blend_shrinkage=p.blend_shrinkage
        )
        report["rows"]["item_vectors"] = tables.write_table(spark, run_, "item_vectors", vectors)
        warm.unpersist()
        # W itself, so a later refresh projects new items the same way without refitting.
        report["rows"]["projection"] = tables.write_table(
            spark, run_, "projection", weights_frame(spark, w)
        )
        written = tables.read_table(spark, run_, "item_vectors")
        seconds["item_vectors"] = round(time.perf_counter() - started - sum(seconds.values()), 2)
        # 3. each source's moments: the per-user scales of the merge (kept for refresh)
        scale = source_moments(written, val_moments)
        if scale is not None:
            report["rows"]["score_scale"] = tables.write_table(
                spark, run_, "score_scale", moments_frame(spark, scale)
            )
        by_source = {
            r[C.SOURCE]: int(r["count"]) for r in written.groupBy(C.SOURCE).count().collect()
        }
        report["counts"] = {
            "by_source": by_source,
            "items_without_vector": n_items - sum(by_source.values()),
        }
        report["fit"] = {
            "lambda": lam,
            "lambda_by_r2": best_r2,
            "held_out_r2_by_lambda": {str(k): round(v, 4) for k, v in r2_by_lambda.items()},
            "held_out_r2": round(r2_by_lambda[lam], 4),
            "held_out_mean_cosine": round(held_cosine, 4),
            "warm_items_fit": stats[FIT].n,
            "warm_items_held_out": stats[HELD_OUT].n,
            "embedding_dim": dim,
        }
        seconds["moments_and_counts"] = round(
            time.perf_counter() - started - sum(seconds.values()), 2
        )
        report["seconds_by_step"] = seconds
        report["map"] = text_map.to_dict()
        report["merge"] = merge.to_dict()
    return report


def source_moments(item_vectors: DataFrame, val_cold: Moments | None) -> dict[str, Moments] | None:
    """Moments of the warm vectors and of the cold (projected) ones; with fewer than
    MIN_SCALE_ITEMS cold items, the validation's pseudo-cold moments stand for the cold side.
    None when either side has none."""
    is_cold = F.col(C.SOURCE) == "projected"
    warm = vector_moments(item_vectors.filter(~is_cold), C.VECTOR)
    cold = vector_moments(item_vectors.filter(is_cold), C.VECTOR)
    if cold is None or cold.n < MIN_SCALE_ITEMS:
        cold = val_cold or cold
    if warm is None or cold is None:
        return None
    return {WARM_SOURCE: warm, COLD_SOURCE: cold}


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.project_items``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("project", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
