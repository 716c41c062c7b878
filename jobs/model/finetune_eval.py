"""The fine-tuning's per-epoch validation and its go/no-go rule.

The pseudo-cold items of the cold-start validation (:mod:`cold.validation`: held out of its
WALS model and of fine-tuning) play cold items: a ridge map fitted from the validation
model's items' text embeddings to their factors gives them vectors, and each validation
user's held-out pairs on them are ranked among all pseudo-cold items by the user's
validation-model vector. The figure is computed for the frozen encoder (before the first
step) and after every epoch, to choose the epoch; the go/no-go itself compares the two
encoders under the map ``project`` would choose (:mod:`cold.encoder_choice`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE_LAMBDAS = (0.1, 1.0, 10.0)


@dataclass(frozen=True)
class PseudoCold:
    """What the validation scores (positions index the fine-tuning's item list)."""

    fit_items: np.ndarray  # (a,) warm items the ridge map is fitted on
    fit_factors: np.ndarray  # (a, rank) their WALS factors
    held_items: np.ndarray  # (b,) items held out of fine-tuning
    user_vectors: np.ndarray  # (u, rank) validation users' WALS vectors
    relevant: list[np.ndarray]  # per user: positions into held_items of the user's items
    k: int = 20


def ridge_map(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """``W`` (with an intercept row last) minimising ``|[x 1] W - y|² + lam |W|²``."""
    xa = np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)]).astype(np.float64)
    gram = xa.T @ xa + lam * np.eye(xa.shape[1])
    return np.linalg.solve(gram, xa.T @ y.astype(np.float64))


def recall_at_k(scores: np.ndarray, relevant: list[np.ndarray], k: int) -> float:
    """Mean over users of hits in the top ``k`` / min(k, relevant items); ties keep order."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    figures = [
        len(np.intersect1d(top[u], rel)) / min(k, len(rel))
        for u, rel in enumerate(relevant)
        if len(rel)
    ]
    return float(np.mean(figures)) if figures else 0.0


def pseudo_cold_recall(embeddings: np.ndarray, v: PseudoCold) -> float:
    """Recall@k of the held-out items through the best ridge map of ``RIDGE_LAMBDAS``
    (``embeddings``: one row per item of the fine-tuning's list)."""
    x_fit = embeddings[v.fit_items]
    x_held = np.hstack([embeddings[v.held_items], np.ones((len(v.held_items), 1))])
    best = 0.0
    for lam in RIDGE_LAMBDAS:
        vectors = x_held @ ridge_map(x_fit, v.fit_factors, lam)
        best = max(best, recall_at_k(v.user_vectors @ vectors.T, v.relevant, v.k))
    return best


def keep_finetuned(enabled: bool | str, frozen: float, finetuned: float, min_gain: float) -> bool:
    """``true`` forces the fine-tuned encoder; ``auto`` keeps it only when it beats the frozen
    one by ``min_gain`` (relative) on the pseudo-cold validation."""
    if enabled is True:
        return True
    if enabled != "auto":
        return False
    return finetuned > frozen * (1.0 + min_gain) and finetuned > frozen
