"""The fine-tuned encoder's go/no-go on the pseudo-cold validation of the cold-start
choices (:mod:`cold.validation`, :mod:`cold.maps`).

Each encoder (the frozen one and the fine-tuned one) embeds the validation model's items;
the text map is chosen for each exactly as ``project`` chooses it (ridge, kNN and blend
settings, :func:`cold.maps.choose_map`), and the figure of its best map is the encoder's
figure: every validation user ranks the pseudo-cold items, mapped from the validation
model's warm items, against the user's held-out pairs on them. The fine-tuning never saw
those pairs: it trains on the validation model's own training pairs and user vectors.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.maps import choose_map
from wals_roberta.jobs.cold.validation import ValidationSet
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.columns import EMBEDDING
from wals_roberta.jobs.data.item_text import TEXT, TEXT_HASH
from wals_roberta.jobs.model.embedding import cached_or_encoded
from wals_roberta.jobs.model.projection import (
    FIT,
    HELD_OUT,
    accumulate_stats,
    choose_lambda,
    warm_items,
)
from wals_roberta.jobs.runs import tables
from wals_roberta.udfs.text_encoder import EncoderSpec


def validation_items(val: ValidationSet, items: DataFrame) -> DataFrame:
    """``(item_idx, text_hash, text)`` of the items validation maps from or to: the validation
    model's items and the pseudo-cold ones, with text."""
    wanted = val.item_factors.select(C.ITEM_IDX).unionByName(val.pseudo_cold.select(C.ITEM_IDX))
    return (
        items.filter(F.col(TEXT).isNotNull())
        .select(C.ITEM_IDX, TEXT_HASH, TEXT)
        .join(wanted.distinct(), C.ITEM_IDX, "left_semi")
    )


def encoder_figure(
    spark: SparkSession,
    cfg: Config,
    run: tables.Run,
    val: ValidationSet,
    items: DataFrame,
    spec: EncoderSpec,
) -> dict[str, Any]:
    """``{value, map, texts_encoded}``: the validation figure of ``spec``'s embeddings under
    the map chosen for them (λ of least held-out error first on ties, as in ``project``).
    The vectors are looked up in, or added to, the embedding cache, so ``embed`` reuses the
    kept encoder's."""
    vectors, encoded = cached_or_encoded(spark, cfg, run, spec, items)
    embeddings = items.join(vectors, TEXT_HASH).select(C.ITEM_IDX, EMBEDDING).localCheckpoint()
    dim = len(embeddings.first()[EMBEDDING])
    fit_rows = val.fit.withColumn(C.SPLIT, F.lit(C.TRAIN))
    _, warm = warm_items(spark, fit_rows, val.item_factors, embeddings, cfg.projection)
    stats = accumulate_stats(
        warm, emb_col=EMBEDDING, target_col=C.FACTORS, dim=dim, rank=cfg.wals.rank
    )
    lambdas = list(cfg.projection.lambdas)
    base = lambdas[0]
    if FIT in stats and HELD_OUT in stats:
        base, _ = choose_lambda(stats[FIT], stats[HELD_OUT], lambdas)
    warm.unpersist()
    text_map, tried, chosen = choose_map(val, embeddings, cfg, dim=dim, base_lambda=base)
    chosen.unpersist()
    embeddings.unpersist()
    value = next(t["value"] for t in tried if t["label"] == text_map.label())
    return {"value": value, "map": text_map.label(), "texts_encoded": encoded}
