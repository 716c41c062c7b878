"""A refresh's step 4: which users' lists can change (the rule in ``jobs/refresh.py``),
from one read of the base run's lists and one pass of every other user against the
changed items' vectors."""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.merge import (
    COLD_SOURCE,
    WARM_SOURCE,
    Merge,
    cold_user_vectors,
    with_bias_column,
)
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.runs.session import Shipped, is_connect, small
from wals_roberta.udfs.topk_arrow import reaching_pairs

KTH = "kth"


COLD_KTH = "cold_kth"


MOVED = "moved"


# The changed items' vectors are broadcast for the re-score check up to this many floats
# (64 MB); past it so many items changed that every user is re-scored.
MAX_CHECK_FLOATS = 1 << 24
# On Spark Connect they travel inside the check's function instead (no broadcast
# variables), which keeps them to 16 MB.
MAX_SHIPPED_FLOATS = 1 << 22


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
    against them in one pass (:func:`udfs.topk_arrow.reaching_pairs`), which yields the pairs
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
    limit = MAX_CHECK_FLOATS if not is_connect(user_vectors.sparkSession) else MAX_SHIPPED_FLOATS
    if n_changed * 2 >= n_items or n_changed * cfg.wals.rank > limit:
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
    shipped = Shipped(users.sparkSession, (ids, vectors))
    pairs = users.mapInArrow(
        reaching_pairs(shipped.for_tasks()), f"{C.USER_IDX} int, {C.ITEM_IDX} int"
    ).localCheckpoint()  # eager: the broadcast is no longer needed after it
    shipped.release()
    return pairs
