"""Vectorised, deterministic synthetic data for the scale benchmark (10^5 to 10^7 rows).

The same model as :mod:`data.synthetic` (users with a taste over latent topics, items in
one topic, power-law activity and popularity, item text drawn from the topic's
vocabulary so that text predicts taste), but drawn with array operations in chunks of
users instead of one ``rng.choice`` per user, and written as Parquet:

- ``interactions.parquet``: ``user_id, item_id, strength, timestamp`` (string ids);
- ``items.parquet``: ``item_id, title, format, genres``.

Users and items grow with the interaction count (``scaled_shape``): 10^5 → 4,400 users ×
910 items, 10^6 → 30,000 × 6,000, 10^7 → 203,000 × 39,600. Each chunk of users has its
own seed derived from (seed, chunk), so the output does not depend on memory or speed.

    .venv/bin/python bench/synthetic_data.py --interactions 1e6 --out bench-data/1e6
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wals_roberta.jobs.data.synthetic import FORMATS, TOPICS  # noqa: E402

USERS_PER_CHUNK = 20_000
# Share of interactions drawn from the user's topics; the rest follow global popularity.
TOPIC_AFFINITY = 0.85


def scaled_shape(n_interactions: int) -> tuple[int, int]:
    """``(users, items)`` for a target interaction count: 30,000 × 6,000 at 10^6, growing a
    little slower than the interactions so that users and items both get denser."""
    scale = n_interactions / 1e6
    return max(100, round(30_000 * scale**0.83)), max(50, round(6_000 * scale**0.82))


def item_catalog(n_items: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``(items, item_topic, popularity)``: topics, Zipf popularity in random order, text."""
    rng = np.random.default_rng([seed, 0])
    names = list(TOPICS)
    n_topics = len(names)
    topic = rng.integers(0, n_topics, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity = popularity[rng.permutation(n_items)]
    vocab = np.array([TOPICS[n] for n in names])  # (topics, words)
    words = vocab[topic[:, None], rng.integers(0, vocab.shape[1], (n_items, 3))]
    other = rng.integers(0, n_topics, n_items)
    topic_name = np.array(names)[topic]
    other_name = np.array(names)[other]
    titles = [f"{a.capitalize()} {b.capitalize()} of the {c}" for a, b, c in words]
    genres = np.where(other == topic, topic_name, np.char.add(topic_name + " ", other_name))
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:06d}" for i in range(n_items)],
            "title": titles,
            "format": np.array(FORMATS)[rng.integers(0, len(FORMATS), n_items)],
            "genres": genres,
        }
    )
    return items, topic, popularity


def user_counts(n_users: int, n_items: int, n_interactions: int, seed: int) -> np.ndarray:
    """Interactions per user: Pareto activity (a long tail), at least 3, at most half the items."""
    rng = np.random.default_rng([seed, 1])
    activity = rng.pareto(1.5, n_users) + 1.0
    share = activity / activity.sum()
    scale = float(n_interactions)
    for _ in range(8):  # the clip moves the total: rescale the rest until it adds up
        counts = np.clip(np.round(share * scale), 3, n_items // 2).astype(np.int64)
        scale *= n_interactions / counts.sum()
    return counts


def interaction_chunk(
    users: np.ndarray,
    counts: np.ndarray,
    item_topic: np.ndarray,
    popularity: np.ndarray,
    seed: int,
    chunk: int,
) -> pd.DataFrame:
    """Interactions of one chunk of users: ``counts`` distinct items per user where the
    oversampled draws give that many (popular items repeat, so a user draws 1.5× + 4)."""
    rng = np.random.default_rng([seed, 2, chunk])
    n_topics = int(item_topic.max()) + 1
    taste = rng.dirichlet(np.full(n_topics, 0.2), len(users))  # mostly one or two topics
    draws_per_user = (counts * 3) // 2 + 4
    user = np.repeat(users, draws_per_user)
    row = np.repeat(np.arange(len(users)), draws_per_user)
    n = len(user)
    # Topic of each interaction from the user's taste (inverse CDF over a handful of topics).
    cdf = np.cumsum(taste, axis=1)
    topic = (rng.random(n)[:, None] > cdf[row]).sum(axis=1).clip(0, n_topics - 1)
    by_topic = rng.random(n) < TOPIC_AFFINITY
    item = np.empty(n, dtype=np.int64)
    draws = rng.random(n)
    for t in range(n_topics):  # within a topic, items by popularity
        members = np.flatnonzero(item_topic == t)
        where = by_topic & (topic == t)
        member_cdf = np.cumsum(popularity[members])
        pick = np.searchsorted(member_cdf, draws[where] * member_cdf[-1], side="right")
        item[where] = members[np.minimum(pick, len(members) - 1)]
    global_cdf = np.cumsum(popularity)
    rest = ~by_topic
    pick = np.searchsorted(global_cdf, draws[rest] * global_cdf[-1], side="right")
    item[rest] = np.minimum(pick, len(popularity) - 1)
    # First occurrence of each (user, item), in draw order, then each user's first counts.
    _, first = np.unique(user * len(popularity) + item, return_index=True)
    first.sort()
    row, item = row[first], item[first]
    starts = np.r_[0, np.flatnonzero(np.diff(row)) + 1]
    position = np.arange(len(row)) - np.repeat(starts, np.diff(np.r_[starts, len(row)]))
    keep = position < counts[row]
    user, item = users[row[keep]], item[keep]
    return pd.DataFrame(
        {
            "user_id": np.char.add("u", np.char.zfill(user.astype(str), 7)),
            "item_id": np.char.add("i", np.char.zfill(item.astype(str), 6)),
            "strength": rng.geometric(0.4, len(user)).astype(np.int32),
            "timestamp": 1_600_000_000 + rng.integers(0, 365 * 86_400, len(user)),
        }
    )


def generate(n_interactions: int, out: Path, seed: int = 7) -> dict:
    """Write ``interactions.parquet`` and ``items.parquet`` under ``out``; return the shape.
    Same arguments, same files."""
    n_users, n_items = scaled_shape(n_interactions)
    out.mkdir(parents=True, exist_ok=True)
    items, item_topic, popularity = item_catalog(n_items, seed)
    items.to_parquet(out / "items.parquet", index=False)
    counts = user_counts(n_users, n_items, n_interactions, seed)
    rows = 0
    writer = None
    try:
        for chunk, start in enumerate(range(0, n_users, USERS_PER_CHUNK)):
            users = np.arange(start, min(start + USERS_PER_CHUNK, n_users))
            frame = interaction_chunk(users, counts[users], item_topic, popularity, seed, chunk)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out / "interactions.parquet", table.schema)
            writer.write_table(table)
            rows += len(frame)
    finally:
        if writer is not None:
            writer.close()
    shape = {"interactions": rows, "users": n_users, "items": n_items, "seed": seed}
    (out / "shape.json").write_text(json.dumps(shape) + "\n")
    return shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=float, required=True, help="e.g. 1e6")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    shape = generate(int(args.interactions), Path(args.out), args.seed)
    print(json.dumps(shape))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
