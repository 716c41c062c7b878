"""Item-text embeddings on executors, with a cache across runs (the ``embed`` stage's
work, which a refresh runs on its new and changed texts).

The cache (``encoder.cache_dir``, default ``<output.root>/embedding_cache``) holds one
vector per (encoder fingerprint, text hash): a re-run encodes only new or changed texts,
and a different model, pooling or max length (a new fingerprint) encodes everything again.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config, EncoderConfig
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.columns import EMBEDDING
from wals_roberta.jobs.data.item_text import TEXT, TEXT_HASH
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.errors import RunStateError
from wals_roberta.jobs.runs.session import parallelism
from wals_roberta.udfs.text_encoder import EncoderSpec, embedding_udf, encoder_fingerprint

FINGERPRINT = "fingerprint"
TEXTS_PER_TASK = 50_000


def encoder_spec(e: EncoderConfig) -> EncoderSpec:
    return EncoderSpec(
        model=e.model,
        pooling=e.pooling,
        max_length=e.max_length,
        batch_size=e.batch_size,
        normalize=e.normalize,
        device=e.device,
    )


def run_encoder_spec(
    spark: SparkSession, cfg: Config, run: tables.Run, base: tables.Run | None = None
) -> EncoderSpec:
    """The encoder ``embed`` uses on ``run``: the configured one, or with
    ``encoder.finetune.enabled`` the one the run's ``finetune`` stage kept (a refresh: the one
    its base embedded with)."""
    spec = encoder_spec(cfg.encoder)
    if cfg.encoder.finetune.enabled is False:
        return spec
    tuned = tables.read_manifest(spark, run).get("stages", {}).get("finetune", {})
    if tuned.get("status") == "complete":
        kept = tuned.get("use_finetuned") and tuned.get("encoder_path")
        return dataclasses.replace(spec, model=tuned["encoder_path"]) if kept else spec
    if base is not None:
        embedded = tables.read_manifest(spark, base).get("stages", {}).get("embed", {})
        model = embedded.get("encoder", {}).get("model")
        return dataclasses.replace(spec, model=model) if model else spec
    raise RunStateError(
        f"embed: encoder.finetune.enabled is {cfg.encoder.finetune.enabled} but run "
        f"{run.run_id} has no complete finetune stage; run `finetune` first "
        "(or set encoder.finetune.enabled=false)"
    )


def cache_path(cfg: Config, run: tables.Run) -> str:
    if cfg.encoder.cache_dir:
        return storage.normalize(cfg.encoder.cache_dir)
    return storage.join(run.root, "embedding_cache")


def cached_vectors(
    spark: SparkSession, path: str, fingerprint: str, hashes: DataFrame | None = None
) -> DataFrame | None:
    """``(text_hash, embedding)`` cached for this fingerprint (only for ``hashes``, a
    ``text_hash`` column, when given), or None."""
    if not storage.exists(spark, storage.join(path, f"{FINGERPRINT}={fingerprint}")):
        return None
    cached = spark.read.parquet(path).filter(F.col(FINGERPRINT) == fingerprint)
    if hashes is not None:
        cached = cached.join(hashes.select(TEXT_HASH).distinct(), TEXT_HASH, "left_semi")
    # Two runs may have appended the same text: keep one vector per hash (they are equal).
    return cached.groupBy(TEXT_HASH).agg(F.first(EMBEDDING).alias(EMBEDDING))


def texts_to_encode(items: DataFrame, cached: DataFrame | None) -> DataFrame:
    """One row per distinct text hash that has no cached vector."""
    texts = items.filter(F.col(TEXT).isNotNull()).groupBy(TEXT_HASH).agg(F.min(TEXT).alias(TEXT))
    if cached is None:
        return texts
    return texts.join(cached.select(TEXT_HASH), TEXT_HASH, "left_anti")


def encode(todo: DataFrame, spec: EncoderSpec, n_texts: int, arrow_batch_size: int) -> DataFrame:
    """``(text_hash, embedding)``: the texts spread evenly over the executors' cores.

    The partition count is a multiple of the task slots, so that no wave of tasks leaves
    cores idle, with at most ``TEXTS_PER_TASK`` texts per task.
    """
    spark = todo.sparkSession
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch_size))
    slots = parallelism(spark)
    waves = max(1, math.ceil(n_texts / (slots * TEXTS_PER_TASK)))
    partitions = max(1, min(n_texts, slots * waves))
    embed = embedding_udf(spec)
    return todo.repartition(partitions, TEXT_HASH).select(
        TEXT_HASH, embed(F.col(TEXT)).alias(EMBEDDING)
    )


def cached_or_encoded(
    spark: SparkSession,
    cfg: Config,
    run: tables.Run,
    spec: EncoderSpec,
    items: DataFrame,
    *,
    lookup_all: bool = True,
) -> tuple[DataFrame, int]:
    """``(text_hash, embedding)`` under ``spec`` for the texts of ``items(text_hash, text)``:
    the cached ones, and the others encoded on the executors and appended to the cache; and
    how many were encoded. ``lookup_all``: read the whole cache of this fingerprint (the
    items are most of the catalog), else only these items' hashes."""
    fingerprint = encoder_fingerprint(spec)
    cache = cache_path(cfg, run)
    hashes = None if lookup_all else items
    todo = texts_to_encode(items, cached_vectors(spark, cache, fingerprint, hashes=hashes))
    n_todo = todo.count()
    if n_todo:
        fresh = encode(todo, spec, n_todo, cfg.encoder.arrow_batch_size).select(
            TEXT_HASH,
            EMBEDDING,
            F.lit(spec.model).alias("model"),
            F.lit(datetime.now(UTC).isoformat(timespec="seconds")).alias("encoded_at"),
            F.lit(fingerprint).alias(FINGERPRINT),
        )
        fresh.write.mode("append").partitionBy(FINGERPRINT).parquet(cache)
    vectors = cached_vectors(spark, cache, fingerprint, hashes=hashes)
    if vectors is None:  # nothing to embed and nothing cached yet
        vectors = spark.createDataFrame([], f"{TEXT_HASH} string, {EMBEDDING} array<float>")
    return vectors, n_todo


def embed(
    spark: SparkSession,
    cfg: Config,
    run: tables.Run,
    report: dict[str, Any],
    *,
    only: DataFrame | None = None,
    base: tables.Run | None = None,
) -> None:
    """The ``embed`` stage's work on ``run`` (its ``item_embeddings``), recorded in the
    stage's ``report``. With ``only`` (``item_idx`` of the items whose text is new or changed)
    and ``base`` (a run with ``item_embeddings``), as a refresh calls it: only those items
    are looked up and embedded, and the table is written as a layer over the base's."""
    if (only is None) != (base is None):
        raise ValueError("embed: `only` and `base` go together")
    spec = run_encoder_spec(spark, cfg, run, base)
    items = tables.read_table(spark, run, "items")
    if only is not None:  # kept: the stage reads these items four times
        items = items.join(only.select(C.ITEM_IDX), C.ITEM_IDX, "left_semi").localCheckpoint()
    stats = items.agg(
        F.count(F.lit(1)).alias("items"),
        F.count(TEXT).alias("with_text"),
        F.countDistinct(TEXT_HASH).alias("texts"),
    ).first()
    # A refresh looks up only its items' hashes, not the whole cache.
    with_text = items.filter(F.col(TEXT).isNotNull())
    vectors, n_todo = cached_or_encoded(spark, cfg, run, spec, with_text, lookup_all=only is None)
    fingerprint = encoder_fingerprint(spec)
    embeddings = with_text.join(vectors, TEXT_HASH).select(
        C.ITEM_IDX, C.ITEM_ID, TEXT_HASH, EMBEDDING
    )
    if base is None:
        report["rows"]["item_embeddings"] = tables.write_table(
            spark, run, "item_embeddings", embeddings
        )
    else:
        report["rows"]["item_embeddings"], report["layer_depth"] = tables.write_layer(
            spark, run, "item_embeddings", embeddings, base, [C.ITEM_IDX]
        )
    report["counts"] = {
        "items": stats["items"],
        "empty_text": stats["items"] - stats["with_text"],
        "encoded_texts": n_todo,
        "reused_texts": stats["texts"] - n_todo,
    }
    report["encoder"] = {
        "model": spec.model,
        "fingerprint": fingerprint,
        "pooling": spec.pooling,
        "max_length": spec.max_length,
    }
