"""The top-k scoring kernel alone, as one executor task runs it (one BLAS and torch thread).

Times, on the same random factors and seen items:

- ``top_k_block``: :func:`udfs.topk_kernel.top_k_block` (numpy products on 8 MB chunks, each user's
  k-th score bounded by group maxima, only the groups that reach the bound sorted);
- ``matmul + torch.topk``: the same chunked products, seen items masked, ``torch.topk``
  over every score of the chunk (what the kernel did before the bound, and what a
  single-process scorer does), no tie handling;
- ``matmul only``: the chunked products alone, the floor for exact scoring by matmul.

Both selections are checked to list the same items (random float scores do not tie).
Results: ``bench/results/topk.json`` and ``topk.md``.

    .venv/bin/python bench/bench_topk.py --users 16384 --items 40000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wals_roberta.udfs import topk_kernel as topk  # noqa: E402


def problem(n_users: int, n_items: int, rank: int, seed: int):
    """Factors with a popularity direction (a few items score high for most users) and
    1–99 seen items per user in CSR form."""
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, rank), dtype=np.float32) * 0.3
    items = rng.standard_normal((n_items, rank), dtype=np.float32) * 0.3
    items[:, 0] += np.linspace(0, 2, n_items, dtype=np.float32)[rng.permutation(n_items)]
    users[:, 0] += 1.0
    counts = rng.integers(1, 100, n_users)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    seen = np.concatenate([np.sort(rng.choice(n_items, c, replace=False)) for c in counts])
    return users, np.arange(n_items, dtype=np.int32), items, offsets, seen.astype(np.int32)


def chunked(users, items, offsets, seen, k, select: bool):
    """Chunked products (the kernel's chunk size), seen items masked, then ``torch.topk``
    when ``select``. Returns the chosen item indexes per chunk."""
    import torch

    n_items = items.shape[0]
    items_t = np.ascontiguousarray(items.T)
    rows, cols = topk._seen_positions(users.shape[0], np.arange(n_items), offsets, seen)
    chunk = max(1, topk.MAX_SCORE_FLOATS // n_items)
    buffer = np.empty((chunk, n_items), dtype=np.float32)
    out = []
    for start in range(0, users.shape[0], chunk):
        stop = min(start + chunk, users.shape[0])
        block = np.matmul(users[start:stop], items_t, out=buffer[: stop - start])
        lo, hi = np.searchsorted(rows, [start, stop])
        block[rows[lo:hi] - start, cols[lo:hi]] = -np.inf
        if select:
            out.append(torch.topk(torch.from_numpy(block), k, dim=1).indices.numpy())
    return out


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 3), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=16384)
    parser.add_argument("--items", type=int, default=40000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    users, ids, items, offsets, seen = problem(args.users, args.items, args.rank, args.seed)
    ours_s, (rows, chosen, _) = best_of(
        args.repeats, lambda: topk.top_k_block(users, ids, items, args.k, offsets, seen)
    )
    ref_s, ref = best_of(
        args.repeats, lambda: chunked(users, items, offsets, seen, args.k, select=True)
    )
    floor_s, _ = best_of(
        args.repeats, lambda: chunked(users, items, offsets, seen, args.k, select=False)
    )
    reference = np.sort(np.concatenate(ref), axis=1)
    ours = np.sort(chosen.reshape(args.users, args.k), axis=1)
    if not (np.array_equal(rows, np.repeat(np.arange(args.users), args.k)) and
            np.array_equal(ours, reference)):  # fmt: skip
        raise SystemExit("top_k_block and torch.topk chose different items")
    flops = 2.0 * args.users * args.items * args.rank
    result = {
        "shape": {"users": args.users, "items": args.items, "rank": args.rank, "k": args.k},
        "seconds": {"top_k_block": ours_s, "matmul_torch_topk": ref_s, "matmul_only": floor_s},
        "speedup_vs_torch_topk": round(ref_s / ours_s, 2),
        "selection_seconds": {
            "top_k_block": round(ours_s - floor_s, 3),
            "torch_topk": round(ref_s - floor_s, 3),
        },
        "matmul_gflops": round(flops / floor_s / 1e9, 1),
        "threads": 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "topk.json").write_text(json.dumps(result, indent=2))
    s = result["seconds"]
    md = [
        "# Top-k kernel, one thread",
        "",
        f"{args.users:,} users × {args.items:,} items, rank {args.rank}, k {args.k}, "
        f"1–99 seen items per user; best of {args.repeats}.",
        "",
        "| | seconds | selection seconds (minus the products) |",
        "| --- | ---: | ---: |",
        f"| `top_k_block` (group-max bound) | {s['top_k_block']} | "
        f"{result['selection_seconds']['top_k_block']} |",
        f"| matmul + `torch.topk` | {s['matmul_torch_topk']} | "
        f"{result['selection_seconds']['torch_topk']} |",
        f"| matmul only | {s['matmul_only']} | — |",
        "",
        f"`top_k_block` {result['speedup_vs_torch_topk']}× matmul + `torch.topk`; "
        f"products at {result['matmul_gflops']} GFLOP/s. Same items chosen.",
        "",
    ]
    (out / "topk.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
