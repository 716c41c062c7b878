"""What a user would run instead of each stage, timed on the same data in the same run.

- ``mllib_recommend_for_all_users``: ``ALSModel.recommendForAllUsers(k)`` on the trained
  model (no seen-item exclusion, no cold items), written to Spark's ``noop`` sink, so the
  baseline pays for scoring only, not for a write;
- ``implicit_als``: benfred/implicit's CPU ALS at the same rank, iterations and
  regularisation, on the same training confidences ``c = 1 + alpha * r``;
- ``single_process_topk``: one Python process, factors in memory, matmul + ``torch.topk``;
- ``matmul_roofline``: numpy float32 matmul FLOP/s on the scoring's shape, the floor for
  ``users × items × rank × 2`` scoring FLOPs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def mllib_recommend_for_all_users(spark, model_path: str, k: int) -> dict:
    from pyspark.ml.recommendation import ALSModel

    model = ALSModel.load(model_path)
    start = time.perf_counter()
    model.recommendForAllUsers(k).write.format("noop").mode("overwrite").save()
    return {"seconds": round(time.perf_counter() - start, 2)}


def training_confidences(interactions_path: Path, alpha: float):
    """CSR users × items of ``1 + alpha * rating`` over the training rows of a run's
    ``interactions`` table (read with pyarrow: a baseline, not a stage)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from scipy.sparse import csr_matrix

    table = ds.dataset(str(interactions_path), format="parquet").to_table(
        columns=["user_idx", "item_idx", "rating", "split"]
    )
    table = table.filter(pc.equal(table["split"], "train"))
    users = table["user_idx"].to_numpy()
    items = table["item_idx"].to_numpy()
    conf = 1.0 + alpha * table["rating"].to_numpy().astype(np.float32)
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    return csr_matrix((conf.astype(np.float32), (users, items)), shape=shape)


def implicit_als(
    confidences, rank: int, iterations: int, reg: float, threads: int, use_cg: bool
) -> dict:
    """Fit seconds of implicit's CPU ALS. Its solver reads the matrix values as the whole
    confidence ``c`` (``alpha=1``), which is MLlib's ``1 + alpha * r`` here. One BLAS thread:
    implicit parallelises over users itself and warns about BLAS threads on top."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=rank,
            regularization=reg,
            alpha=1.0,
            iterations=iterations,
            use_cg=use_cg,
            num_threads=threads,
            random_state=42,
        )
        start = time.perf_counter()
        model.fit(confidences, show_progress=False)
        seconds = time.perf_counter() - start
    return {
        "solver": "cg" if use_cg else "cholesky",
        "seconds": round(seconds, 2),
        "seconds_per_iteration": round(seconds / iterations, 3),
    }


def read_factors(path: Path, idx_col: str) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.dataset as ds

    table = ds.dataset(str(path), format="parquet").to_table(columns=[idx_col, "factors"])
    idx = table[idx_col].to_numpy()
    flat = table["factors"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = flat.astype(np.float32).reshape(len(idx), -1)
    order = np.argsort(idx)
    return idx[order].astype(np.int32), vectors[order]


def single_process_topk(run_dir: Path, k: int, threads: int) -> dict:
    """Every user's top-k by matmul + ``torch.topk`` in this process (no exclusion), over
    the run's trained factors; loading them is not timed."""
    import torch

    _, users = read_factors(run_dir / "user_factors", "user_idx")
    _, items = read_factors(run_dir / "item_factors", "item_idx")
    torch.set_num_threads(threads)
    users_t, items_t = torch.from_numpy(users), torch.from_numpy(items)
    start = time.perf_counter()
    for lo in range(0, len(users), 4096):
        torch.topk(users_t[lo : lo + 4096] @ items_t.T, min(k, len(items)), dim=1)
    return {"seconds": round(time.perf_counter() - start, 3), "users": len(users)}


def matmul_roofline(n_users: int, n_items: int, rank: int, threads: int) -> dict:
    """numpy float32 FLOP/s for (4096 × rank) @ (rank × items) products, best of three
    rounds; the roofline is the scoring's FLOPs at that rate."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    cols = max(1, min(n_items, 65_536))
    a = rng.standard_normal((4096, rank), dtype=np.float32)
    b = rng.standard_normal((rank, cols), dtype=np.float32)
    best = float("inf")
    with threadpool_limits(threads, "blas"):
        a @ b  # warm-up
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            best = min(best, (time.perf_counter() - start) / 4)
    flops_per_s = 2.0 * 4096 * rank * cols / best
    scoring_flops = 2.0 * n_users * n_items * rank
    return {
        "gflops_per_s": round(flops_per_s / 1e9, 1),
        "scoring_gflop": round(scoring_flops / 1e9, 2),
        "roofline_seconds": round(scoring_flops / flops_per_s, 3),
        "threads": threads,
    }


def single_process_embed(
    texts: list[str], model: str, threads: int, max_length: int, batch: int
) -> dict:
    """bench_embed's single-process batched forward (model load included), in a fresh
    Python process: what a user would run, without this process's Spark and OpenMP pools."""
    import json
    import subprocess
    import sys
    import tempfile

    bench = Path(__file__).resolve().parent
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    code = (
        "import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "from bench_embed import single_process\n"
        "texts = json.load(open(sys.argv[3]))\n"
        "print(json.dumps(single_process(texts, sys.argv[4], int(sys.argv[5]), "
        "int(sys.argv[6]), int(sys.argv[7]))))"
    )
    argv = [str(bench), str(bench.parent), f.name, model, str(threads), str(max_length)]
    out = subprocess.run(
        [sys.executable, "-c", code, *argv, str(batch)], check=True, capture_output=True, text=True
    )
    Path(f.name).unlink()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["texts"] = len(texts)
    return result
