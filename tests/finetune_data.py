"""Tiny fine-tuning data built in code: items of three genres, users who like one genre."""

from __future__ import annotations

import numpy as np

from wals_roberta.jobs.model.finetune import FinetuneData
from wals_roberta.jobs.model.finetune_eval import PseudoCold

GENRES = ("space opera", "romantic comedy", "horror slasher")


def genre_data(
    n_items: int = 60, n_users: int = 40, related: bool = True, seed: int = 0
) -> tuple[FinetuneData, PseudoCold]:
    """Factors and tastes follow the genre; the text names it when ``related``, else every
    item has the same text (text that says nothing about taste)."""
    rng = np.random.default_rng(seed)
    genre = np.arange(n_items) % len(GENRES)
    basis = np.eye(4, dtype=np.float32)[: len(GENRES)]
    factors = basis[genre] + 0.1 * rng.standard_normal((n_items, 4)).astype(np.float32)
    if related:
        texts = [f"{GENRES[g]} film number {i}" for i, g in enumerate(genre)]
    else:
        texts = ["a film" for _ in range(n_items)]
    held = np.arange(n_items)[np.arange(n_items) % 5 == 0]
    fit = np.setdiff1d(np.arange(n_items), held)
    taste = np.arange(n_users) % len(GENRES)
    users = basis[taste] + 0.1 * rng.standard_normal((n_users, 4)).astype(np.float32)
    pairs = [(u, i) for u in range(n_users) for i in fit if genre[i] == taste[u]]
    pair_users = np.stack([users[u] for u, _ in pairs]).astype(np.float32)
    pair_items = np.array([i for _, i in pairs])
    relevant = [np.flatnonzero(genre[held] == taste[u]) for u in range(n_users)]
    data = FinetuneData(texts, factors, pair_items, pair_users)
    validation = PseudoCold(fit, factors[fit], held, users, relevant, k=4)
    return data, validation
