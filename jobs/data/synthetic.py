"""Deterministic synthetic implicit feedback with item text, for the demo and benchmarks.

Users have a taste over latent topics, items belong to topics, activity and popularity
follow power laws, and item text is drawn from each topic's vocabulary, so that text
predicts taste. ``text_signal`` (below 1) loosens that tie: each text word then comes from
the item's topic only with that probability, else from a topic drawn at random. Ids are
strings (``u000123``, ``i00042``) to exercise the string-id path.

    python -m wals_roberta.jobs.data.synthetic --out demo-data \
        --users 3000 --items 1500 --interactions 120000
    python -m wals_roberta.jobs.data.synthetic --out weak-text --text-signal 0.1
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


def item_topics(n_items: int, seed: int = 7, n_topics: int = 8) -> np.ndarray:
    """The topic index of each item as :func:`generate` draws it (its first draw), for
    checking how closely the text follows the topic."""
    return np.random.default_rng(seed).integers(0, n_topics, n_items)


def generate(
    n_users: int,
    n_items: int,
    n_interactions: int,
    seed: int = 7,
    n_topics: int = 8,
    text_signal: float = 1.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic interactions and item catalog.

    Args:
        n_users: Number of users.
        n_items: Number of items.
        n_interactions: About how many interactions in all (each user has at least 3).
        seed: Seed of every random draw.
        n_topics: Number of latent topics (at most ``len(TOPICS)``).
        text_signal: Probability in [0, 1] that each text word of an item (its three title
            words and its first genre) comes from the item's own topic; otherwise it comes
            from a topic drawn uniformly at random (possibly its own). 1.0 ties text to
            taste fully; the interactions, formats and second genres do not depend on it.

    Returns:
        ``(interactions, items)`` as pandas frames; same arguments, same frames.

    Raises:
        ValueError: If ``text_signal`` is outside [0, 1].
    """
    if not 0.0 <= text_signal <= 1.0:
        raise ValueError(f"text_signal must be in [0, 1], got {text_signal}")
    rng = np.random.default_rng(seed)
    # The text noise has its own stream, so that text_signal=1.0 draws exactly what the
    # generator always drew and any text_signal leaves the interactions unchanged.
    noise = np.random.default_rng([seed, 1]) if text_signal < 1.0 else None
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
        topic = topic_names[item_topic[i]]
        picked = list(rng.choice(TOPICS[topic], size=3, replace=False))
        first_genre = topic
        if noise is not None:
            for j in range(3):
                picked[j] = _noisy_word(noise, picked, j, topic_names, text_signal)
            if noise.random() >= text_signal:
                first_genre = topic_names[noise.integers(0, n_topics)]
        titles.append(" ".join(w.capitalize() for w in picked[:2]) + f" of the {picked[2]}")
        other = topic_names[rng.integers(0, n_topics)]
        genres.append(f"{first_genre} {other}" if other != first_genre else other)
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


def _noisy_word(
    noise: np.random.Generator, picked: list[str], j: int, topic_names: list[str], signal: float
) -> str:
    """Title word ``j``: kept with probability ``signal``, else a word of a uniformly drawn
    topic that is not already in the title."""
    if noise.random() < signal:
        return picked[j]
    words = TOPICS[topic_names[noise.integers(0, len(topic_names))]]
    free = [w for w in words if w not in picked[:j] + picked[j + 1 :]]
    return str(free[noise.integers(0, len(free))])


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


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
    parser.add_argument(
        "--text-signal",
        type=_unit_interval,
        default=1.0,
        help="probability in [0, 1] that each text word comes from the item's topic",
    )
    args = parser.parse_args(argv)
    interactions, items = generate(
        args.users, args.items, args.interactions, args.seed, text_signal=args.text_signal
    )
    write_csv(Path(args.out), interactions, items)
    print(f"wrote {len(interactions):,} interactions and {len(items):,} items to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
