"""A refresh's step 1: the base run it starts from, new ids numbered after the known
ones, and the day's pairs merged into the known pairs (the rows of a layer over the
base's interactions)."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.indexing import INT32_MAX, assign_dense_index
from wals_roberta.jobs.data.interactions import confidence_rating
from wals_roberta.jobs.data.item_text import TEXT, TEXT_HASH
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.errors import InputDataError, RunStateError
from wals_roberta.jobs.runs.session import small


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
