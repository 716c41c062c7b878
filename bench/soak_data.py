"""The soak benchmark's data: a day-0 base and N daily deltas cut from one synthetic draw.

One :func:`wals_roberta.jobs.data.synthetic.generate` draw over more users and items than
day 0 has. Day 0 holds the first ``users`` users and ``items`` items and most of their
interactions. Each day ``d`` then brings, with timestamps after everything before it:

- interactions of known users held back from the draw (``daily`` of them, a share
  ``repeat_share`` of those repeat a pair already known, with new plays: merged pairs);
- ``new_users`` users of the draw never seen before, with their interactions on items
  known by that day;
- ``new_items`` catalog rows of items never seen before (text, and for every other one
  one to three interactions of known users; the rest stay cold);
- ``changed_texts`` catalog rows of known items with the same id and another text.

Every row handed to the job is also kept in ``fed`` (pairs and summed plays), so the
final run's interactions can be checked against what went in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from wals_roberta.jobs.data.synthetic import generate

DAY = 86_400


@dataclass
class Day:
    events: pd.DataFrame
    catalog: pd.DataFrame
    new_users: int
    new_items: int
    changed_texts: int


@dataclass
class SoakData:
    base_events: pd.DataFrame
    base_catalog: pd.DataFrame
    days: list[Day] = field(default_factory=list)

    def fed(self) -> pd.DataFrame:
        """``(user_id, item_id, plays)``: every pair handed to the job, plays summed."""
        frames = [self.base_events, *(d.events for d in self.days)]
        allrows = pd.concat(frames)[["user_id", "item_id", "plays"]]
        return allrows.groupby(["user_id", "item_id"], as_index=False)["plays"].sum()


def make_soak_data(
    *,
    days: int,
    users: int,
    items: int,
    interactions: int,
    daily: int,
    new_users: int,
    new_items: int,
    changed_texts: int,
    repeat_share: float = 0.2,
    seed: int = 17,
) -> SoakData:
    total_users = users + days * new_users
    total_items = items + days * new_items
    # Enough draws that the known users have their base plus every day's held-back rows
    # (the generator caps each user at half the items, so draw more until there are).
    need = interactions + days * (daily - int(round(daily * repeat_share)))
    scale = total_items / items * 1.1
    for _ in range(6):
        events, catalog = generate(
            n_users=total_users,
            n_items=total_items,
            n_interactions=int(need / users * total_users * scale),
            seed=seed,
        )
        u = events.user_id.str[1:].astype(int).to_numpy()
        i = events.item_id.str[1:].astype(int).to_numpy()
        known_pool = events[(u < users) & (i < items)]
        if len(known_pool) >= need:
            break
        scale *= 1.5 * need / len(known_pool)
    else:
        raise ValueError(f"the draw holds {len(known_pool)} of {need} interactions; lower them")
    rng = np.random.default_rng(seed)
    known_pool = known_pool.sample(frac=1.0, random_state=seed)
    base = known_pool.iloc[:interactions].copy()
    held = known_pool.iloc[interactions:]
    start = int(base.timestamp.max()) + 1
    data = SoakData(base_events=base, base_catalog=catalog.iloc[:items].copy())

    cursor = 0
    for d in range(1, days + 1):
        when = start + (d - 1) * DAY
        n_repeat = int(round(daily * repeat_share))
        n_fresh = daily - n_repeat
        fresh = held.iloc[cursor : cursor + n_fresh]
        if len(fresh) < n_fresh:
            raise ValueError(f"day {d}: the draw holds too few interactions; lower --daily")
        cursor += n_fresh
        repeat = base.sample(n=n_repeat, random_state=seed + d)[["user_id", "item_id"]].copy()
        repeat["plays"] = rng.geometric(0.4, len(repeat))
        item_hi = items + d * new_items
        lo, hi = users + (d - 1) * new_users, users + d * new_users
        # At most 20 events each: a newcomer's first day, not their whole history.
        newcomers = events[(u >= lo) & (u < hi) & (i < item_hi)].groupby("user_id").head(20)
        # New items: every other one gets 1-3 interactions of known users, the rest stay cold.
        new_ids = catalog.item_id.iloc[item_hi - new_items : item_hi]
        warm_new = [
            pd.DataFrame(
                {
                    "user_id": rng.choice(base.user_id.unique(), n, replace=False),
                    "item_id": item_id,
                    "plays": rng.geometric(0.4, n),
                }
            )
            for item_id, n in zip(new_ids[::2], rng.integers(1, 4, len(new_ids[::2])), strict=True)
        ]
        delta = pd.concat([fresh, repeat, newcomers, *warm_new])[["user_id", "item_id", "plays"]]
        delta = delta.drop_duplicates(["user_id", "item_id"])
        delta["timestamp"] = when + rng.integers(0, DAY - 1, len(delta))
        # Changed texts: known items (not today's) take the text of another item of the draw.
        pick = rng.choice(item_hi - new_items, size=changed_texts, replace=False)
        donor = rng.choice(total_items, size=changed_texts, replace=False)
        changed = catalog.iloc[donor].copy()
        changed["item_id"] = catalog.item_id.iloc[pick].to_numpy()
        changed["title"] = changed["title"] + f" (day {d} edition)"
        day_catalog = pd.concat([catalog.iloc[item_hi - new_items : item_hi], changed])
        data.days.append(
            Day(
                events=delta.reset_index(drop=True),
                catalog=day_catalog.reset_index(drop=True),
                new_users=int(newcomers.user_id.nunique()),
                new_items=new_items,
                changed_texts=changed_texts,
            )
        )
    return data
