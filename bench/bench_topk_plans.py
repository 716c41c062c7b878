"""The two plans of the public top-k (``recommend_top_k``): broadcast item blocks or a
shuffle join of block pairs, at catalog sizes up to past one node's memory.

For each case (users × items, rank, driver memory), the factors are generated once into
Parquet (numpy, in chunks: no process holds the catalog), then each plan runs in its own
process with its own JVM: ``recommend_top_k`` with exclusion of seen items, written to
Parquet. Recorded per plan: seconds, whether it finished (the first line of the error when
not, e.g. ``OutOfMemoryError``), Spark's shuffle bytes and peak JVM heap from the status
REST API, and exactness: the lists of a sample of users against a numpy brute force over the
whole catalog (seen items excluded, ties by item index). Results are written, never asserted:
``<out>/topk-plans.json`` and ``topk-plans.md``.

    .venv/bin/python bench/bench_topk_plans.py --case 8000x2000000:1g --case 20000x262144:8g
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

PLANS = {"broadcast": 1e9, "shuffle": 0.0}
CHUNK = 262_144


def vectors(seed: int, start: int, stop: int, rank: int) -> np.ndarray:
    """Rows ``start..stop`` of a seeded factor matrix, the same whichever chunks ask."""
    out = np.empty((stop - start, rank), dtype=np.float32)
    for lo in range(start, stop, CHUNK):
        hi = min(stop, lo + CHUNK)
        rng = np.random.default_rng([seed, lo // CHUNK])
        chunk = rng.standard_normal((CHUNK, rank), dtype=np.float32)
        out[lo - start : hi - start] = chunk[: hi - lo]
    return out


def generate(path: Path, users: int, items: int, rank: int, seen_per_user: int) -> None:
    """Users, items and seen pairs as Parquet, chunk by chunk (each chunk starts at a
    multiple of CHUNK, so :func:`vectors` gives the same rows to the brute force)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (path / "done").exists():
        return
    path.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("users", users, 1), ("items", items, 2)):
        schema = pa.schema([(f"{name[:-1]}_idx", pa.int32()), ("factors", pa.list_(pa.float32()))])
        with pq.ParquetWriter(path / f"{name}.parquet", schema) as writer:
            for lo in range(0, n, CHUNK):
                hi = min(n, lo + CHUNK)
                flat = pa.array(vectors(seed, lo, hi, rank).ravel())
                offsets = pa.array(np.arange(0, (hi - lo + 1) * rank, rank, dtype=np.int32))
                writer.write_table(
                    pa.table(
                        [pa.array(np.arange(lo, hi, dtype=np.int32)),
                         pa.ListArray.from_arrays(offsets, flat)],
                        schema=schema,
                    )
                )  # fmt: skip
    rng = np.random.default_rng(3)
    seen = pa.table(
        {
            "user_idx": np.repeat(np.arange(users, dtype=np.int32), seen_per_user),
            "item_idx": rng.integers(0, items, size=users * seen_per_user, dtype=np.int32),
        }
    )
    pq.write_table(seen, path / "seen.parquet")
    (path / "done").write_text("")


def brute_force(path: Path, sample: np.ndarray, items: int, rank: int, k: int) -> dict:
    """Exact lists of the sampled users over the whole catalog, in chunks of items."""
    import pyarrow.parquet as pq

    users = vectors(1, 0, int(sample.max()) + 1, rank)[sample]
    seen = pq.read_table(path / "seen.parquet").to_pandas()
    seen = seen[seen.user_idx.isin(sample)].groupby("user_idx").item_idx.apply(set).to_dict()
    best_scores = np.full((len(sample), 0), -np.inf, dtype=np.float32)
    best_items = np.empty((len(sample), 0), dtype=np.int64)
    for lo in range(0, items, CHUNK):
        hi = min(items, lo + CHUNK)
        scores = users @ vectors(2, lo, hi, rank).T
        for row, user in enumerate(sample):
            for item in seen.get(int(user), ()):
                if lo <= item < hi:
                    scores[row, item - lo] = -np.inf
        ids = np.broadcast_to(np.arange(lo, hi), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_items = np.concatenate([best_items, ids], axis=1)
        order = np.lexsort((all_items, -all_scores), axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, order, 1)
        best_items = np.take_along_axis(all_items, order, 1)
    return {int(u): best_items[row].tolist() for row, u in enumerate(sample)}


def spark_figures(spark) -> dict:
    """Shuffle bytes over all stages and the JVM's peak heap, from the status REST API."""
    import urllib.request

    url, app = spark.sparkContext.uiWebUrl, spark.sparkContext.applicationId
    base = f"{url}/api/v1/applications/{app}"
    with urllib.request.urlopen(f"{base}/stages", timeout=30) as r:
        stages = json.load(r)
    with urllib.request.urlopen(f"{base}/executors", timeout=30) as r:
        executors = json.load(r)
    peaks = executors[0].get("peakMemoryMetrics", {})
    return {
        "shuffle_write_mb": round(sum(s["shuffleWriteBytes"] for s in stages) / 2**20, 1),
        "shuffle_read_mb": round(sum(s["shuffleReadBytes"] for s in stages) / 2**20, 1),
        "peak_jvm_heap_mb": round(peaks.get("JVMHeapMemory", 0) / 2**20, 1),
    }


def run_plan(args: argparse.Namespace) -> dict:
    """One plan in this process (the runner starts one process per plan and case)."""
    from wals_roberta.jobs.config import load_config
    from wals_roberta.jobs.runs.session import build_session
    from wals_roberta.udfs.topk import recommend_top_k

    path, out = Path(args.path), Path(args.path) / f"out-{args.plan}"
    cfg = load_config(
        REPO / "conf" / "default.yaml",
        [f"spark.master=local[{args.cores}]",
         f"spark.conf={{spark.driver.memory: {args.driver_memory}, "
         "spark.ui.showConsoleProgress: 'false', spark.sql.shuffle.partitions: '64'}"],
    )  # fmt: skip
    spark = build_session(cfg)
    start = time.perf_counter()
    result: dict = {"plan": args.plan}
    try:
        top = recommend_top_k(
            spark.read.parquet(str(path / "users.parquet")),
            spark.read.parquet(str(path / "items.parquet")),
            k=args.k,
            seen=spark.read.parquet(str(path / "seen.parquet")),
            broadcast_max_mb=PLANS[args.plan],
        )
        top.write.mode("overwrite").parquet(str(out))
        result["status"] = "ok"
    except Exception as exc:  # a plan that cannot run is a result here
        causes = re.findall(r"java\.lang\.\w+Error[^\n]*|\w+(?:Exception|Error): [^\n]*", str(exc))
        result["status"] = "failed"
        result["error"] = (causes or [type(exc).__name__])[0][:300]
    result["seconds"] = round(time.perf_counter() - start, 1)
    try:
        result.update(spark_figures(spark))
    except Exception:  # the JVM may be gone after an OutOfMemoryError
        pass
    spark.stop()
    return result


def check(path: Path, plan: str, case: dict, sample_size: int) -> bool:
    import pandas as pd

    rng = np.random.default_rng(4)
    sample = np.sort(rng.choice(case["users"], size=min(sample_size, case["users"]), replace=False))
    expected = brute_force(path, sample, case["items"], case["rank"], case["k"])
    got = pd.read_parquet(path / f"out-{plan}")
    got = got[got.user_idx.isin(sample)].sort_values(["user_idx", "rank"])
    lists = got.groupby("user_idx").item_idx.apply(list).to_dict()
    return all(lists.get(u) == items for u, items in expected.items())


def parse_case(text: str) -> tuple[int, int, str]:
    shape, _, memory = text.partition(":")
    users, _, items = shape.partition("x")
    return int(users), int(items), memory or "8g"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[],
                        help="USERSxITEMS[:DRIVER_MEMORY], repeatable")  # fmt: skip
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seen-per-user", type=int, default=20)
    parser.add_argument("--sample-users", type=int, default=40)
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "wals-topk-plans"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--one", nargs=2, metavar=("PATH", "PLAN"), help=argparse.SUPPRESS)
    parser.add_argument("--driver-memory", default="8g", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        args.path, args.plan = args.one
        print(json.dumps(run_plan(args)))
        return 0
    results = []
    for text in args.case or ["8000x2000000:1g"]:
        users, items, memory = parse_case(text)
        case = {"users": users, "items": items, "rank": args.rank, "k": args.k,
                "driver_memory": memory,
                "catalog_mb": round(items * args.rank * 4 / 2**20)}  # fmt: skip
        path = Path(args.data) / f"{users}x{items}r{args.rank}"
        generate(path, users, items, args.rank, args.seen_per_user)
        for plan in args.plans:
            command = [sys.executable, __file__, "--one", str(path), plan, "--rank",
                       str(args.rank), "--k", str(args.k), "--cores", str(args.cores),
                       "--driver-memory", memory]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if lines:
                row = json.loads(lines[-1])
            else:  # the JVM or the process died: the first cause in its log
                causes = re.findall(r"java\.lang\.\w+Error[^\n]*", done.stderr)
                row = {"plan": plan, "status": "failed",
                       "error": (causes or [f"exit {done.returncode}"])[0][:300]}  # fmt: skip
            if row.get("status") == "ok":
                row["exact_on_sample"] = check(path, plan, case, args.sample_users)
            results.append({**case, **row})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Cases run before (both plans of a case always run together) are kept, replaced by a
    # new run of the same case.
    key = lambda r: (r["users"], r["items"], r["rank"], r["k"], r["driver_memory"])  # noqa: E731
    if (out / "topk-plans.json").exists():
        new = {key(r) for r in results}
        old = json.loads((out / "topk-plans.json").read_text())
        results = [r for r in old if key(r) not in new] + results
    results.sort(key=lambda r: (r["items"] * r["rank"], r["users"]))
    (out / "topk-plans.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "topk-plans.md").write_text(report(results))
    return 0


def report(results: list[dict]) -> str:
    lines = [
        "# Top-k plans: broadcast item blocks against a shuffle join of block pairs",
        "",
        "| users | items | catalog MB | driver memory | plan | status | seconds | shuffle "
        "write MB | shuffle read MB | peak JVM heap MB | exact on sample |",
        "| ---: | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        status = r["status"] if r["status"] != "failed" else f"failed: {r.get('error', '')}"
        lines.append(
            f"| {r['users']:,} | {r['items']:,} | {r['catalog_mb']:,} | {r['driver_memory']} | "
            f"{r['plan']} | {status} | {r.get('seconds', '')} | {r.get('shuffle_write_mb', '')} | "
            f"{r.get('shuffle_read_mb', '')} | {r.get('peak_jvm_heap_mb', '')} | "
            f"{r.get('exact_on_sample', '')} |"
        )
    lines += ["", f"Rank {results[0]['rank']}, k {results[0]['k']}, local mode (driver = "
              "executor), seen items excluded; exactness against a numpy brute force over the "
              "whole catalog for a sample of users.", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
