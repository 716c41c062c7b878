"""Stage ``tune``: choose the WALS settings by a ranking metric on a validation split.

The validation split is carved from the run's training rows (per user, ``tune.
validation_fraction`` of them, by a seeded hash), so the test split is never looked at.
Each trial fits MLlib ALS on the rest with its rank, regParam, alpha, confidence form and
iterations, ranks every user's unseen items and scores the lists (``tune.metric``, NDCG@20
by default). Trials run ``tune.parallelism`` at a time as concurrent Spark jobs, which a
cluster with free cores runs side by side. Writes ``tune.json`` and the best settings as a
ready-to-use config (``tune.output``, default ``<run dir>/tuned.yaml``).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import yaml
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config, WalsConfig, replace
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.interactions import confidence_rating
from wals_roberta.jobs.data.splitting import split_interactions
from wals_roberta.jobs.model.lists import seen_items, top_k_lists
from wals_roberta.jobs.model.metrics import ranking_metrics
from wals_roberta.jobs.model.wals import fit_wals
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.session import in_this_thread

# Recorded for every trial; tune.metric ranks the trials by one of them.
TRIAL_METRICS = ("recall", "ndcg", "precision", "map", "hit_rate")


@dataclass(frozen=True)
class Trial:
    rank: int
    reg: float
    alpha: float
    confidence: str
    iterations: int


def trials(cfg: Config) -> list[Trial]:
    """The config's own settings first, then up to ``tune.trials`` grid points drawn
    without replacement (the whole grid when it is that small), in a seeded order."""
    t, w = cfg.tune, cfg.wals
    current = Trial(w.rank, w.reg, w.alpha, w.confidence, w.iterations)
    grid = [
        Trial(*p) for p in itertools.product(t.ranks, t.regs, t.alphas, t.confidences, t.iterations)
    ]
    grid = [g for g in grid if g != current]
    picked = grid if len(grid) <= t.trials else random.Random(t.seed).sample(grid, t.trials)
    return [current, *picked]


def validation_split(interactions: DataFrame, fraction: float, seed: int) -> DataFrame:
    """The training rows re-split into ``train`` (fit) and ``test`` (validation)."""
    train = interactions.filter(F.col(C.SPLIT) == C.TRAIN).drop(C.SPLIT)
    return split_interactions(train, holdout="random", fraction=fraction, seed=seed)


def score_trial(
    rows: DataFrame, trial: Trial, cfg: Config, k: int, n_items: int, checkpoints: str
) -> dict[str, Any]:
    started = time.perf_counter()
    rating = confidence_rating(
        F.col(C.STRENGTH), form=trial.confidence, log_epsilon=cfg.wals.log_epsilon
    )
    fit = rows.filter(F.col(C.SPLIT) == C.TRAIN).withColumn(C.RATING, rating)
    wals = WalsConfig(**{**asdict(cfg.wals), **asdict(trial)})
    model = fit_wals(fit, wals, checkpoints)
    users = model.userFactors.select(
        F.col("id").alias(C.USER_IDX), F.col("features").alias(C.FACTORS)
    )
    items = model.itemFactors.select(
        F.col("id").alias(C.ITEM_IDX), F.col("features").alias(C.FACTORS)
    )
    lists = top_k_lists(users, items, seen_items(fit), cfg.recommend, k=k)
    valid = rows.filter(F.col(C.SPLIT) == C.TEST).select(C.USER_IDX, C.ITEM_IDX)
    metrics = ranking_metrics(lists, valid, [k], n_catalog_items=n_items)
    return {
        **asdict(trial),
        **{m: metrics[f"{m}@{k}"] for m in TRIAL_METRICS},
        "seconds": round(time.perf_counter() - started, 1),
    }


def results_table(results: list[dict[str, Any]], k: int, metric: str) -> str:
    header = (
        f"{'#':>3} {'rank':>5} {'reg':>7} {'alpha':>6} {'confidence':>10} {'iters':>5} "
        f"{'recall@' + str(k):>10} {'ndcg@' + str(k):>9} {'seconds':>8}"
    )
    lines = [f"tune: {len(results)} trials by validation {metric}", header, "-" * len(header)]
    for i, r in enumerate(results):
        lines.append(
            f"{i:>3} {r['rank']:>5} {r['reg']:>7g} {r['alpha']:>6g} {r['confidence']:>10} "
            f"{r['iterations']:>5} {r['recall']:>10.4f} {r['ndcg']:>9.4f} {r['seconds']:>8}"
        )
    return "\n".join(lines)


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    """Tune on a prepared run (the CLI's ``tune`` prepares a new one first when no
    ``--run-id`` is given: :func:`pipeline.tune_run`)."""
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    t = cfg.tune
    name, _, cut = t.metric.partition("@")
    k = int(cut)
    with tables.stage(spark, run_, "tune", cfg) as report:
        rows = validation_split(
            tables.read_table(spark, run_, "interactions"), t.validation_fraction, t.seed
        ).persist(StorageLevel.MEMORY_AND_DISK)
        n_items = tables.read_table(spark, run_, "items").count()
        checkpoints = storage.join(run_.root, "checkpoints", f"{run_.run_id}-tune")
        todo = trials(cfg)
        with ThreadPoolExecutor(
            t.parallelism, initializer=in_this_thread, initargs=(spark,)
        ) as pool:
            results = list(
                pool.map(lambda tr: score_trial(rows, tr, cfg, k, n_items, checkpoints), todo)
            )
        rows.unpersist()
        storage.delete(spark, checkpoints)
        ranked = sorted(results, key=lambda r: -r[name])
        print(results_table(ranked, k, t.metric), flush=True)
        best = ranked[0]
        tuned = replace(cfg, **{f"wals.{key}": best[key] for key in asdict(todo[0])}).to_dict()
        target = storage.normalize(t.output) if t.output else run_.path("tuned.yaml")
        storage.write_text(
            spark,
            target,
            f"# Tuned by `wals-roberta tune` in run {run_.run_id}: validation {t.metric} "
            f"{best[name]:.4f} (the starting settings: {results[0][name]:.4f}).\n"
            + yaml.safe_dump(tuned, sort_keys=False),
        )
        summary = {"metric": t.metric, "trials": ranked, "best": best, "tuned_config": target}
        storage.write_text(spark, run_.path("tune.json"), json.dumps(summary, indent=2))
        report.update(best=best, tuned_config=target, trials=len(results))
        report["rows"]["validation"] = rows.filter(F.col(C.SPLIT) == C.TEST).count()
    return {"run_id": run_.run_id, "run_dir": run_.dir, **report}


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.tune``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``. It tunes the given or the
    latest run; ``wals-roberta tune`` without ``--run-id`` prepares a new one first."""
    return stage_main("tune", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
