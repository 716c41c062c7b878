"""``scale.json`` and ``scale.md`` from the per-size results of ``bench_scale.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

STAGES = ("prepare", "train", "embed", "project", "recommend", "evaluate", "publish")
TARGETS = {
    "recommend_speedup_vs_mllib": ">= 3 (from 10^7 interactions up)",
    "recommend_share_of_roofline": ">= 0.4 (from 10^7 up)",
    "train_cg_per_iteration_vs_implicit_cg": "<= 3 (from 10^7 up, rank 64)",
    "train_per_iteration_vs_implicit_cg": "<= 5 (at 10^7, rank 64)",
    "embed_throughput_vs_single_process": ">= 0.8",
}


NOTES = [
    "How to read these tables:",
    "",
    "- Seconds per stage are the run manifest's; each size runs in its own process, stages in",
    "  one local SparkSession. In local mode the driver and the executor are one JVM, so the",
    "  JVM column is both; Python workers are the pandas-UDF processes, summed.",
    "- recommend_speedup_vs_mllib = MLlib recommendForAllUsers(k) seconds (noop sink, no",
    "  seen-item exclusion, no cold items) / our recommend stage seconds (exclusion, cold items,",
    "  original ids, Parquet written, fold-in check, cold share).",
    "- recommend_share_of_roofline = (users × items × rank × 2 FLOPs at numpy's float32 rate for",
    "  (4096 × rank) @ (rank × items)) / our recommend stage seconds.",
    "- train ratios: our train stage seconds (fit, model and factor tables written) per",
    "  iteration / implicit's fit seconds per iteration on the same training confidences",
    "  c = 1 + alpha·r, same rank, iterations and reg (MLlib scales reg by each user's and",
    "  item's count, implicit does not: the work per iteration is the same).",
    "  train_cg_per_iteration_vs_implicit_cg: the same for our train stage run again with",
    "  wals.solver=cg (conjugate gradient on executors, 3 steps per solve, as implicit).",
    "- embed ratio = our embed stage texts/s (distinct texts encoded, model loads and cache",
    "  writes included) / a single process's batched forward of the same encoder (model load",
    "  included) over the first --embed-texts distinct texts, same threads in total.",
    "- The machine is shared: ratios are within one run, on the same data; absolute seconds",
    "  move with the other load.",
    "",
]


def stage_rows(r: dict, stage: str) -> tuple[int, str]:
    """The count each stage's rows/s is taken over, and what it counts."""
    s = r["stages"][stage]
    if stage == "embed":
        return int(s.get("counts", {}).get("encoded_texts", 0)), "texts"
    if stage == "project":
        return r["data"]["items"], "items"
    if stage in ("recommend", "publish"):
        return r["data"]["users"], "users"
    if stage == "train":
        return r["train_rows"], "train interactions"
    return r["data"]["interactions"], "interactions"


def ratios(r: dict) -> dict:
    b, s = r["baselines"], r["stages"]
    iters = r["config"]["iterations"]
    texts = stage_rows(r, "embed")[0]
    embed_rate = texts / s["embed"]["seconds"] if "embed" in s else float("nan")
    return {
        "recommend_speedup_vs_mllib": round(
            b["mllib_recommend_for_all_users"]["seconds"] / s["recommend"]["seconds"], 3
        ),
        "recommend_share_of_roofline": round(
            b["matmul_roofline"]["roofline_seconds"] / s["recommend"]["seconds"], 4
        ),
        "train_per_iteration_vs_implicit_cg": round(
            s["train"]["seconds"] / iters / b["implicit_cg"]["seconds_per_iteration"], 2
        ),
        "train_cg_per_iteration_vs_implicit_cg": round(
            b["train_cg"]["seconds"] / iters / b["implicit_cg"]["seconds_per_iteration"], 2
        )
        if "train_cg" in b
        else float("nan"),
        "train_per_iteration_vs_implicit_cholesky": round(
            s["train"]["seconds"] / iters / b["implicit_cholesky"]["seconds_per_iteration"], 2
        ),
        "embed_throughput_vs_single_process": round(
            embed_rate / b["single_process_embed"]["items_per_s"], 3
        ),
    }


def growth(results: list[dict]) -> dict:
    """Exponent of seconds against interactions between consecutive sizes (1 = linear)."""
    out: dict = {}
    for a, b in zip(results, results[1:], strict=False):
        step = math.log(b["data"]["interactions"] / a["data"]["interactions"])
        key = f"{a['size']}->{b['size']}"
        out[key] = {
            st: round(math.log(b["stages"][st]["seconds"] / a["stages"][st]["seconds"]) / step, 2)
            for st in STAGES
            if st in a["stages"] and st in b["stages"]
        }
    return out


def shuffle_check(r: dict) -> dict:
    """Per stage: Spark's measured shuffle write and read (MB), the cost model's figure
    (``bench/scale_model.py``) and measured / model; also the jobs each stage ran."""
    from scale_model import model

    d, c = r["data"], r["config"]
    predicted = model(
        d["users"], d["items"], r.get("pairs") or d["interactions"], N_raw=d["interactions"],
        r=c["rank"], k=c["k"], iterations=c["iterations"], als_blocks=c["user_blocks"],
        users_per_block=c["users_per_block"], items_per_block=c["items_per_block"],
        broadcast_max_mb=c.get("broadcast_max_mb", 64.0), cores=r["machine"]["cores"],
        cg_blocks=r["machine"]["cores"],
        merged=r["stages"].get("recommend", {}).get("merge", {}).get("method", "raw") != "raw"
        or bool(r["stages"].get("recommend", {}).get("merge", {}).get("cold_slots")),
    )  # fmt: skip
    measured = {s: v["spark"] for s, v in r["stages"].items() if "spark" in v}
    if "spark" in r["baselines"].get("train_cg", {}):
        measured["train_cg"] = r["baselines"]["train_cg"]["spark"]
    out = {}
    for stage, m in measured.items():
        model_mb = predicted[stage]["shuffle"] / 2**20
        out[stage] = {
            "spark_jobs": m["spark_jobs"],
            "shuffle_write_mb": m["shuffle_write_mb"],
            "shuffle_read_mb": m["shuffle_read_mb"],
            "model_mb": round(model_mb, 2),
            "measured_over_model": round(m["shuffle_write_mb"] / model_mb, 2) if model_mb else None,
            "task_peak_execution_mb": m["task_peak_execution_mb"],
        }
    return out


def shuffle_table(r: dict) -> list[str]:
    rows = shuffle_check(r)
    if not rows:
        return []
    lines = [
        "| stage | Spark jobs | shuffle write MB | shuffle read MB | model MB | measured / model "
        "| task peak execution MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stage, f in rows.items():
        lines.append(
            f"| {stage} | {f['spark_jobs']} | {f['shuffle_write_mb']:,.1f} | "
            f"{f['shuffle_read_mb']:,.1f} | {f['model_mb']:,.1f} | {f['measured_over_model']} | "
            f"{f['task_peak_execution_mb']:,.1f} |"
        )
    return [*lines, ""]


def size_table(r: dict) -> list[str]:
    d = r["data"]
    lines = [
        f"## {r['size']}: {d['interactions']:,} interactions, {d['users']:,} users, "
        f"{d['items']:,} items (rank {r['config']['rank']}, {r['config']['iterations']} "
        f"iterations, k {r['config']['k']}, {r['machine']['cores']} cores)",
        "",
        "| stage | seconds | rows/s | over | peak RSS MB: Python driver | JVM | Python workers |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for stage in STAGES:
        if stage not in r["stages"]:
            continue
        s = r["stages"][stage]
        n, what = stage_rows(r, stage)
        lines.append(
            f"| {stage} | {s['seconds']:.1f} | {n / s['seconds']:,.0f} | {what} | "
            f"{s['python_driver_mb']:,.0f} | {s['jvm_mb']:,.0f} | {s['python_workers_mb']:,.0f} |"
        )
    b = r["baselines"]
    lines += [
        "",
        "| baseline | seconds | note |",
        "| --- | ---: | --- |",
        f"| MLlib recommendForAllUsers({r['config']['k']}) | "
        f"{b['mllib_recommend_for_all_users']['seconds']:.1f} | no exclusion, no cold items, "
        "noop sink |",
        *(
            [
                f"| our train stage, wals.solver=cg | {b['train_cg']['seconds']:.1f} | "
                "same tables and settings as `train` (MLlib), factor tables written |"
            ]
            if "train_cg" in b
            else []
        ),
        f"| implicit ALS, CG | {b['implicit_cg']['seconds']:.1f} | "
        f"{b['implicit_cg']['seconds_per_iteration']:.2f} s/iteration |",
        f"| implicit ALS, Cholesky | {b['implicit_cholesky']['seconds']:.1f} | "
        f"{b['implicit_cholesky']['seconds_per_iteration']:.2f} s/iteration |",
        f"| single-process matmul + torch.topk | {b['single_process_topk']['seconds']:.2f} | "
        "no exclusion, factors in memory |",
        f"| numpy matmul roofline | {b['matmul_roofline']['roofline_seconds']:.2f} | "
        f"{b['matmul_roofline']['gflops_per_s']} GFLOP/s × "
        f"{b['matmul_roofline']['scoring_gflop']} GFLOP |",
        f"| single-process encoder | {b['single_process_embed']['seconds']:.1f} | "
        f"{b['single_process_embed']['items_per_s']} texts/s over "
        f"{b['single_process_embed']['texts']:,} texts |",
        "",
    ]
    lines += shuffle_table(r)
    if r.get("mllib_blas"):
        lines += [f"MLlib BLAS: {r['mllib_blas']}", ""]
    if r.get("spark_peak_memory"):
        lines += [f"Spark executor peakMemoryMetrics (REST API): {r['spark_peak_memory']}", ""]
    return lines


def write_report(out: Path) -> str:
    results = [json.loads(p.read_text()) for p in sorted(out.glob("scale-*.json"))]
    results.sort(key=lambda r: r["data"]["interactions"])
    summary = {
        "targets": TARGETS,
        "ratios": {r["size"]: ratios(r) for r in results},
        "shuffle_vs_model": {
            r["size"]: shuffle_check(r)
            for r in results
            if "spark" in next(iter(r["stages"].values()))
        },  # fmt: skip
        "growth_exponent": growth(results),
    }
    (out / "scale.json").write_text(
        json.dumps({"summary": summary, "sizes": results}, indent=2) + "\n"
    )
    keys = list(TARGETS) + ["train_per_iteration_vs_implicit_cholesky"]
    md = ["# Scale benchmark", "", "## Target ratios", "",
          "| size | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]  # fmt: skip
    for size, rt in summary["ratios"].items():
        md.append(f"| {size} | " + " | ".join(str(rt[k]) for k in keys) + " |")
    md += ["", "Targets: " + "; ".join(f"{k} {v}" for k, v in TARGETS.items()), "", *NOTES]
    if summary["growth_exponent"]:
        md += ["## Growth (exponent of seconds vs interactions; 1 = linear)", ""]
        md += ["| sizes | " + " | ".join(STAGES) + " |", "| --- |" + " ---: |" * len(STAGES)]
        for key, g in summary["growth_exponent"].items():
            md.append(f"| {key} | " + " | ".join(str(g.get(s, "")) for s in STAGES) + " |")
        md.append("")
    for r in results:
        md += size_table(r)
    text = "\n".join(md)
    (out / "scale.md").write_text(text)
    return text
