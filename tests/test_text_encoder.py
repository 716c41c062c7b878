"""The text encoder without Spark: pooling, loading, RoBERTa path, semantics, bad models."""

import numpy as np
import pytest
import torch

from tests.encoders import MINILM, build_tiny_roberta
from wals_roberta.udfs.text_encoder import (
    EncoderError,
    EncoderSpec,
    encode_texts,
    encoder_fingerprint,
    load_encoder,
    pool,
)

TEXTS = [
    "Toy Story (1995). Genres: Animation Children's Comedy",
    "GoldenEye (1995). Genres: Action Adventure Thriller",
    "Four Rooms (1995). Genres: Thriller",
    "Get Shorty (1995). Genres: Action Comedy Drama",
    "Copycat (1995). Genres: Crime Drama Thriller",
]


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"), TEXTS * 20)


def test_pooling_matches_hand_computation():
    # batch of 2, 3 tokens, dim 2; the second text has one padding token
    layers = [torch.full((2, 3, 2), float(layer)) for layer in range(6)]
    layers[-1] = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[2.0, 0.0], [4.0, 2.0], [100.0, 100.0]]]
    )
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert pool(layers, mask, "cls").tolist() == [[1.0, 2.0], [2.0, 0.0]]
    assert pool(layers, mask, "mean").tolist() == [[3.0, 4.0], [3.0, 1.0]]
    # last four layers are 2, 3, 4 and the explicit one: their average, then masked mean
    expected_first = [(2 + 3 + 4 + 3.0) / 4, (2 + 3 + 4 + 4.0) / 4]
    expected_second = [(2 + 3 + 4 + 3.0) / 4, (2 + 3 + 4 + 1.0) / 4]
    got = pool(layers, mask, "last4_mean").tolist()
    assert got == [pytest.approx(expected_first), pytest.approx(expected_second)]


@pytest.mark.parametrize("pooling", ["cls", "mean", "last4_mean"])
def test_tiny_roberta_encodes_offline(tiny_roberta, pooling):
    tokenizer, model = load_encoder(tiny_roberta)
    assert type(model).__name__ == "RobertaModel"
    spec = EncoderSpec(model=tiny_roberta, pooling=pooling, max_length=16, batch_size=2)
    vectors = encode_texts(TEXTS, spec, tokenizer, model)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # batching and the length sort do not change a text's vector
    one_by_one = np.vstack([encode_texts([t], spec, tokenizer, model) for t in TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)


def test_long_text_is_truncated_not_an_error(tiny_roberta):
    tokenizer, model = load_encoder(tiny_roberta)
    spec = EncoderSpec(model=tiny_roberta, max_length=16)
    long = "Comedy " * 20_000
    vectors = encode_texts([long, long[:200]], spec, tokenizer, model)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)  # both cut to 16 tokens


def test_minilm_puts_related_titles_closer():
    tokenizer, model = load_encoder(MINILM)
    spec = EncoderSpec(model=MINILM, pooling="mean")
    v = encode_texts(
        [
            "Star Wars (1977). Genres: Action Adventure Sci-Fi War",
            "Return of the Jedi (1983). Genres: Action Adventure Sci-Fi War",
            "Sense and Sensibility (1995). Genres: Drama Romance",
        ],
        spec,
        tokenizer,
        model,
    )
    related, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert related > unrelated + 0.1


def test_missing_model_says_how_to_stage_it(tmp_path, monkeypatch):
    with pytest.raises(EncoderError, match="no such directory"):
        load_encoder(str(tmp_path / "models" / "nope"))
    # Offline (HF_HUB_OFFLINE): only the local cache is looked at.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="Stage it where executors can read it"):
        load_encoder("roberta-base-that-is-not-cached")


@pytest.mark.slow
def test_missing_model_online_says_how_to_stage_it(monkeypatch):
    """The same through the hub lookup: where the hub cannot be reached, huggingface_hub
    retries for about 25 s before the lookup fails."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(EncoderError, match="Stage it where executors can read it"):
        load_encoder("roberta-base-that-is-not-cached")


def test_a_decoder_is_refused(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(str(tmp_path))
    with pytest.raises(EncoderError, match="'gpt2' model is not a text encoder"):
        load_encoder(str(tmp_path))


def test_fingerprint_changes_with_weights_and_pooling(tiny_roberta, tmp_path):
    base = EncoderSpec(model=tiny_roberta)
    assert encoder_fingerprint(base) == encoder_fingerprint(EncoderSpec(model=tiny_roberta))
    assert encoder_fingerprint(base) != encoder_fingerprint(
        EncoderSpec(model=tiny_roberta, pooling="cls")
    )
    assert encoder_fingerprint(base) != encoder_fingerprint(
        EncoderSpec(model=tiny_roberta, max_length=64)
    )
    other = build_tiny_roberta(tmp_path / "other", TEXTS * 10 + ["something else entirely"])
    assert encoder_fingerprint(base) != encoder_fingerprint(EncoderSpec(model=other))
