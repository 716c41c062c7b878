"""The soak benchmark's checks, each a plain function returning a dict with ``pass``.

The re-score (:func:`rescore_check`) is numpy over the final run's tables, independent of
the scoring code under test (``udfs.topk``, ``cold.merge``): every user's vector against
every item vector, the user's known items excluded, projected (cold) items put on the
warm scale when the run's merge is ``standardize`` (the moments of its ``score_scale``
table), ``cold_slots`` reserved, top-k by score then item index.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from wals_roberta.jobs.runs import tables

USERS_PER_CHUNK = 4096


def dir_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, f))
        for folder, _, files in os.walk(path)
        for f in files
        if os.path.isfile(os.path.join(folder, f))
    )


def run_ids(root: str) -> list[str]:
    runs = os.path.join(root, "runs")
    return sorted(os.listdir(runs)) if os.path.isdir(runs) else []


def table_names(root: str, run_id: str) -> list[str]:
    """The run's tables: folders with a ``_SUCCESS`` or a layer marker (not the ALS model,
    whose folder holds MLlib's own layout)."""
    folder = os.path.join(root, "runs", run_id)
    return sorted(
        n
        for n in os.listdir(folder)
        if any(os.path.exists(os.path.join(folder, n, m)) for m in ("_SUCCESS", tables.LAYER))
    )


def layer_depths(spark, root: str, run_id: str) -> dict[str, int]:
    """Depth of each table of the run (0: a whole table)."""
    run = tables.Run(root, run_id, "parquet")
    out = {}
    for name in table_names(root, run_id):
        layer = tables.read_layer(spark, run, name)
        out[name] = int(layer["depth"]) if layer else 0
    return out


# --- re-score ---------------------------------------------------------------------------


def _frame(spark, run: tables.Run, name: str, *cols: str) -> pd.DataFrame:
    return tables.read_table(spark, run, name).select(*cols).toPandas()


def _scales(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x @ mean, np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, cov, x), 0.0))


def listed_scores(x, v, cold, merge, moments) -> np.ndarray:
    """Users × items: what each item would be listed at (cold ones on the warm scale)."""
    s = x @ v.T
    if merge["method"] == "standardize" and cold.any():
        m_w, sd_w = _scales(x, *moments["warm"])
        m_c, sd_c = _scales(x, *moments["cold"])
        a = np.where(sd_c > 1e-12, sd_w / np.where(sd_c > 1e-12, sd_c, 1.0), 1.0)
        c = m_w - a * m_c + float(merge["offset"]) * sd_w
        s[:, cold] = s[:, cold] * a[:, None] + c[:, None]
    return s


def top_lists(s: np.ndarray, cold: np.ndarray, k: int, slots: int) -> list[np.ndarray]:
    """Per row of ``s`` (seen items at -inf) the item columns of the list, in rank order."""
    out = []
    cols = np.arange(s.shape[1])
    for row in s:
        ok = np.isfinite(row)
        order = np.lexsort((cols, -row))
        order = order[ok[order]]
        reserved = order[cold[order]][:slots]
        rest = order[~np.isin(order, reserved)][: k - len(reserved)]
        chosen = np.concatenate([reserved, rest])
        out.append(chosen[np.lexsort((chosen, -row[chosen]))])
    return out


def reference_lists(spark, root: str, run_id: str, k: int) -> pd.DataFrame:
    """``(user_id, rank, item_id, score)`` for every user with a vector, from the run's
    tables by numpy."""
    run = tables.Run(root, run_id, "parquet")
    users = _frame(spark, run, "user_factors", "user_idx", "user_id", "factors")
    items = _frame(spark, run, "item_vectors", "item_idx", "item_id", "vector", "source")
    inter = _frame(spark, run, "interactions", "user_idx", "item_idx", "split")
    inter = inter[inter.split != "test"]
    stages = tables.read_manifest(spark, run)["stages"]
    merge = next(
        stages[s]["merge"] for s in ("refresh", "recommend") if "merge" in stages.get(s, {})
    )
    moments = {}
    if tables.has_table(spark, run, "score_scale"):
        for r in _frame(spark, run, "score_scale", "source", "mean", "cov").itertuples():
            mean = np.asarray(r.mean, dtype=np.float64)
            moments[r.source] = (mean, np.asarray(r.cov, dtype=np.float64).reshape(len(mean), -1))
    elif merge["method"] == "standardize":
        merge = {**merge, "method": "raw"}
    x_all = np.stack(users.factors.to_numpy()).astype(np.float64)
    v = np.stack(items.vector.to_numpy()).astype(np.float64)
    cold = (items.source == "projected").to_numpy()
    row_of_user = pd.Series(np.arange(len(users)), index=users.user_idx)
    col_of_item = pd.Series(np.arange(len(items)), index=items.item_idx)
    inter = inter[inter.item_idx.isin(col_of_item.index) & inter.user_idx.isin(row_of_user.index)]
    seen_r = row_of_user[inter.user_idx].to_numpy()
    seen_c = col_of_item[inter.item_idx].to_numpy()
    slots = int(merge["cold_slots"])
    parts = []
    for lo in range(0, len(users), USERS_PER_CHUNK):
        hi = min(lo + USERS_PER_CHUNK, len(users))
        s = listed_scores(x_all[lo:hi], v, cold, merge, moments)
        mask = (seen_r >= lo) & (seen_r < hi)
        s[seen_r[mask] - lo, seen_c[mask]] = -np.inf
        for j, chosen in enumerate(top_lists(s, cold, k, slots)):
            parts.append(
                pd.DataFrame(
                    {
                        "user_id": users.user_id.iloc[lo + j],
                        "rank": np.arange(1, len(chosen) + 1),
                        "item_id": items.item_id.to_numpy()[chosen],
                        "score": s[j, chosen],
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def compare_lists(
    published: pd.DataFrame, reference: pd.DataFrame, atol: float = 1e-4
) -> dict[str, Any]:
    """Same (user, item) sets and scores within ``atol``; a user whose sets differ only by
    items scored within ``atol`` of their list's last reference score is a tie, not a
    mismatch."""
    pub = {u: g for u, g in published.groupby("user_id")}
    ref = {u: g for u, g in reference.groupby("user_id")}
    mismatched, ties, bad_scores, bad_order, max_diff = [], 0, 0, 0, 0.0
    for user in pub.keys() | ref.keys():
        p, r = pub.get(user), ref.get(user)
        if p is None or r is None:
            mismatched.append(str(user))
            continue
        ps, rs = (
            dict(zip(p.item_id, p.score, strict=True)),
            dict(zip(r.item_id, r.score, strict=True)),
        )
        common = ps.keys() & rs.keys()
        diffs = [abs(ps[i] - rs[i]) for i in common]
        max_diff = max([max_diff, *diffs])
        bad_scores += sum(d > atol for d in diffs)
        ranked = p.sort_values("rank")
        if (
            list(ranked["rank"]) != list(range(1, len(p) + 1))
            or (np.diff(ranked.score.to_numpy()) > atol).any()
        ):
            bad_order += 1
        if ps.keys() == rs.keys():
            continue
        edge = r.score.min()
        odd = [ps[i] for i in ps.keys() - rs.keys()] + [rs[i] for i in rs.keys() - ps.keys()]
        if len(ps) == len(rs) and all(abs(s - edge) <= atol for s in odd):
            ties += 1
        else:
            mismatched.append(str(user))
    return {
        "users_published": len(pub),
        "users_reference": len(ref),
        "mismatched_users": len(mismatched),
        "mismatched_examples": sorted(mismatched)[:5],
        "tie_users": ties,
        "scores_off": bad_scores,
        "lists_out_of_order": bad_order,
        "max_score_diff": float(max_diff),
        "pass": not mismatched and bad_scores == 0 and bad_order == 0,
    }


def rescore_check(
    spark, root: str, run_id: str, k: int, published: pd.DataFrame | None = None
) -> dict[str, Any]:
    """The published lists (or ``published``) against the numpy re-score of ``run_id``."""
    if published is None:
        published = spark.read.parquet(os.path.join(root, "recommendations")).toPandas()
    return compare_lists(published, reference_lists(spark, root, run_id, k))


# --- the other checks -------------------------------------------------------------------


def interactions_check(spark, root: str, run_id: str, fed: pd.DataFrame) -> dict[str, Any]:
    """The final run's interactions (read over its layers) hold exactly the pairs fed in,
    each with its plays summed."""
    run = tables.Run(root, run_id, "parquet")
    got = (
        tables.read_table(spark, run, "interactions")
        .join(tables.read_table(spark, run, "users"), "user_idx")
        .join(tables.read_table(spark, run, "items").select("item_idx", "item_id"), "item_idx")
        .select("user_id", "item_id", "strength")
        .toPandas()
    )
    both = fed.merge(got, on=["user_id", "item_id"], how="outer", indicator=True)
    matched = both[both._merge == "both"]
    off = int((abs(matched.plays - matched.strength) > 1e-6).sum())
    return {
        "pairs_fed": len(fed),
        "pairs_in_run": len(got),
        "missing": int((both._merge == "left_only").sum()),
        "extra": int((both._merge == "right_only").sum()),
        "strength_off": off,
        "pass": len(matched) == len(fed) == len(got) and off == 0,
    }


def readable_check(spark, root: str) -> dict[str, Any]:
    """Every table of every remaining run reads (over its layers) and counts."""
    counts, errors = {}, {}
    for run_id in run_ids(root):
        run = tables.Run(root, run_id, "parquet")
        for name in table_names(root, run_id):
            try:
                counts[f"{run_id}/{name}"] = tables.read_table(spark, run, name).count()
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                errors[f"{run_id}/{name}"] = str(exc).splitlines()[0][:300]
    return {"tables": len(counts), "errors": errors, "counts": counts, "pass": not errors}


def layers_check(depths_by_day: list[dict[str, int]]) -> dict[str, Any]:
    """No table deeper than MAX_LAYERS; compactions: a table back at depth 0 after a
    layer."""
    deepest = max((d for day in depths_by_day for d in day.values()), default=0)
    compactions = [
        {"day": day, "table": name}
        for day in range(1, len(depths_by_day))
        for name, depth in depths_by_day[day].items()
        if depth == 0 and depths_by_day[day - 1].get(name, 0) > 0
    ]
    return {
        "max_depth": deepest,
        "max_layers": tables.MAX_LAYERS,
        "compactions": compactions,
        "bounded": deepest <= tables.MAX_LAYERS,
        "compacted": bool(compactions),
        "pass": deepest <= tables.MAX_LAYERS and bool(compactions),
    }


def runs_check(run_dirs_by_day: list[int], keep_runs: int) -> dict[str, Any]:
    """Run directories at most keep_runs plus the bases the oldest kept run's layers read
    (at most MAX_LAYERS of them)."""
    bound = keep_runs + tables.MAX_LAYERS
    most = max(run_dirs_by_day)
    return {
        "max_run_dirs": most,
        "keep_runs": keep_runs,
        "bound": bound,
        "kept_for_layers_max": max(0, most - keep_runs),
        "pass": most <= bound,
    }


def flat_check(values: list[float], first_day: int = 5, window: int = 5) -> dict[str, Any]:
    """``values`` by day 1..N: slope per day over days ``first_day``..N, and the ratio of
    the last ``window`` days' mean to days 1..``window``'s."""
    days = np.arange(1, len(values) + 1)
    tail = days >= first_day
    slope = None
    if tail.sum() > 1:
        slope = float(np.polyfit(days[tail], np.asarray(values)[tail], 1)[0])
    ratio = float(np.mean(values[-window:]) / np.mean(values[:window]))
    return {"slope_per_day": slope, "ratio_last_vs_first": ratio}
