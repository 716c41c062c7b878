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

``run()`` is these five steps, one function each; their parts are in ``incremental``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.maps import TextMap
from wals_roberta.jobs.cold.merge import Merge, read_moments
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.columns import EMBEDDING
from wals_roberta.jobs.data.interactions import read_interactions, row_counts
from wals_roberta.jobs.data.item_text import TEXT_HASH, read_catalog
from wals_roberta.jobs.incremental.ids import (
    base_run,
    changed_item_rows,
    extend_index,
    merge_interactions,
    typed_like,
)
from wals_roberta.jobs.incremental.rescoring import rescore_users
from wals_roberta.jobs.incremental.vectors import items_to_solve, project_new_items
from wals_roberta.jobs.model.embedding import embed, encoder_spec
from wals_roberta.jobs.model.fold_in import fold_in_users
from wals_roberta.jobs.model.lists import (
    applied_choice,
    known_history,
    scored_lists,
    seen_items,
    with_original_ids,
)
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.errors import ConfigError
from wals_roberta.jobs.runs.publishing import publish_run
from wals_roberta.jobs.runs.session import small
from wals_roberta.udfs.text_encoder import encoder_fingerprint


@dataclass
class Refresh:
    """One refresh: the session, config, base run and new run, the stage's report, and
    what each step hands to the next."""

    spark: SparkSession
    cfg: Config
    base: tables.Run
    run: tables.Run
    report: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    clock: float = field(default_factory=time.perf_counter)
    # 1. ids and interactions
    users: DataFrame | None = None
    items: DataFrame | None = None
    item_rows: DataFrame | None = None  # the new items and the known ones whose text changed
    new_rows: DataFrame | None = None  # the day's pairs, indexed
    interactions: DataFrame | None = None
    n_items: int = 0
    # 2. text
    text_map: TextMap | None = None
    merge: Merge | None = None
    moments: dict | None = None
    vectors: DataFrame | None = None  # item vectors before the fold-in
    to_project: DataFrame | None = None
    base_has_vectors: bool = False
    # 3. fold-in
    changed_users: DataFrame | None = None
    user_vectors: DataFrame | None = None
    item_vectors: DataFrame | None = None
    gained: DataFrame | None = None  # the items solved again

    def read(self, name: str) -> DataFrame:
        """A table of the base run."""
        return tables.read_table(self.spark, self.base, name)

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self.clock, 2)
        self.clock = now


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
    # The base is read throughout: retention keeps it while this stage's heartbeat is fresh.
    with tables.stage(spark, run_, "refresh", cfg, reads=(base.run_id,)) as report:
        report["base_run"] = base.run_id
        r = Refresh(spark, cfg, base, run_, report)
        ids_and_interactions(r)
        r.lap("ids_and_interactions")
        text(r)
        r.lap("embed_and_project")
        fold_in(r)
        r.lap("fold_in")
        rescore(r)
        r.lap("rescore")
        report["seconds_by_step"] = r.seconds
    report["publish"] = publish_run(spark, cfg, run_.run_id)
    return report


def ids_and_interactions(r: Refresh) -> None:
    """Step 1: new ids numbered after the known ones; the day's pairs merged into the
    known ones. The run's users, items and interactions are layers over the base's."""
    spark, cfg, run_, base, report = r.spark, r.cfg, r.run, r.base, r.report
    raw, checked, delta = read_interactions(spark, cfg)
    n_pairs = delta.count()
    old_users, old_items = r.read("users"), r.read("items")
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
    r.n_items = old_items.count() + n_new_items
    # users and items are layers too: the new ids, and the known items whose text changed.
    r.item_rows = changed_item_rows(new_items, texts, old_items).localCheckpoint()
    report["rows"]["users"], _ = tables.write_layer(
        spark, run_, "users", new_users, base, [C.USER_IDX]
    )
    report["rows"]["items"], _ = tables.write_layer(
        spark, run_, "items", r.item_rows, base, [C.ITEM_IDX]
    )
    r.users = tables.read_table(spark, run_, "users")
    r.items = tables.read_table(spark, run_, "items")
    # Indexed once and kept: the merge, the fold-in and the re-scoring all start here.
    r.new_rows = (
        small(delta, n_pairs)
        .join(r.users, C.USER_ID)
        .join(small(r.items.select(C.ITEM_ID, C.ITEM_IDX), r.n_items), C.ITEM_ID)
        .localCheckpoint()
    )
    # Only the merged and new pairs are written, as a layer over the base's table.
    report["rows"]["interactions"], depth = tables.write_layer(
        spark,
        run_,
        "interactions",
        merge_interactions(r.read("interactions"), r.new_rows, cfg, new_pairs=n_pairs),
        base,
        [C.USER_IDX, C.ITEM_IDX],
    )
    r.interactions = tables.read_table(spark, run_, "interactions")
    delta.unpersist()
    raw.unpersist()
    report["counts"] = {
        "interactions": row_counts(checked, n_pairs),
        "items_catalog": catalog_report,
        "new_users": n_new_users,
        "new_items": n_new_items,
        "interactions_layer_depth": depth,
    }


def base_choices(r: Refresh) -> None:
    """The base run's text map and merge, applied as they were chosen (with its
    ``score_scale`` moments, copied to the new run)."""
    spark, base = r.spark, r.base
    r.text_map = TextMap.from_dict(applied_choice(spark, base, "map") or {"kind": "ridge"})
    r.merge = Merge.from_dict(applied_choice(spark, base, "merge") or Merge().to_dict())
    if tables.has_table(spark, base, "score_scale"):
        r.moments = read_moments(r.read("score_scale"))
        tables.write_table(spark, r.run, "score_scale", r.read("score_scale"))
    elif r.merge.method == "standardize":
        r.merge = Merge("raw", 0.0, r.merge.cold_slots)
    r.report["map"], r.report["merge"] = r.text_map.to_dict(), r.merge.to_dict()


def text(r: Refresh) -> None:
    """Step 2: the item vectors before the fold-in: the base run's, plus the new and
    changed texts embedded and projected with the base run's text map."""
    spark, cfg, base, run_ = r.spark, r.cfg, r.base, r.run
    base_choices(r)
    changed_text = r.item_rows.filter(F.col(TEXT_HASH).isNotNull()).select(C.ITEM_IDX)
    r.base_has_vectors = tables.has_table(spark, base, "item_vectors")
    if r.base_has_vectors:
        vectors = r.read("item_vectors")
    else:
        vectors = r.read("item_factors").select(
            C.ITEM_IDX,
            C.ITEM_ID,
            F.col(C.FACTORS).alias(C.VECTOR),
            F.lit("wals").alias(C.SOURCE),
        )
    r.to_project = r.items.limit(0).select(C.ITEM_IDX)
    if cfg.data.items.text_template is not None and tables.has_table(spark, base, "projection"):
        check_encoder(r)
        # Only new and changed texts are embedded, as a layer over the base's table.
        layered = tables.has_table(spark, base, "item_embeddings")
        with tables.stage(spark, run_, "embed", cfg) as embedded:
            embed(
                spark,
                cfg,
                run_,
                embedded,
                only=changed_text if layered else None,
                base=base if layered else None,
            )
        r.report["embed"] = embedded
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
        r.to_project = no_vector.unionByName(recold).distinct().localCheckpoint()
        projected = project_new_items(
            spark,
            base,
            cfg,
            r.text_map,
            embeddings.join(r.to_project, C.ITEM_IDX).select(C.ITEM_IDX, EMBEDDING, C.ITEM_ID),
        ).select(C.ITEM_IDX, C.ITEM_ID, C.VECTOR, F.lit("projected").alias(C.SOURCE))
        vectors = vectors.join(r.to_project, C.ITEM_IDX, "left_anti").unionByName(projected)
        tables.write_table(spark, run_, "projection", r.read("projection"))
    r.vectors = vectors.localCheckpoint()


def check_encoder(r: Refresh) -> None:
    """The base run's projection was fitted on its encoder's embeddings: a refresh with
    another encoder is refused."""
    base_encoder = tables.read_manifest(r.spark, r.base).get("stages", {}).get("embed", {})
    was = base_encoder.get("encoder", {}).get("fingerprint")
    now = encoder_fingerprint(encoder_spec(r.cfg.encoder))
    if was is not None and was != now:
        raise ConfigError(
            f"refresh: encoder.* differs from base run {r.base.run_id}'s (fingerprint "
            f"{now}, base {was}); its projection was fitted on that encoder's "
            "embeddings: use the base run's encoder settings or run the pipeline"
        )


def fold_in(r: Refresh) -> None:
    """Step 3: users with new interactions folded in against the item vectors, then the
    items that grew enough against the user vectors. user_factors and item_vectors are
    written as layers over the base's."""
    spark, cfg, base, run_, report = r.spark, r.cfg, r.base, r.run, r.report
    history = known_history(r.interactions)
    changed_users = r.new_rows.select(C.USER_IDX).distinct().localCheckpoint()
    n_changed_users = changed_users.count()
    r.changed_users = small(changed_users, n_changed_users)
    report["counts"]["changed_users"] = n_changed_users
    trained_items = r.vectors.filter(F.col(C.SOURCE) != "projected")
    folded_users = fold_in_users(
        history.join(r.changed_users, C.USER_IDX),
        r.vectors,
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
            r.read("fold_in_factors")
            .select(C.USER_IDX, C.FACTORS)
            .join(r.changed_users, C.USER_IDX, "left_anti")
            .unionByName(folded_users)
        )
    report["rows"]["user_factors"], _ = tables.write_layer(
        spark,
        run_,
        "user_factors",
        changed_vectors.join(r.users, C.USER_IDX),
        base,
        [C.USER_IDX],
    )
    r.user_vectors = tables.read_table(spark, run_, "user_factors")
    solve_items(r, history)


def solve_items(r: Refresh, history: DataFrame) -> None:
    """The item half of step 3: the items that grew by ``refresh.item_growth`` (and those
    that had no pairs) solved against the user vectors; item_vectors written."""
    spark, cfg, base, run_, report = r.spark, r.cfg, r.base, r.run, r.report
    gained = items_to_solve(
        r.read("interactions"), r.new_rows, cfg.refresh.item_growth
    ).localCheckpoint()
    n_solved_items = gained.count()
    r.gained = small(gained, n_solved_items)
    report["counts"]["solved_items"] = n_solved_items
    # The item step ships only the vectors of the users its history names (YᵀY is still
    # summed over every user).
    item_history = history.join(r.gained, C.ITEM_IDX).localCheckpoint()
    n_item_history = item_history.count()
    their_users = small(item_history.select(C.USER_IDX).distinct(), n_item_history)
    folded_items = fold_in_users(
        item_history,
        r.user_vectors.join(their_users, C.USER_IDX, "left_semi"),
        gram_items=r.user_vectors,
        vector_col=C.FACTORS,
        rank=cfg.wals.rank,
        reg=cfg.wals.reg,
        alpha=cfg.wals.alpha,
        key=C.ITEM_IDX,
        other=C.USER_IDX,
    ).join(r.items.select(C.ITEM_IDX, C.ITEM_ID), C.ITEM_IDX)
    solved = folded_items.select(
        C.ITEM_IDX, C.ITEM_ID, F.col(C.FACTORS).alias(C.VECTOR), F.lit("wals").alias(C.SOURCE)
    )
    # Over a base with item_vectors, a layer of the projected and the solved items; a
    # base scored from its WALS factors has no table to layer over: the whole table.
    kept = r.vectors.join(r.gained, C.ITEM_IDX, "left_anti")
    if r.base_has_vectors:
        kept = kept.join(r.to_project, C.ITEM_IDX, "left_semi")
    changed_vectors = kept.unionByName(solved)
    if r.base_has_vectors:
        report["rows"]["item_vectors"], _ = tables.write_layer(
            spark, run_, "item_vectors", changed_vectors, base, [C.ITEM_IDX]
        )
    else:
        report["rows"]["item_vectors"] = tables.write_table(
            spark, run_, "item_vectors", changed_vectors
        )
    r.item_vectors = tables.read_table(spark, run_, "item_vectors")


def rescore(r: Refresh) -> None:
    """Step 4: the users whose lists can change are re-scored under the base run's merge;
    every other list is copied as published."""
    spark, cfg, run_, report = r.spark, r.cfg, r.run, r.report
    changed_items = r.gained.unionByName(r.to_project).distinct().localCheckpoint()
    # Lists longer than k (a base run with a larger recommend.k) are cut to k.
    old_recs = r.read("recommendations").filter(F.col(C.RANK) <= cfg.recommend.k)
    seen = seen_items(r.interactions)
    scorable = r.user_vectors.select(C.USER_IDX, C.FACTORS, C.USER_ID)
    base_cold = None
    if r.base_has_vectors:
        base_cold = r.read("item_vectors").filter(F.col(C.SOURCE) == "projected")
    todo = rescore_users(
        scorable,
        r.item_vectors,
        changed_items,
        r.changed_users,
        old_recs,
        seen,
        cfg,
        n_items=r.n_items,
        merge=r.merge,
        moments=r.moments,
        cold_ids=base_cold.select(C.ITEM_ID) if base_cold is not None else None,
    ).localCheckpoint()
    n_rescored = todo.count()
    todo = small(todo, n_rescored)
    rescored = scorable.join(todo, C.USER_IDX)
    fresh = scored_lists(
        rescored,
        r.item_vectors,
        C.VECTOR,
        seen.join(todo, C.USER_IDX, "left_semi"),
        cfg.recommend,
        r.merge,
        r.moments,
    )
    # Kept lists are copied as published (original ids already); only re-scored ones
    # are mapped back from indexes.
    kept = old_recs.join(small(rescored.select(C.USER_ID), n_rescored), C.USER_ID, "left_anti")
    recs = kept.select(C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE).unionByName(
        with_original_ids(fresh, r.users, r.items)
    )
    report["rows"]["recommendations"] = tables.write_table(spark, run_, "recommendations", recs)
    report["counts"].update(
        changed_items=changed_items.count(),
        rescored_users=n_rescored,
        kept_users=scorable.count() - n_rescored,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.refresh``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("refresh", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
