"""Stage ``finetune`` (optional, between ``train`` and ``embed``): the text encoder trained
toward the WALS space, distributed by TorchDistributor, kept only when it wins.

1. Training data as Parquet under the run directory (``finetune_data/``): warm items with
   text and factors, a seeded share of them held out as pseudo-cold; the training pairs of
   the other items with their user's WALS vector (each process reads its own files); the
   pairs of the held-out items for a sample of users (validation).
2. Train with ``encoder.finetune.num_processes`` processes (``udfs/finetune_worker.py``):
   on the driver in local mode, in barrier tasks on a cluster (one per GPU when Spark
   schedules GPUs, else CPU workers with gloo).
3. Go/no-go: the frozen and fine-tuned pseudo-cold figures side by side in the manifest;
   ``auto`` keeps the fine-tuned encoder (saved under ``finetuned_encoder/``) only when it
   wins by ``min_gain``, ``true`` forces it. ``embed`` then encodes with the kept encoder;
   its fingerprint hashes the saved weights, so frozen vectors are never reused for it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.config import Config, metric_cut
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.item_text import TEXT
from wals_roberta.jobs.model.embedding import encoder_spec
from wals_roberta.jobs.model.finetune import FinetuneSettings
from wals_roberta.jobs.model.finetune_eval import keep_finetuned
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.errors import ConfigError
from wals_roberta.udfs.finetune_worker import ITEMS, PAIRS, VALIDATION, local_path, train_process
from wals_roberta.udfs.text_encoder import encoder_fingerprint

HELD, USER_FACTORS = "held", "user_factors"
BUCKETS = 1_000_000
# A file of the full weights' digest beside them: the encoder fingerprint hashes only the
# head and tail of large weight files, and reads every .txt file whole.
DIGEST_FILE = "weights_sha256.txt"


def finetune_items(items: DataFrame, item_factors: DataFrame, *, fraction: float, seed: int):
    """``(item_idx, text, factors, held)``: warm items with text; ``held`` a seeded share."""
    bucket = F.abs(F.xxhash64(F.lit(seed), F.lit("finetune"), F.col(C.ITEM_IDX))) % BUCKETS
    return (
        items.filter(F.col(TEXT).isNotNull())
        .select(C.ITEM_IDX, TEXT)
        .join(item_factors.select(C.ITEM_IDX, C.FACTORS), C.ITEM_IDX)
        .withColumn(HELD, bucket < F.lit(int(fraction * BUCKETS)))
    )


def finetune_pairs(interactions: DataFrame, user_factors: DataFrame, items: DataFrame):
    """Training pairs ``(user_idx, item_idx, user_factors, held)`` of the warm items."""
    return (
        interactions.filter(F.col(C.SPLIT) == C.TRAIN)
        .select(C.USER_IDX, C.ITEM_IDX)
        .distinct()
        .join(items.select(C.ITEM_IDX, HELD), C.ITEM_IDX)
        .join(user_factors.select(C.USER_IDX, F.col(C.FACTORS).alias(USER_FACTORS)), C.USER_IDX)
    )


def write_training_data(spark, cfg: Config, run: tables.Run, folder: str) -> dict[str, int]:
    """Step 1: the three Parquet tables under ``folder``; returns their row counts."""
    f = cfg.encoder.finetune
    items = finetune_items(
        tables.read_table(spark, run, "items"),
        tables.read_table(spark, run, "item_factors"),
        fraction=f.validation_fraction,
        seed=f.seed,
    ).persist()
    pairs = finetune_pairs(
        tables.read_table(spark, run, "interactions"),
        tables.read_table(spark, run, "user_factors"),
        items,
    ).persist()
    items.write.mode("overwrite").parquet(f"{folder}/{ITEMS}")
    train = pairs.filter(~F.col(HELD)).drop(HELD)
    train.repartition(f.num_processes * 2).write.mode("overwrite").parquet(f"{folder}/{PAIRS}")
    held = pairs.filter(F.col(HELD)).drop(HELD)
    users = held.select(C.USER_IDX).distinct().count()
    keep = min(1.0, cfg.validation.max_users / max(1, users))
    bucket = F.abs(F.xxhash64(F.lit(f.seed), F.lit("users"), F.col(C.USER_IDX))) % BUCKETS
    held.filter(bucket < F.lit(int(keep * BUCKETS))).coalesce(1).write.mode("overwrite").parquet(
        f"{folder}/{VALIDATION}"
    )
    counts = {"items": items.count(), "train_pairs": train.count(), "validation_users": users}
    items.unpersist()
    pairs.unpersist()
    return counts


def settings_for(spark: SparkSession, cfg: Config, local: bool, use_gpu: bool):
    e, f = cfg.encoder, cfg.encoder.finetune
    cores = os.cpu_count() or 1
    # Threads follow the task's cores on a cluster, the driver's share of cores locally.
    task_cpus = int(spark.conf.get("spark.task.cpus", "1") or 1)
    threads = max(1, cores // f.num_processes) if local else task_cpus
    return FinetuneSettings(
        model=e.model, pooling=e.pooling, max_length=e.max_length, normalize=e.normalize,
        objective=f.objective, learning_rate=f.learning_rate,
        head_learning_rate=f.head_learning_rate, batch_size=f.batch_size, epochs=f.epochs,
        patience=f.patience, lora_rank=f.lora_rank, freeze_layers=f.freeze_layers,
        l2sp=f.l2sp, temperature=f.temperature, max_pairs_per_epoch=f.max_pairs_per_epoch,
        seed=f.seed, threads=threads, device="cuda" if use_gpu else "cpu",
    )  # fmt: skip


def where_to_train(spark: SparkSession, cfg: Config) -> tuple[bool, bool]:
    """``(local_mode, use_gpu)``: processes on the driver under a local master; GPUs when
    ``encoder.device`` asks for CUDA, or (``auto``) when Spark schedules task GPUs (on a
    cluster) or the driver has one (local)."""
    master = spark.conf.get("spark.master", None) or "local"
    local = master.startswith("local")
    device = cfg.encoder.device
    if device != "auto":
        return local, device.startswith("cuda")
    if not local:
        return local, spark.conf.get("spark.task.resource.gpu.amount", None) is not None
    import torch

    return local, torch.cuda.is_available()


def distribute(spark, cfg: Config, data_dir: str, out_dir: str) -> dict[str, Any]:
    """Step 2: ``train_process`` in ``num_processes`` processes; rank 0's result."""
    from pyspark.ml.torch.distributor import TorchDistributor

    local, use_gpu = where_to_train(spark, cfg)
    settings = settings_for(spark, cfg, local, use_gpu)
    cut = metric_cut(cfg.validation.metric)
    k = min(cut[1] if cut else 20, cfg.recommend.k)
    n = cfg.encoder.finetune.num_processes
    distributor = TorchDistributor(num_processes=n, local_mode=local, use_gpu=use_gpu)
    result = distributor.run(train_process, settings, data_dir, out_dir, k)
    return result | {"processes": n, "local_mode": local, "device": settings.device, "k": k}


def write_digest(encoder_dir: str) -> str:
    digest = hashlib.sha256()
    for file in sorted(Path(encoder_dir).glob("*.safetensors")):
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    (Path(encoder_dir) / DIGEST_FILE).write_text(digest.hexdigest() + "\n")
    return digest.hexdigest()


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    f = cfg.encoder.finetune
    if f.enabled is False:
        raise ConfigError("finetune: encoder.finetune.enabled is false; set it to true or auto")
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    with tables.stage(spark, run_, "finetune", cfg) as report:
        data_dir = run_.path("finetune_data")
        report["counts"] = write_training_data(spark, cfg, run_, data_dir)
        out_dir = local_path(run_.path("finetuned_encoder"))
        result = distribute(spark, cfg, data_dir, out_dir)
        frozen, tuned = result["frozen_validation"], result["finetuned_validation"]
        use = tuned is not None and keep_finetuned(f.enabled, frozen or 0.0, tuned, f.min_gain)
        digest = write_digest(result["encoder_path"])
        report["validation"] = {
            "metric": f"recall@{result['k']}",
            "frozen": frozen,
            "finetuned": tuned,
            "min_gain": f.min_gain,
            "kept": "finetuned" if use else "frozen",
        }
        report["training"] = {k: v for k, v in result.items() if k not in ("encoder_path",)}
        report["use_finetuned"] = use
        report["encoder_path"] = result["encoder_path"]
        report["weights_sha256"] = digest
        spec = replace(encoder_spec(cfg.encoder), model=result["encoder_path"])
        report["fingerprint"] = encoder_fingerprint(spec)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.finetune``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("finetune", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
