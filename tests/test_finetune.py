"""Fine-tuning the encoder toward the WALS space: the training function, its go/no-go."""

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.encoders import build_tiny_roberta  # noqa: E402
from tests.finetune_data import genre_data  # noqa: E402
from wals_roberta.jobs.config.schema import EncoderConfig  # noqa: E402
from wals_roberta.jobs.model.finetune import FinetuneSettings, fit_encoder  # noqa: E402
from wals_roberta.jobs.model.finetune_eval import keep_finetuned, recall_at_k  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data, _ = genre_data()
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny"), data.texts + ["a film"])


def settings(model, **kw):
    """The config's settings (its defaults) with the encoder and a small, fast schedule."""
    encoder = EncoderConfig(model=model)
    base = dict(epochs=3, batch_size=16, learning_rate=5e-4, patience=3,
                max_pairs_per_epoch=320, lora_rank=4, freeze_layers=2)  # fmt: skip
    return replace(FinetuneSettings.from_config(encoder), **(base | kw))


@pytest.mark.parametrize("objective", ["ranking", "regression"])
def test_loss_falls_and_weights_are_saved(tiny, tmp_path, objective):
    data, validation = genre_data()
    result = fit_encoder(settings(tiny, objective=objective), data, validation, str(tmp_path))
    losses = [e["loss"] for e in result["epochs"]]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert result["adapted"] in ("lora", "upper_layers (peft not installed)")
    assert result["frozen_validation"] is not None and result["finetuned_validation"] is not None
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    assert (tmp_path / "head.safetensors").is_file()


def test_saved_encoder_loads_and_differs_from_the_start(tiny, tmp_path):
    from wals_roberta.udfs.text_encoder import EncoderSpec, encode_texts, load_encoder

    data, validation = genre_data()
    result = fit_encoder(settings(tiny, lora_rank=0, epochs=1), data, validation, str(tmp_path))
    before = encode_texts(data.texts[:5], EncoderSpec(tiny), *load_encoder(tiny))
    path = result["encoder_path"]
    after = encode_texts(data.texts[:5], EncoderSpec(path), *load_encoder(path))
    assert after.shape == before.shape and not np.allclose(after, before, atol=1e-4)


def test_auto_keeps_frozen_when_text_says_nothing_about_taste(tiny):
    data, validation = genre_data(related=False)
    result = fit_encoder(settings(tiny, epochs=2), data, validation, None)
    frozen, tuned = result["frozen_validation"], result["finetuned_validation"]
    assert frozen == pytest.approx(tuned)
    assert not keep_finetuned("auto", frozen, tuned, 0.01)
    assert keep_finetuned(True, frozen, tuned, 0.01)
    assert not keep_finetuned(False, 0.1, 0.9, 0.01)
    assert keep_finetuned("auto", 0.30, 0.32, 0.01) and not keep_finetuned("auto", 0.3, 0.302, 0.01)


def test_recall_at_k_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.2, 0.3]])
    assert recall_at_k(scores, [np.array([0, 1]), np.array([0])], 2) == pytest.approx(0.25)
