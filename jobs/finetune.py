"""Stage ``finetune`` (optional, between ``train`` and ``embed``): the text encoder trained
toward the WALS space, distributed by TorchDistributor, kept only when it wins.

It works on the validation split and model of the cold-start choices
(:mod:`cold.validation`: a second WALS model fitted on the training rows minus each user's
share and every row of the pseudo-cold items), so that its figures, like ``project``'s,
rank items against interactions that neither WALS nor the fine-tuning saw.

1. Training data as Parquet under the run directory (``finetune_data/``): the items with
   text, with the validation model's factors or flagged pseudo-cold; the validation model's
   training pairs with their user's vector (each process reads its own files); the
   validation pairs of the pseudo-cold items for the scored users.
2. Train with ``encoder.finetune.num_processes`` processes (``udfs/finetune_worker.py``):
   on the driver in local mode, in barrier tasks on a cluster (one per GPU when Spark
   schedules GPUs, else CPU workers with gloo). Each epoch is scored on the pseudo-cold
   pairs through a ridge map (in the worker); the best epoch is kept, and training stops
   after ``patience`` epochs without a better figure.
3. Go/no-go (:mod:`cold.encoder_choice`): the frozen and the fine-tuned encoder each embed
   the validation items, the text map is chosen for each as ``project`` chooses it, and
   their figures stand side by side in the manifest. ``auto`` keeps the fine-tuned encoder
   (saved under ``finetuned_encoder/``) only when it wins by ``min_gain``, ``true`` forces
   it. ``embed`` then encodes with the kept encoder; its fingerprint hashes the saved
   weights, so frozen vectors are never reused for it, and both encoders' vectors of the
   validation items are already in the embedding cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from wals_roberta.jobs.cold.encoder_choice import encoder_figure, validation_items
from wals_roberta.jobs.cold.validation import ValidationSet, build_validation
from wals_roberta.jobs.config import Config, metric_cut
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.item_text import TEXT
from wals_roberta.jobs.model.embedding import encoder_spec
from wals_roberta.jobs.model.finetune import FinetuneSettings
from wals_roberta.jobs.model.finetune_eval import keep_finetuned
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.entry import stage_main
from wals_roberta.jobs.runs.errors import ConfigError
from wals_roberta.udfs.finetune_worker import ITEMS, PAIRS, VALIDATION, local_path, train_process
from wals_roberta.udfs.text_encoder import encoder_fingerprint

HELD, USER_FACTORS = "held", "user_factors"
# A file of the full weights' digest beside them: the encoder fingerprint hashes only the
# head and tail of large weight files, and reads every .txt file whole.
DIGEST_FILE = "weights_sha256.txt"


def finetune_items(items: DataFrame, val: ValidationSet) -> DataFrame:
    """``(item_idx, text, factors, held)``: the items with text that the validation model
    trained (with its factors) and the pseudo-cold ones (``held``, no factors)."""
    held = val.pseudo_cold.select(C.ITEM_IDX, F.lit(True).alias(HELD))
    return (
        items.filter(F.col(TEXT).isNotNull())
        .select(C.ITEM_IDX, TEXT)
        .join(val.item_factors.select(C.ITEM_IDX, C.FACTORS), C.ITEM_IDX, "left")
        .join(held, C.ITEM_IDX, "left")
        .withColumn(HELD, F.coalesce(F.col(HELD), F.lit(False)))
        .filter(F.col(C.FACTORS).isNotNull() | F.col(HELD))
    )


def with_user_vectors(pairs: DataFrame, users: DataFrame) -> DataFrame:
    """``pairs(user_idx, item_idx)`` with the user's validation-model vector."""
    vectors = users.select(C.USER_IDX, F.col(C.FACTORS).alias(USER_FACTORS))
    return pairs.select(C.USER_IDX, C.ITEM_IDX).distinct().join(vectors, C.USER_IDX)


def write_training_data(
    spark, cfg: Config, run: tables.Run, val: ValidationSet, folder: str
) -> dict[str, int]:
    """Step 1: the three Parquet tables under ``folder``; returns their row counts."""
    f = cfg.encoder.finetune
    items = finetune_items(tables.read_table(spark, run, "items"), val).persist()
    trained = items.filter(~F.col(HELD)).select(C.ITEM_IDX)
    train = with_user_vectors(val.fit, val.user_factors).join(trained, C.ITEM_IDX, "left_semi")
    held = with_user_vectors(
        val.held.join(val.pseudo_cold, C.ITEM_IDX, "left_semi"), val.users
    ).join(items.filter(F.col(HELD)).select(C.ITEM_IDX), C.ITEM_IDX, "left_semi")
    items.write.mode("overwrite").parquet(f"{folder}/{ITEMS}")
    train.repartition(f.num_processes * 2).write.mode("overwrite").parquet(f"{folder}/{PAIRS}")
    held.coalesce(1).write.mode("overwrite").parquet(f"{folder}/{VALIDATION}")
    reread = spark.read.parquet(f"{folder}/{ITEMS}")
    counts = {
        "items": reread.count(),
        "held_out_items": reread.filter(F.col(HELD)).count(),
        "train_pairs": spark.read.parquet(f"{folder}/{PAIRS}").count(),
        "validation_pairs": spark.read.parquet(f"{folder}/{VALIDATION}").count(),
    }
    items.unpersist()
    return counts


def settings_for(spark: SparkSession, cfg: Config, local: bool, use_gpu: bool):
    e, f = cfg.encoder, cfg.encoder.finetune
    cores = os.cpu_count() or 1
    # Threads follow the task's cores on a cluster, the driver's share of cores locally.
    task_cpus = int(spark.conf.get("spark.task.cpus", "1") or 1)
    threads = max(1, cores // f.num_processes) if local else task_cpus
    return FinetuneSettings.from_config(e, threads=threads, device="cuda" if use_gpu else "cpu")


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


def finetune_validation(spark, cfg: Config, run: tables.Run, items: DataFrame) -> ValidationSet:
    """The validation split and model of the cold-start choices (:mod:`cold.validation`),
    with the counts ``project`` uses, so that both hold out the same pseudo-cold items."""
    factors = tables.read_table(spark, run, "item_factors").select(C.ITEM_IDX)
    with_text = items.filter(F.col(TEXT).isNotNull()).select(C.ITEM_IDX)
    n_cold = with_text.join(factors, C.ITEM_IDX, "left_anti").count()
    checkpoints = storage.join(run.root, "checkpoints", f"{run.run_id}-finetune-validation")
    interactions = tables.read_table(spark, run, "interactions")
    return build_validation(interactions, cfg, checkpoints, n_cold=n_cold, n_items=items.count())


def go_or_no_go(spark, cfg: Config, run, val, items, frozen_spec, tuned_spec) -> dict[str, Any]:
    """Step 3: both encoders' figures on the validation (:mod:`cold.encoder_choice`) and the
    one kept."""
    f = cfg.encoder.finetune
    record: dict[str, Any] = {"metric": cfg.validation.metric, "min_gain": f.min_gain}
    if not val.counts["pseudo_cold_items"] or not val.counts["scored_pairs"]:
        record["skipped"] = "no pseudo-cold items or validation pairs to rank"
        record["kept"] = "finetuned" if f.enabled is True else "frozen"
        return record
    texts = validation_items(val, items).localCheckpoint()
    frozen = encoder_figure(spark, cfg, run, val, texts, frozen_spec)
    tuned = encoder_figure(spark, cfg, run, val, texts, tuned_spec)
    texts.unpersist()
    use = keep_finetuned(f.enabled, frozen["value"], tuned["value"], f.min_gain)
    return record | {
        "frozen": frozen["value"],
        "finetuned": tuned["value"],
        "frozen_map": frozen["map"],
        "finetuned_map": tuned["map"],
        "kept": "finetuned" if use else "frozen",
    }


def run(spark: SparkSession, cfg: Config, run_id: str | None = None) -> dict[str, Any]:
    f = cfg.encoder.finetune
    if f.enabled is False:
        raise ConfigError("finetune: encoder.finetune.enabled is false; set it to true or auto")
    run_ = tables.open_run(spark, cfg, run_id, create=False)
    out_dir = local_path(run_.path("finetuned_encoder"))
    if "://" in out_dir:
        raise ConfigError(
            f"output.root: the finetune stage saves the encoder where every worker reads it, "
            f"a local or mounted path (a shared mount on a multi-node cluster, dbfs:/ or "
            f"/Volumes on Databricks); got {run_.root}"
        )
    with tables.stage(spark, run_, "finetune", cfg) as report:
        items = tables.read_table(spark, run_, "items")
        val = finetune_validation(spark, cfg, run_, items)
        report["validation_split"] = val.counts
        data_dir = run_.path("finetune_data")
        report["counts"] = write_training_data(spark, cfg, run_, val, data_dir)
        result = distribute(spark, cfg, data_dir, out_dir)
        digest = write_digest(result["encoder_path"])
        frozen_spec = encoder_spec(cfg.encoder)
        tuned_spec = replace(frozen_spec, model=result["encoder_path"])
        report["validation"] = go_or_no_go(spark, cfg, run_, val, items, frozen_spec, tuned_spec)
        val.release()
        report["training"] = {k: v for k, v in result.items() if k not in ("encoder_path",)}
        report["use_finetuned"] = report["validation"]["kept"] == "finetuned"
        report["encoder_path"] = result["encoder_path"]
        report["weights_sha256"] = digest
        report["fingerprint"] = encoder_fingerprint(tuned_spec)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m wals_roberta.jobs.finetune``: this stage alone,
    with the CLI's ``--config``, ``--set`` and ``--run-id``."""
    return stage_main("finetune", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
