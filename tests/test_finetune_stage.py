"""The finetune stage on Spark: TorchDistributor with two local processes, the weights saved,
fingerprinted and loaded by ``embed``."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, make_config
from tests.encoders import build_tiny_roberta
from tests.finetune_data import GENRES
from wals_roberta.jobs import embed_items, finetune, pipeline, prepare, project_items, train_wals
from wals_roberta.jobs.config import replace
from wals_roberta.jobs.model.embedding import encoder_spec
from wals_roberta.jobs.runs.errors import ConfigError, RunStateError
from wals_roberta.udfs.text_encoder import encoder_fingerprint

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def genre_run(tmp_path: Path, related: bool = True, **dotted):
    """90 items of three genres, 60 users who each like one genre; the title names the genre
    when ``related``, else every title is the same (text that says nothing about taste)."""
    titles = [f"{GENRES[i % 3]} {i}" if related else "a film" for i in range(90)]
    items = pd.DataFrame({"item": range(90), "title": titles})
    events = [(u, i) for u in range(60) for i in range(90) if i % 3 == u % 3 and (i + u) % 4]
    pd.DataFrame(events, columns=["user", "item"]).to_csv(tmp_path / "events.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    model = build_tiny_roberta(tmp_path / "roberta", items.title.tolist() * 3)
    return make_config(
        tmp_path,
        str(tmp_path / "events.csv"),
        **{
            "data.interactions.user_col": "user",
            "data.interactions.item_col": "item",
            "data.items.path": str(tmp_path / "items.csv"),
            "data.items.id_col": "item",
            "data.items.text_template": "{title}",
            "encoder.model": model,
            "encoder.max_length": 16,
            "encoder.finetune": {
                "enabled": True,
                "num_processes": 2,
                "epochs": 2,
                "batch_size": 16,
                "learning_rate": 5e-4,
                "lora_rank": 4,
                "patience": 2,
                **dotted,
            },
        },
    )


def test_two_processes_train_save_and_embed_uses_the_weights(spark, tmp_path):
    cfg = genre_run(tmp_path)
    prepare.run(spark, cfg, run_id="f")
    train_wals.run(spark, cfg, run_id="f")
    with pytest.raises(RunStateError, match="finetune"):
        embed_items.run(spark, cfg, run_id="f")
    report = finetune.run(spark, cfg, run_id="f")
    training = report["training"]
    assert training["processes"] == 2 and training["local_mode"] is True
    losses = [e["loss"] for e in training["epochs"]]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    weights = Path(report["encoder_path"])
    assert (weights / "model.safetensors").is_file() and (weights / "weights_sha256.txt").is_file()
    v = report["validation"]
    assert v["frozen"] is not None and v["finetuned"] is not None and v["kept"] == "finetuned"
    frozen = encoder_fingerprint(encoder_spec(cfg.encoder))
    assert report["fingerprint"] != frozen
    embedded = embed_items.run(spark, cfg, run_id="f")
    assert embedded["encoder"]["fingerprint"] == report["fingerprint"]
    assert embedded["encoder"]["model"] == str(weights)
    # The go/no-go embedded the validation items with both encoders into the cache.
    counts = embedded["counts"]
    assert counts["encoded_texts"] + counts["reused_texts"] == 90 and counts["reused_texts"] > 0
    # Fine-tuning held out project's pseudo-cold items, and validated on its split.
    split = report["validation_split"]
    assert split["pseudo_cold_items"] > 0 and split["scored_pairs"] > 0
    assert v["metric"] == cfg.validation.metric and v["frozen_map"] and v["finetuned_map"]
    projected = project_items.run(spark, cfg, run_id="f")
    assert projected["validation"]["counts"] == split
    off = replace(cfg, **{"encoder.finetune.enabled": False})
    assert embed_items.run(spark, off, run_id="f")["encoder"]["fingerprint"] == frozen


def test_auto_keeps_the_frozen_encoder_when_text_says_nothing_about_taste(spark, tmp_path):
    cfg = genre_run(tmp_path, related=False, enabled="auto", epochs=1)
    prepare.run(spark, cfg, run_id="u")
    train_wals.run(spark, cfg, run_id="u")
    report = finetune.run(spark, cfg, run_id="u")
    v = report["validation"]
    assert v["finetuned"] <= v["frozen"] * (1 + v["min_gain"]), v
    assert v["kept"] == "frozen" and report["use_finetuned"] is False
    embedded = embed_items.run(spark, cfg, run_id="u")
    assert embedded["encoder"]["fingerprint"] == encoder_fingerprint(encoder_spec(cfg.encoder))


def test_the_stage_runs_on_spark_connect(tmp_path):
    """The pipeline with fine-tuning, every command on a local Connect server: the stage
    trains, and ``embed`` encodes with the weights it kept."""
    pytest.importorskip("grpc", reason="Spark Connect needs the connect extra (pyspark[connect])")
    cfg = genre_run(tmp_path, epochs=1)
    raw = json.loads(json.dumps(dataclasses.asdict(cfg)))
    raw["spark"]["master"] = None
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "SPARK_REMOTE": "local[2]"}
    argv = [sys.executable, "-m", "wals_roberta.jobs.cli", "pipeline", "--config"]
    done = subprocess.run(
        [*argv, str(tmp_path / "conf.yaml"), "--run-id", "c"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    manifest = json.loads((Path(cfg.output.root) / "runs" / "c" / "manifest.json").read_text())
    tuned, embedded = manifest["stages"]["finetune"], manifest["stages"]["embed"]
    assert tuned["status"] == "complete" and tuned["use_finetuned"] is True
    assert tuned["training"]["processes"] == 2
    assert embedded["encoder"]["fingerprint"] == tuned["fingerprint"]


def test_pipeline_puts_finetune_between_train_and_embed(tmp_path):
    names = [n for n, _ in pipeline.stages(genre_run(tmp_path, enabled="auto"))]
    assert names.index("train") < names.index("finetune") == names.index("embed") - 1
    off = [n for n, _ in pipeline.stages(genre_run(tmp_path, enabled=False))]
    assert "finetune" not in off


def test_the_stage_alone_with_finetune_off_is_a_config_error(spark, tmp_path):
    cfg = genre_run(tmp_path, enabled=False)
    with pytest.raises(ConfigError, match="encoder.finetune.enabled"):
        finetune.run(spark, cfg, run_id="x")
