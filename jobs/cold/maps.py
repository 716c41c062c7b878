"""Text → factor maps for cold items, and their choice on pseudo-cold validation.

Three kinds of map give an item with text and no interactions a vector in the WALS space:
``ridge`` (``[e, 1] W``, :mod:`model.projection`), ``knn`` (the softmax-weighted mean of the
factors of the K warm items nearest in embedding space, :mod:`cold.knn`) and ``blend``
(``w · ridge + (1 − w) · knn``). On validation (:mod:`cold.validation`) each setting
maps the pseudo-cold items from the validation model's warm items, every validation user
ranks the pseudo-cold items under every setting in one pass of the blocked top-k (one item
group per setting), and the setting with the best ranking metric is kept: λ, K and the
temperature are chosen by ranking, not by R².
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.knn import knn_vectors
from wals_roberta.jobs.cold.validation import ValidationSet, metric_and_error
from wals_roberta.jobs.config import Config
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.columns import EMBEDDING
from wals_roberta.jobs.model.projection import FIT, accumulate_stats, ridge_solutions, with_bias
from wals_roberta.udfs.topk import BROADCAST_MAX_MB, recommend_top_k

SETTING = "setting"


@dataclass(frozen=True)
class TextMap:
    """One map setting; ``weight`` is the ridge share of a blend."""

    kind: str = "ridge"
    lam: float | None = None
    k: int | None = None
    temperature: float | None = None
    weight: float | None = None

    def label(self) -> str:
        if self.kind == "ridge":
            return f"ridge(lambda={self.lam:g})"
        if self.kind == "knn":
            return f"knn(K={self.k}, T={self.temperature:g})"
        return (
            f"blend({self.weight:g} ridge(lambda={self.lam:g}) + "
            f"{1 - self.weight:g} knn(K={self.k}, T={self.temperature:g}))"
        )

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @staticmethod
    def from_dict(raw: dict) -> TextMap:
        return TextMap(**raw)

    @property
    def uses_knn(self) -> bool:
        return self.kind in ("knn", "blend")


def ridge_maps(
    warm: DataFrame, lambdas: list[float], dim: int, rank: int
) -> dict[float, np.ndarray]:
    """W(λ) for every λ, fitted on all of ``warm(embedding, factors)`` (statistics summed on
    the executors, one eigendecomposition)."""
    stats = accumulate_stats(
        warm.select(F.lit(FIT).alias("fold"), EMBEDDING, C.FACTORS),
        emb_col=EMBEDDING,
        target_col=C.FACTORS,
        dim=dim,
        rank=rank,
    )
    return dict(zip(lambdas, ridge_solutions(stats[FIT], lambdas), strict=True))


def _project_all(ws: list[np.ndarray], first: int):
    weights = [w.astype(np.float32) for w in ws]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            if pdf.empty:
                continue
            x = with_bias(np.stack(pdf[EMBEDDING].to_numpy()).astype(np.float32))
            for i, w in enumerate(weights):
                yield pd.DataFrame(
                    {C.ITEM_IDX: pdf[C.ITEM_IDX], SETTING: first + i, C.VECTOR: list(x @ w)}
                )

    return run


def ridge_vectors(queries: DataFrame, ws: list[np.ndarray], first: int = 0) -> DataFrame:
    """``(item_idx, setting, vector)``: ``queries(item_idx, embedding)`` under each W, the
    settings numbered from ``first``."""
    return queries.select(C.ITEM_IDX, EMBEDDING).mapInPandas(
        _project_all(ws, first), f"{C.ITEM_IDX} int, {SETTING} int, {C.VECTOR} array<float>"
    )


def _mix(w: float):
    return lambda a, b: (a * w + b * (1 - w)).cast("float")


def blend_vectors(
    ridge: DataFrame, knn: DataFrame, weights: list[float], first: int = 0
) -> DataFrame:
    """``(item_idx, setting, vector)``: ``w · ridge + (1 − w) · knn`` per item for each
    weight (``ridge`` and ``knn`` as ``(item_idx, vector)``)."""
    pairs = ridge.select(C.ITEM_IDX, F.col(C.VECTOR).alias("_r")).join(
        knn.select(C.ITEM_IDX, F.col(C.VECTOR).alias("_k")), C.ITEM_IDX
    )
    out = []
    for i, w in enumerate(weights):
        mixed = F.zip_with("_r", "_k", _mix(w))
        out.append(pairs.select(C.ITEM_IDX, F.lit(first + i).alias(SETTING), mixed.alias(C.VECTOR)))
    result = out[0]
    for df in out[1:]:
        result = result.unionByName(df)
    return result


def rank_settings(
    val: ValidationSet, vectors: DataFrame, settings: list[int], cfg: Config
) -> dict[int, tuple[float, float]]:
    """The validation metric of each setting and the standard error of its paired per-user
    difference from the first setting's: every validation user ranks the pseudo-cold items
    (``vectors(item_idx, setting, vector)``) among themselves, one item group per setting,
    against their held-out pairs on those items."""
    k = cfg.recommend.k
    lists = recommend_top_k(
        val.users,
        vectors,
        k=k,
        item_vector_col=C.VECTOR,
        users_per_block=cfg.recommend.users_per_block,
        items_per_block=cfg.recommend.items_per_block,
        broadcast_max_mb=cfg.recommend.broadcast_max_mb,
        item_group_col=SETTING,
    )
    held = val.held.join(val.pseudo_cold, C.ITEM_IDX, "left_semi")
    return metric_and_error(lists, held, cfg.validation.metric, k, SETTING, settings)


def choose_map(
    val: ValidationSet,
    embeddings: DataFrame,
    cfg: Config,
    *,
    dim: int,
    base_lambda: float,
) -> tuple[TextMap, list[dict], DataFrame]:
    """The map setting chosen on validation (of the kinds ``projection.map`` allows), every
    setting tried with its figure, and the pseudo-cold items' vectors under the choice
    ``(item_idx, vector)``. ``embeddings`` is ``(item_idx, embedding)``.

    Every figure comes with the standard error of its paired per-user difference from the
    ridge at ``base_lambda`` (the λ of least held-out error), which wins ties."""
    p = cfg.projection
    enough = val.item_counts.filter(F.col("n") >= p.min_interactions).select(C.ITEM_IDX)
    warm = (
        val.item_factors.join(enough, C.ITEM_IDX)
        .join(embeddings, C.ITEM_IDX)
        .select(C.ITEM_IDX, EMBEDDING, C.FACTORS)
        .localCheckpoint()
    )
    queries = embeddings.join(val.pseudo_cold, C.ITEM_IDX).localCheckpoint()
    lambdas = list(p.lambdas)
    base = lambdas.index(base_lambda)
    ws = ridge_maps(warm, lambdas, dim, cfg.wals.rank)
    knn_settings = [(k, t) for k in p.knn_ks for t in p.knn_temperatures]
    maps = [TextMap("ridge", lam=lam) for lam in lambdas]
    maps += [TextMap("knn", k=k, temperature=t) for k, t in knn_settings]
    ridge_rows = ridge_vectors(queries, [ws[lam] for lam in lambdas]).localCheckpoint()
    knn_rows = knn_vectors(
        queries,
        warm,
        knn_settings,
        items_per_block=cfg.recommend.items_per_block,
        broadcast_max_mb=cfg.recommend.broadcast_max_mb,
    )
    knn_rows = knn_rows.withColumn(SETTING, F.col(SETTING) + F.lit(len(lambdas))).localCheckpoint()
    order = [base, *[i for i in range(len(maps)) if i != base]]
    figures = rank_settings(val, ridge_rows.unionByName(knn_rows), order, cfg)
    best_ridge = max(range(len(lambdas)), key=lambda i: (figures[i][0], -i))
    best_knn = max(range(len(lambdas), len(maps)), key=lambda i: (figures[i][0], -i))
    rows = None
    if p.map in ("auto", "blend"):
        r, kn = maps[best_ridge], maps[best_knn]
        blends = [
            TextMap("blend", lam=r.lam, k=kn.k, temperature=kn.temperature, weight=w)
            for w in p.blend_weights
        ]
        rows = blend_vectors(
            ridge_rows.filter(F.col(SETTING) == best_ridge),
            knn_rows.filter(F.col(SETTING) == best_knn),
            list(p.blend_weights),
            first=len(maps),
        )
        # The base ridge ranked again beside the blends: their errors are paired with it.
        rows = ridge_rows.filter(F.col(SETTING) == base).unionByName(rows)
        blend_ids = list(range(len(maps), len(maps) + len(blends)))
        blend_figures = rank_settings(val, rows, [base, *blend_ids], cfg)
        figures.update({i: blend_figures[i] for i in blend_ids})
        maps += blends
    tried = [
        {
            "map": m.to_dict(),
            "label": m.label(),
            "value": round(figures[i][0], 6),
            "standard_error_vs_base": round(figures[i][1], 6),
        }
        for i, m in enumerate(maps)
    ]
    allowed = [i for i, m in enumerate(maps) if p.map == "auto" or m.kind == p.map]
    # Ties go to the ridge of least held-out error, then to the earlier (simpler) setting:
    # ridge before knn before blend.
    best = max(allowed, key=lambda i: (figures[i][0], i == base, -i))
    source = rows if maps[best].kind == "blend" else ridge_rows.unionByName(knn_rows)
    chosen = source.filter(F.col(SETTING) == best).select(C.ITEM_IDX, C.VECTOR).localCheckpoint()
    for df in (ridge_rows, knn_rows, warm, queries):
        df.unpersist()
    return maps[best], tried, chosen


def map_vectors(
    text_map: TextMap,
    queries: DataFrame,
    warm: DataFrame | None,
    w: np.ndarray | None,
    *,
    items_per_block: int,
    broadcast_max_mb: float = BROADCAST_MAX_MB,
) -> DataFrame:
    """``(item_idx, vector)``: ``queries(item_idx, embedding)`` under ``text_map``; ``warm``
    ``(item_idx, embedding, factors)`` are the neighbours of knn and blend, ``w`` the ridge
    W at the map's λ."""
    parts = []
    if text_map.kind in ("ridge", "blend"):
        parts.append(ridge_vectors(queries, [w]).select(C.ITEM_IDX, C.VECTOR))
    if text_map.uses_knn:
        setting = [(int(text_map.k), float(text_map.temperature))]
        parts.append(
            knn_vectors(
                queries,
                warm,
                setting,
                items_per_block=items_per_block,
                broadcast_max_mb=broadcast_max_mb,
            ).select(C.ITEM_IDX, C.VECTOR)
        )
    if text_map.kind == "blend":
        return blend_vectors(parts[0], parts[1], [float(text_map.weight)]).select(
            C.ITEM_IDX, C.VECTOR
        )
    return parts[0]
