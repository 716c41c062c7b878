"""Stage ``refresh``: the daily update between full retrains, without training ALS again.

``data.interactions`` (and optionally ``data.items``) name what arrived since the base run
(``refresh.base_run``, default: the run currently published). A new run is written:

1. ids: known users and items keep their indexes, new ones are numbered after them;
   interactions of a known (user, item) pair are merged into it (strengths summed). Only
   the merged and new pairs are written: the run's interactions table is a layer over the
   base run's (``runs.tables.write_layer``), compacted every MAX_LAYERS refreshes; so are
   its users and items tables (the new ids, and the items whose text changed) and, in
   step 3, its user_factors (the folded-in users) and item_vectors (the projected and the
   solved items).
2. text: new or changed item texts are embedded (the embedding cache keeps a text seen
   before from being encoded again; the run's item_embeddings table is a layer over the
   base's); items without interactions get the base run's text map (its W, or its warm
   items as kNN neighbours, :mod:`cold.maps`).
3. users with new interactions are folded in against the item vectors (closed form);
   then items that grew are folded in against the user vectors (the item step of ALS, same
   closed form with the roles swapped): items whose new pairs are at least
   ``refresh.item_growth`` of the pairs they had (default 10%), and items that had none.
   An item that gained less keeps its vector until it grows enough or the weekly retrain:
   under power-law popularity 1% new interactions touch most items, each by a sliver, and
   solving them all again would change every list for almost no gain.
4. re-scoring. A user's list is computed again exactly when it can change:
   the user's vector or seen items changed (new interactions), or their list holds an item
   whose vector changed, or some changed or new item now scores at least their k-th score
   (or their list is shorter than k). Any other user's list is provably the same as a full
   re-score with the new vectors: no item in or above it moved, so it is kept. When half
   or more of the items changed, everyone is re-scored (checking would cost as much).
   Lists are scored under the base run's merge of projected and WALS scores
   (:mod:`cold.merge`, its ``score_scale`` moments), changed cold items checked on
   that scale.
5. the new lists are published atomically. A full retrain stays the weekly path.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from wals_roberta.jobs import embed_items
from wals_roberta.jobs.cold.maps import TextMap, map_vectors
from wals_roberta.jobs.cold.merge import (
    COLD_SOURCE,
    WARM_SOURCE,
    Merge,
    cold_user_vectors,
    read_moments,
    with_bias_column,
)
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.indexing import INT32_MAX, assign_dense_index
from wals_roberta.jobs.data.item_text import TEXT, TEXT_HASH
from wals_roberta.jobs.model.fold_in import fold_in_users
from wals_roberta.jobs.pipeline import publish_run
from wals_roberta.jobs.prepare import confidence_rating, read_catalog, read_interactions
from wals_roberta.jobs.project_items import EMBEDDING, read_weights
from wals_roberta.jobs.recommend import (
    applied_choice,
    known_history,
    scored_lists,
    seen_items,
    with_original_ids,
)
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.errors import ConfigError, InputDataError, RunStateError
from wals_roberta.jobs.runs.session import small
from wals_roberta.udfs.text_encoder import encoder_fingerprint
from wals_roberta.udfs.topk import reaching_pairs

KTH = "kth"
COLD_KTH = "cold_kth"
MOVED = "moved"
# The changed items' vectors are broadcast for the re-score check up to this many floats
# (64 MB); past it so many items changed that every user is re-scored.
MAX_CHECK_FLOATS = 1 << 24


def base_run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> tables.Run:
    """``refresh.base_run``, else the newest run whose publish stage completed, other than
    ``run_id`` (the refresh's own run: a retry of a refresh that already published starts
    again from the same base, not from itself)."""
    if cfg.refresh.base_run:
        run = tables.open_run(spark, cfg, cfg.refresh.base_run, create=False)
        if not tables.has_table(spark, run, "recommendations"):
            raise RunStateError(f"refresh.base_run {run.run_id} has no recommendations table")
        return run
    root = storage.normalize(cfg.output.root)
    for name in reversed(storage.list_names(spark, storage.join(root, "runs"))):
        if name == run_id:
            continue
        run = tables.open_run(spark, cfg, name, create=False)
        stages = tables.read_manifest(spark, run).get("stages", {})
        if stages.get("publish", {}).get("status") == "complete":
            return run
    raise RunStateError(
        f"refresh: no published run under {root}/runs to refresh; run the pipeline first "
        "or set refresh.base_run"
    )


def extend_index(
    known: DataFrame, ids: DataFrame, *, id_col: str, idx_col: str, what: str
) -> tuple[DataFrame, int]:
    """``(id, idx)`` of the ids of ``ids`` that ``known`` lacks, numbered after its largest
    index in id order (no rows when there are none); and how many they are."""
    new = ids.select(id_col).distinct().join(known.select(id_col), id_col, "left_anti")
    new = new.localCheckpoint()
    n_new = new.count()
    if n_new == 0:
        return known.select(id_col, idx_col).limit(0), 0
    start = known.agg(F.max(idx_col)).first()[0]
    start = -1 if start is None else int(start)
    numbered = assign_dense_index(
        new, id_col=id_col, idx_col=idx_col, what=what, max_ids=INT32_MAX - start - 1
    )
    numbered = numbered.select(id_col, (F.col(idx_col) + F.lit(start + 1)).alias(idx_col))
    return numbered, n_new


def changed_item_rows(new_items: DataFrame, texts: DataFrame | None, old: DataFrame) -> DataFrame:
    """The refresh's rows of the items table ``(item_id, item_idx, text, text_hash)``: the
    new items (``new_items``, ``(item_id, item_idx)``), with their text from ``texts`` when
    it has one, and the known items of ``old`` whose text in ``texts`` differs from theirs.
    A catalog row without text never replaces a known text."""
    no_text = [F.lit(None).cast("string").alias(c) for c in (TEXT, TEXT_HASH)]
    if texts is None:
        return new_items.select(C.ITEM_ID, C.ITEM_IDX, *no_text)
    texts = texts.filter(F.col(TEXT_HASH).isNotNull()).select(C.ITEM_ID, TEXT, TEXT_HASH)
    known = old.select(C.ITEM_ID, C.ITEM_IDX, F.col(TEXT_HASH).alias("_old"))
    changed = texts.join(known, C.ITEM_ID).filter(~F.col(TEXT_HASH).eqNullSafe(F.col("_old")))
    return new_items.join(texts, C.ITEM_ID, "left").unionByName(changed.drop("_old"))


def typed_like(df: DataFrame, col: str, like: DataFrame, what: str) -> DataFrame:
    """``df`` with ``col`` cast to its type in ``like``; an id that does not cast is an
    error naming it (e.g. a text id arriving where the base run's ids are integers)."""
    want = like.schema[col].dataType
    if df.schema[col].dataType == want:
        return df
    cast = df.withColumn("_cast", F.col(col).cast(want))
    bad = cast.filter(F.col("_cast").isNull() & F.col(col).isNotNull()).select(col).first()
    if bad is not None:
        raise InputDataError(
            f"{what}: id {bad[0]!r} does not match the base run's {want.simpleString()} ids"
        )
    return cast.drop(col).withColumnRenamed("_cast", col)


def merge_interactions(
    old: DataFrame, new: DataFrame, cfg: Config, *, new_pairs: int | None = None
) -> DataFrame:
    """The rows of the pairs that new ``(user_idx, item_idx, strength, timestamp,
    n_events)`` touch, merged with the base interactions ``old``: a known pair sums
    strengths and events and keeps the latest time and its split; a new pair is training
    data. Ratings follow from the merged strength. Every other base row stays as it is
    (the run's table is a layer over the base's, :func:`runs.tables.write_layer`).

    The base rows of touched pairs come by a semi-join against those pairs, broadcast when
    ``new_pairs`` (the delta's distinct pairs, if known) is small, so the base table is not
    shuffled."""
    cols = [C.USER_IDX, C.ITEM_IDX, C.STRENGTH, C.TIMESTAMP, C.N_EVENTS]
    pairs = [C.USER_IDX, C.ITEM_IDX]
    fresh = (
        new.select(*cols)
        .groupBy(*pairs)
        .agg(
            F.sum(C.STRENGTH).alias(C.STRENGTH),
            F.max(C.TIMESTAMP).alias(C.TIMESTAMP),
            F.sum(C.N_EVENTS).alias(C.N_EVENTS),
        )
        .withColumn(C.SPLIT, F.lit(None).cast("string"))
    )
    keys = fresh.select(*pairs)
    if new_pairs is not None:
        keys = small(keys, new_pairs)
    touched = old.join(keys, pairs, "left_semi").select(*cols, C.SPLIT)
    merged = (
        touched.unionByName(fresh)
        .groupBy(*pairs)
        .agg(
            F.sum(C.STRENGTH).alias(C.STRENGTH),
            F.max(C.TIMESTAMP).alias(C.TIMESTAMP),
            F.sum(C.N_EVENTS).cast("int").alias(C.N_EVENTS),
            F.coalesce(F.max(C.SPLIT), F.lit(C.TRAIN)).alias(C.SPLIT),
        )
    )
    rating = confidence_rating(
        F.col(C.STRENGTH), form=cfg.wals.confidence, log_epsilon=cfg.wals.log_epsilon
    )
    return merged.select(
        C.USER_IDX,
        C.ITEM_IDX,
        C.STRENGTH,
        rating.alias(C.RATING),
        C.TIMESTAMP,
        C.N_EVENTS,
        C.SPLIT,
    )


def items_to_solve(base_interactions: DataFrame, new_rows: DataFrame, growth: float) -> DataFrame:
    """``(item_idx)`` of the items the refresh solves again: those whose new pairs (rows of
    ``new_rows``, one per pair) are at least ``growth`` times their known pairs in the base
    run, and those with no known pairs; with ``growth`` 0, every item in ``new_rows``."""
    gained = new_rows.groupBy(C.ITEM_IDX).agg(F.count(F.lit(1)).alias("_gained"))
    if growth <= 0:
        return gained.select(C.ITEM_IDX)
    gained = gained.localCheckpoint()
    known = (
        known_history(base_interactions)
        .join(small(gained.select(C.ITEM_IDX), gained.count()), C.ITEM_IDX, "left_semi")
        .groupBy(C.ITEM_IDX)
        .agg(F.count(F.lit(1)).alias("_known"))
    )
    return (
        gained.join(known, C.ITEM_IDX, "left")
        .filter(F.col("_known").isNull() | (F.col("_gained") >= F.lit(growth) * F.col("_known")))
        .select(C.ITEM_IDX)
    )


def project_new_items(
    spark: SparkSession,
    base: tables.Run,
    cfg: Config,
    text_map: TextMap,
    queries: DataFrame,
) -> DataFrame:
    """``(item_idx, item_id, vector)`` of ``queries(item_idx, embedding, item_id)`` under the
    base run's map: its W for ridge, its warm items (factors and embeddings, at least
    ``projection.min_interactions`` training pairs) as the neighbours of knn and blend."""
    neighbours = None
    if text_map.uses_knn:
        counts = (
            tables.read_table(spark, base, "interactions")
            .filter(F.col(C.SPLIT) == C.TRAIN)
            .groupBy(C.ITEM_IDX)
            .agg(F.count(F.lit(1)).alias("_n"))
            .filter(F.col("_n") >= cfg.projection.min_interactions)
        )
        neighbours = (
            tables.read_table(spark, base, "item_factors")
            .join(counts, C.ITEM_IDX, "left_semi")
            .join(tables.read_table(spark, base, "item_embeddings"), C.ITEM_IDX)
            .select(C.ITEM_IDX, EMBEDDING, C.FACTORS)
        )
    vectors = map_vectors(
        text_map,
        queries.select(C.ITEM_IDX, EMBEDDING),
        neighbours,
        read_weights(spark, base),
        items_per_block=cfg.recommend.items_per_block,
    )
    return vectors.join(queries.select(C.ITEM_IDX, C.ITEM_ID), C.ITEM_IDX)


def rescore_users(
    user_vectors: DataFrame,
    item_vectors: DataFrame,
    changed_items: DataFrame,
    changed_users: DataFrame,
    old_recs: DataFrame,
    seen: DataFrame | None,
    cfg: Config,
    n_items: int,
    *,
    merge: Merge | None = None,
    moments: dict | None = None,
    cold_ids: DataFrame | None = None,
) -> DataFrame:
    """``(user_idx)`` of the users whose lists can change (the rule in the module doc).

    ``user_vectors`` is ``(user_idx, factors, user_id)``, ``item_vectors`` ``(item_idx,
    item_id, vector[, source])``, ``old_recs`` the base run's lists as published ``(user_id,
    rank, item_id, score)``: they are read by original id, once, for each user's k-th score and
    whether the list holds a changed item; never mapped row by row.

    The changed items' vectors are broadcast and every other user's vector is scored
    against them in one pass (:func:`udfs.topk.reaching_pairs`), which yields the pairs
    reaching the user's k-th score; only those pairs are looked up among the seen ones (a
    seen item never enters a list). Under a merge other than plain raw scores
    (:mod:`cold.merge`), changed cold items are checked on the merged scale (the user
    vector ``[a·x, c]`` against ``[v, 1]``), against the lower of the k-th score and, with
    reserved slots, the user's ``cold_slots``-th listed cold score (``cold_ids``: the
    ``item_id`` of the base run's cold items). When at least half of the items changed,
    every user is re-scored without the check: it would cost about as much as the re-score
    it saves; so is everyone when the changed vectors are more than MAX_CHECK_FLOATS floats."""
    k = cfg.recommend.k
    merge = merge or Merge()
    n_changed = changed_items.count()
    if n_changed * 2 >= n_items or n_changed * cfg.wals.rank > MAX_CHECK_FLOATS:
        return user_vectors.select(C.USER_IDX)
    # Read once: the lists' flags and the broadcast vectors both start here.
    changed = small(changed_items, n_changed).join(item_vectors, C.ITEM_IDX).localCheckpoint()
    by_source = not merge.is_plain and C.SOURCE in changed.columns
    slots = merge.cold_slots if by_source else 0
    flagged = changed.select(C.ITEM_ID, F.lit(True).alias(MOVED))
    listed = old_recs.join(small(flagged, n_changed), C.ITEM_ID, "left")
    wanted = (F.col(C.RANK) == k) | F.col(MOVED).isNotNull()
    aggs = [
        F.max(F.when(F.col(C.RANK) == k, F.col(C.SCORE))).alias(KTH),
        F.max(MOVED).alias(MOVED),
    ]
    if slots and cold_ids is not None:
        listed = listed.join(
            F.broadcast(cold_ids.select(C.ITEM_ID, F.lit(True).alias("_cold"))), C.ITEM_ID, "left"
        )
        wanted = wanted | F.col("_cold").isNotNull()
        cold_scores = F.sort_array(F.collect_list(F.when(F.col("_cold"), F.col(C.SCORE))), False)
        aggs.append(F.try_element_at(cold_scores, F.lit(slots)).alias(COLD_KTH))
    # One read of the lists: each user's k-th score (none: a list shorter than k) and
    # whether their list holds an item whose vector changed.
    by_user = listed.filter(wanted).groupBy(C.USER_ID).agg(*aggs)
    # Users with new interactions are re-scored anyway: only the others are checked.
    others = (
        user_vectors.join(changed_users.select(C.USER_IDX), C.USER_IDX, "left_anti")
        .join(by_user, C.USER_ID, "left")
        .localCheckpoint()
    )
    todo = others.filter(F.col(KTH).isNull() | F.col(MOVED).isNotNull()).select(C.USER_IDX)
    checked = others.filter(F.col(KTH).isNotNull() & F.col(MOVED).isNull())
    is_cold = F.col(C.SOURCE) == "projected" if by_source else F.lit(False)
    warm_pairs = reaching(
        checked.select(C.USER_IDX, F.col(C.FACTORS).alias(C.VECTOR), KTH),
        changed.filter(~is_cold).select(C.ITEM_IDX, C.VECTOR),
    )
    pairs = [warm_pairs] if warm_pairs is not None else []
    if by_source:
        cold = changed.filter(is_cold).select(C.ITEM_IDX, C.VECTOR)
        threshold = F.col(KTH)
        if slots and cold_ids is not None:
            # Fewer cold items listed than slots: a changed cold item takes a free slot.
            todo = todo.unionByName(checked.filter(F.col(COLD_KTH).isNull()).select(C.USER_IDX))
            threshold = F.least(F.col(KTH), F.col(COLD_KTH))
        users = checked.select(C.USER_IDX, C.FACTORS, threshold.alias(KTH))
        if merge.method == "standardize":
            users = cold_user_vectors(
                users, moments[WARM_SOURCE], moments[COLD_SOURCE], merge.offset
            )
            cold = with_bias_column(cold, C.VECTOR)
        cold_pairs = reaching(users.withColumnRenamed(C.FACTORS, C.VECTOR), cold)
        pairs += [cold_pairs] if cold_pairs is not None else []
    for found in pairs:
        n_pairs = found.count()
        if seen is not None and n_pairs:
            keys = [C.USER_IDX, C.ITEM_IDX]
            seen_pairs = seen.join(small(found, n_pairs), keys, "left_semi")
            found = found.join(seen_pairs, keys, "left_anti")
        todo = todo.unionByName(found.select(C.USER_IDX))
    return changed_users.select(C.USER_IDX).unionByName(todo).distinct()


def reaching(users: DataFrame, items: DataFrame) -> DataFrame | None:
    """``(user_idx, item_idx)`` pairs where an item of ``items(item_idx, vector)`` scores at
    least the user's ``kth`` (``users(user_idx, vector, kth)``); the items' vectors are
    collected (a day's changed items, bounded by MAX_CHECK_FLOATS) and broadcast. None when
    ``items`` is empty."""
    table = items.orderBy(C.ITEM_IDX).toArrow()
    if not table.num_rows:
        return None
    ids = table.column(C.ITEM_IDX).to_numpy().astype(np.int32)
    flat = table.column(C.VECTOR).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = flat.astype(np.float32).reshape(table.num_rows, -1)
    shipped = users.sparkSession.sparkContext.broadcast((ids, vectors))
    pairs = users.mapInArrow(
        reaching_pairs(shipped), f"{C.USER_IDX} int, {C.ITEM_IDX} int"
    ).localCheckpoint()  # eager: the broadcast is no longer needed after it
    shipped.unpersist()
    return pairs


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    if cfg.wals.confidence == "time_decay":
        raise ConfigError(
            "refresh: wals.confidence=time_decay re-weights every interaction as time passes, "
            "so it cannot be refreshed incrementally; run the pipeline"
        )
    base = base_run(spark, cfg, run_id)
    run_ = tables.open_run(spark, cfg, run_id, create=True)
    if run_.run_id == base.run_id:
        raise ConfigError(f"--run-id: the refresh must write a new run, not {base.run_id}")
    with tables.stage(spark, run_, "refresh", cfg) as report:
        report["base_run"] = base.run_id

        def read(name: str) -> DataFrame:
            return tables.read_table(spark, base, name)

        clock = time.perf_counter()
        steps: dict[str, float] = {}

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            steps[name] = round(now - clock, 2)
            clock = now

        # 1. ids and interactions
        raw, checked, delta = read_interactions(spark, cfg)
        n_pairs = delta.count()
        old_users, old_items = read("users"), read("items")
        delta = typed_like(delta, C.USER_ID, old_users, "data.interactions user id")
        delta = typed_like(delta, C.ITEM_ID, old_items, "data.interactions item id")
        catalog_ids, texts, catalog_report = read_catalog(spark, cfg)
        item_ids = delta.select(C.ITEM_ID)
        if catalog_ids is not None:
            catalog_ids = typed_like(catalog_ids, C.ITEM_ID, old_items, "data.items id")
            if texts is not None:  # a catalog without text_template adds ids only
                texts = typed_like(texts, C.ITEM_ID, old_items, "data.items id")
            item_ids = item_ids.unionByName(catalog_ids)
        new_users, n_new_users = extend_index(
            old_users, delta, id_col=C.USER_ID, idx_col=C.USER_IDX, what="users"
        )
        new_items, n_new_items = extend_index(
            old_items, item_ids, id_col=C.ITEM_ID, idx_col=C.ITEM_IDX, what="items"
        )
        n_items = old_items.count() + n_new_items
        # users and items are layers too: the new ids, and the known items whose text changed.
        item_rows = changed_item_rows(new_items, texts, old_items).localCheckpoint()
        report["rows"]["users"], _ = tables.write_layer(
            spark, run_, "users", new_users, base, [C.USER_IDX]
        )
        report["rows"]["items"], _ = tables.write_layer(
            spark, run_, "items", item_rows, base, [C.ITEM_IDX]
        )
        users, items = (
            tables.read_table(spark, run_, "users"),
            tables.read_table(spark, run_, "items"),
        )
        # Indexed once and kept: the merge, the fold-in and the re-scoring all start here.
        new_rows = (
            small(delta, n_pairs)
            .join(users, C.USER_ID)
            .join(small(items.select(C.ITEM_ID, C.ITEM_IDX), n_items), C.ITEM_ID)
            .localCheckpoint()
        )
        # Only the merged and new pairs are written, as a layer over the base's table.
        report["rows"]["interactions"], depth = tables.write_layer(
            spark,
            run_,
            "interactions",
            merge_interactions(read("interactions"), new_rows, cfg, new_pairs=n_pairs),
            base,
            [C.USER_IDX, C.ITEM_IDX],
        )
        interactions = tables.read_table(spark, run_, "interactions")
        delta.unpersist()
        raw.unpersist()
        n_events = checked.read - sum(checked.dropped.values())
        report["counts"] = {
            "interactions": {
                "rows_read": checked.read,
                "used": n_pairs,
                "merged": n_events - n_pairs,
                "dropped": checked.dropped,
            },
            "items_catalog": catalog_report,
            "new_users": n_new_users,
            "new_items": n_new_items,
            "interactions_layer_depth": depth,
        }

        lap("ids_and_interactions")
        # The base run's text map and merge, applied as they were chosen.
        text_map = TextMap.from_dict(applied_choice(spark, base, "map") or {"kind": "ridge"})
        merge = Merge.from_dict(applied_choice(spark, base, "merge") or Merge().to_dict())
        moments = None
        if tables.has_table(spark, base, "score_scale"):
            moments = read_moments(read("score_scale"))
            tables.write_table(spark, run_, "score_scale", read("score_scale"))
        elif merge.method == "standardize":
            merge = Merge("raw", 0.0, merge.cold_slots)
        report["map"], report["merge"] = text_map.to_dict(), merge.to_dict()
        # 2. item vectors before the fold-in: the base run's, plus projected new texts
        changed_text = item_rows.filter(F.col(TEXT_HASH).isNotNull()).select(C.ITEM_IDX)
        base_has_vectors = tables.has_table(spark, base, "item_vectors")
        if base_has_vectors:
            vectors = read("item_vectors")
        else:
            vectors = read("item_factors").select(
                C.ITEM_IDX,
                C.ITEM_ID,
                F.col(C.FACTORS).alias(C.VECTOR),
                F.lit("wals").alias(C.SOURCE),
            )
        to_project = items.limit(0).select(C.ITEM_IDX)
        if cfg.data.items.text_template is not None and tables.has_table(spark, base, "projection"):
            base_encoder = tables.read_manifest(spark, base).get("stages", {}).get("embed", {})
            was = base_encoder.get("encoder", {}).get("fingerprint")
            now = encoder_fingerprint(embed_items.encoder_spec(cfg.encoder))
            if was is not None and was != now:
                raise ConfigError(
                    f"refresh: encoder.* differs from base run {base.run_id}'s (fingerprint "
                    f"{now}, base {was}); its projection was fitted on that encoder's "
                    "embeddings: use the base run's encoder settings or run the pipeline"
                )
            # Only new and changed texts are embedded, as a layer over the base's table.
            layered = tables.has_table(spark, base, "item_embeddings")
            report["embed"] = embed_items.run(
                spark,
                cfg,
                run_.run_id,
                only=changed_text if layered else None,
                base=base if layered else None,
            )
            embeddings = tables.read_table(spark, run_, "item_embeddings")
            # Projected with the base run's W: items with text and no vector yet, and cold
            # items whose text changed.
            no_vector = embeddings.select(C.ITEM_IDX).join(
                vectors.select(C.ITEM_IDX), C.ITEM_IDX, "left_anti"
            )
            recold = (
                vectors.filter(F.col(C.SOURCE) == "projected")
                .select(C.ITEM_IDX)
                .join(changed_text, C.ITEM_IDX)
            )
            to_project = no_vector.unionByName(recold).distinct().localCheckpoint()
            projected = project_new_items(
                spark,
                base,
                cfg,
                text_map,
                embeddings.join(to_project, C.ITEM_IDX).select(C.ITEM_IDX, EMBEDDING, C.ITEM_ID),
            ).select(C.ITEM_IDX, C.ITEM_ID, C.VECTOR, F.lit("projected").alias(C.SOURCE))
            vectors = vectors.join(to_project, C.ITEM_IDX, "left_anti").unionByName(projected)
            tables.write_table(spark, run_, "projection", read("projection"))
        vectors = vectors.localCheckpoint()

        lap("embed_and_project")
        # 3. fold-in: users with new interactions, then the items that grew enough
        history = known_history(interactions)
        changed_users = new_rows.select(C.USER_IDX).distinct().localCheckpoint()
        n_changed_users = changed_users.count()
        changed_users = small(changed_users, n_changed_users)
        trained_items = vectors.filter(F.col(C.SOURCE) != "projected")
        folded_users = fold_in_users(
            history.join(changed_users, C.USER_IDX),
            vectors,
            gram_items=trained_items,
            vector_col=C.VECTOR,
            rank=cfg.wals.rank,
            reg=cfg.wals.reg,
            alpha=cfg.wals.alpha,
            method=cfg.recommend.fold_in if cfg.recommend.fold_in != "none" else "solve",
        )
        # Written as a layer over the base's user_factors: the folded users, plus the users
        # the base run folded in at recommend time (its fold_in_factors table, which a
        # refresh run does not have).
        changed_vectors = folded_users
        if tables.has_table(spark, base, "fold_in_factors"):
            changed_vectors = (
                read("fold_in_factors")
                .select(C.USER_IDX, C.FACTORS)
                .join(changed_users, C.USER_IDX, "left_anti")
                .unionByName(folded_users)
            )
        report["rows"]["user_factors"], _ = tables.write_layer(
            spark,
            run_,
            "user_factors",
            changed_vectors.join(users, C.USER_IDX),
            base,
            [C.USER_IDX],
        )
        user_vectors = tables.read_table(spark, run_, "user_factors")
        gained = items_to_solve(
            read("interactions"), new_rows, cfg.refresh.item_growth
        ).localCheckpoint()
        n_solved_items = gained.count()
        gained = small(gained, n_solved_items)
        # The item step ships only the vectors of the users its history names (YᵀY is still
        # summed over every user).
        item_history = history.join(gained, C.ITEM_IDX).localCheckpoint()
        n_item_history = item_history.count()
        their_users = small(item_history.select(C.USER_IDX).distinct(), n_item_history)
        folded_items = fold_in_users(
            item_history,
            user_vectors.join(their_users, C.USER_IDX, "left_semi"),
            gram_items=user_vectors,
            vector_col=C.FACTORS,
            rank=cfg.wals.rank,
            reg=cfg.wals.reg,
            alpha=cfg.wals.alpha,
            key=C.ITEM_IDX,
            other=C.USER_IDX,
        ).join(items.select(C.ITEM_IDX, C.ITEM_ID), C.ITEM_IDX)
        solved = folded_items.select(
            C.ITEM_IDX, C.ITEM_ID, F.col(C.FACTORS).alias(C.VECTOR), F.lit("wals").alias(C.SOURCE)
        )
        # Over a base with item_vectors, a layer of the projected and the solved items; a
        # base scored from its WALS factors has no table to layer over: the whole table.
        kept = vectors.join(gained, C.ITEM_IDX, "left_anti")
        if base_has_vectors:
            kept = kept.join(to_project, C.ITEM_IDX, "left_semi")
        changed_vectors = kept.unionByName(solved)
        if base_has_vectors:
            report["rows"]["item_vectors"], _ = tables.write_layer(
                spark, run_, "item_vectors", changed_vectors, base, [C.ITEM_IDX]
            )
        else:
            report["rows"]["item_vectors"] = tables.write_table(
                spark, run_, "item_vectors", changed_vectors
            )
        item_vectors = tables.read_table(spark, run_, "item_vectors")

        lap("fold_in")
        # 4. re-score the users whose lists can change; keep the others' lists
        changed_items = gained.unionByName(to_project).distinct().localCheckpoint()
        # Lists longer than k (a base run with a larger recommend.k) are cut to k.
        old_recs = read("recommendations").filter(F.col(C.RANK) <= cfg.recommend.k)
        seen = seen_items(interactions)
        scorable = user_vectors.select(C.USER_IDX, C.FACTORS, C.USER_ID)
        base_cold = None
        if base_has_vectors:
            base_cold = read("item_vectors").filter(F.col(C.SOURCE) == "projected")
        todo = rescore_users(
            scorable,
            item_vectors,
            changed_items,
            changed_users,
            old_recs,
            seen,
            cfg,
            n_items=n_items,
            merge=merge,
            moments=moments,
            cold_ids=base_cold.select(C.ITEM_ID) if base_cold is not None else None,
        ).localCheckpoint()
        n_rescored = todo.count()
        todo = small(todo, n_rescored)
        rescored = scorable.join(todo, C.USER_IDX)
        fresh = scored_lists(
            rescored,
            item_vectors,
            C.VECTOR,
            seen.join(todo, C.USER_IDX, "left_semi"),
            cfg.recommend,
            merge,
            moments,
        )
        # Kept lists are copied as published (original ids already); only re-scored ones
        # are mapped back from indexes.
        kept = old_recs.join(small(rescored.select(C.USER_ID), n_rescored), C.USER_ID, "left_anti")
        recs = kept.select(C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE).unionByName(
            with_original_ids(fresh, users, items)
        )
        report["rows"]["recommendations"] = tables.write_table(spark, run_, "recommendations", recs)
        report["counts"].update(
            changed_users=n_changed_users,
            solved_items=n_solved_items,
            changed_items=changed_items.count(),
            rescored_users=n_rescored,
            kept_users=scorable.count() - n_rescored,
        )
        lap("rescore")
        report["seconds_by_step"] = steps
    report["publish"] = publish_run(spark, cfg, run_.run_id)
    return report


def main(argv: list[str] | None = None) -> int:
    from wals_roberta.jobs.cli import run_stage

    return run_stage("refresh", argv)


if __name__ == "__main__":
    raise SystemExit(main())
