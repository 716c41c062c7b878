"""Deterministic synthetic implicit feedback with item text, for the demo and benchmarks.

Users have a taste over latent topics, items belong to topics, activity and popularity
follow power laws, and item text is drawn from each topic's vocabulary, so that text
predicts taste. Ids are strings (``u000123``, ``i00042``) to exercise the string-id path.

    python -m jobs.synthetic --out demo-data --users 3000 --items 1500 --interactions 120000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

TOPICS: dict[str, list[str]] = {
    "space": "galaxy orbit rocket astronaut planet nebula starship comet lunar cosmic".split(),
    "crime": "detective murder heist gangster alibi suspect precinct verdict smuggler noir".split(),
    "romance": "love wedding heart kiss letters summer affair promise moonlight bride".split(),
    "cooking": "recipe kitchen chef bread spice garden harvest feast pastry soup".split(),
    "war": "battle soldier front regiment siege trench empire admiral rebellion medal".split(),
    "music": "band concert guitar melody tour singer jazz chorus rhythm stage".split(),
    "sports": "league championship coach stadium rookie marathon goal season rival trophy".split(),
    "horror": "haunted curse shadow ghost crypt scream midnight blood ritual asylum".split(),
}
FORMATS = ["Film", "Series", "Album", "Book", "Podcast", "Documentary"]


def generate(
    n_users: int, n_items: int, n_interactions: int, seed: int = 7, n_topics: int = 8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(interactions, items)`` as pandas frames (same arguments, same frames)."""
    rng = np.random.default_rng(seed)
    topic_names = list(TOPICS)[:n_topics]
    item_topic = rng.integers(0, n_topics, n_items)
    # Zipf-like popularity and Pareto-like activity: a long tail on both sides.
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.7
    popularity = popularity[rng.permutation(n_items)]
    activity = rng.pareto(1.5, n_users) + 1.0
    counts = np.maximum(3, np.round(activity / activity.sum() * n_interactions)).astype(int)
    counts = np.minimum(counts, n_items // 2)
    taste = rng.dirichlet(np.full(n_topics, 0.2), n_users)  # mostly one or two topics

    users, items = [], []
    for u in range(n_users):
        weights = popularity * (0.02 + taste[u, item_topic])
        weights /= weights.sum()
        chosen = rng.choice(n_items, size=counts[u], replace=False, p=weights)
        users.append(np.full(len(chosen), u))
        items.append(chosen)
    user_idx = np.concatenate(users)
    item_idx = np.concatenate(items)
    plays = rng.geometric(0.4, len(user_idx))
    start = 1_600_000_000
    timestamps = start + np.sort(rng.integers(0, 365 * 86_400, len(user_idx)))
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u:06d}" for u in user_idx],
            "item_id": [f"i{i:05d}" for i in item_idx],
            "plays": plays,
            "timestamp": rng.permutation(timestamps),
        }
    )

    titles, genres, formats = [], [], []
    for i in range(n_items):
        words = TOPICS[topic_names[item_topic[i]]]
        picked = rng.choice(words, size=3, replace=False)
        titles.append(" ".join(w.capitalize() for w in picked[:2]) + f" of the {picked[2]}")
        other = topic_names[rng.integers(0, n_topics)]
        genres.append(
            f"{topic_names[item_topic[i]]} {other}"
            if other != topic_names[item_topic[i]]
            else other
        )
        formats.append(FORMATS[rng.integers(0, len(FORMATS))])
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in range(n_items)],
            "title": titles,
            "format": formats,
            "genres": genres,
        }
    )
    return interactions, catalog


def write_csv(out: Path, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    interactions.to_csv(out / "interactions.csv", index=False)
    items.to_csv(out / "items.csv", index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for interactions.csv, items.csv")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--interactions", type=int, default=120_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    interactions, items = generate(args.users, args.items, args.interactions, args.seed)
    write_csv(Path(args.out), interactions, items)
    print(f"wrote {len(interactions):,} interactions and {len(items):,} items to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
