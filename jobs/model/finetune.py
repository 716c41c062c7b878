"""Fine-tuning the text encoder toward the WALS space (torch, no Spark).

1. Build the model: the encoder with LoRA adapters on its upper layers (peft, when
   installed and ``lora_rank`` > 0) or with its upper layers trained in full, the embeddings
   and lower layers frozen either way; a linear head from the pooled text vector to the
   factor space.
2. Train: ``ranking`` scores each (user, warm item) pair against the batch's other items
   (in-batch negatives, cosine over a temperature, WALS user vectors fixed); ``regression``
   fits the head's output to the item's WALS factors (MSE). L2-SP pulls the trained weights
   toward the starting ones. With a process group the model is wrapped in DDP.
3. Validate after every epoch on the pseudo-cold items (:mod:`finetune_eval`, rank 0), stop
   after ``patience`` epochs without a better figure, keep the best epoch.
4. Save (rank 0): the encoder with adapters merged, as safetensors with its tokenizer, so
   ``embed`` loads it like any local model; the head beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wals_roberta.jobs.config.schema import EncoderConfig
from wals_roberta.jobs.model.finetune_eval import PseudoCold, pseudo_cold_recall
from wals_roberta.udfs.text_encoder import EncoderSpec, encode_texts, load_encoder, pool


@dataclass(frozen=True)
class FinetuneSettings:
    """Plain values for the workers (picklable; no config object). Built from the config by
    :meth:`from_config`, so the defaults are ``encoder.finetune``'s, in one place."""

    model: str
    pooling: str
    max_length: int
    normalize: bool
    objective: str
    learning_rate: float
    head_learning_rate: float
    batch_size: int
    epochs: int
    patience: int
    lora_rank: int
    freeze_layers: int | None
    l2sp: float
    temperature: float
    max_pairs_per_epoch: int
    seed: int
    threads: int
    device: str

    @staticmethod
    def from_config(e: EncoderConfig, *, threads: int = 1, device: str = "cpu"):
        """The settings of ``e`` (an ``encoder`` config) and its ``finetune`` section."""
        f = e.finetune
        return FinetuneSettings(
            model=e.model, pooling=e.pooling, max_length=e.max_length, normalize=e.normalize,
            objective=f.objective, learning_rate=f.learning_rate,
            head_learning_rate=f.head_learning_rate, batch_size=f.batch_size,
            epochs=f.epochs, patience=f.patience, lora_rank=f.lora_rank,
            freeze_layers=f.freeze_layers, l2sp=f.l2sp, temperature=f.temperature,
            max_pairs_per_epoch=f.max_pairs_per_epoch, seed=f.seed, threads=threads,
            device=device,
        )  # fmt: skip


@dataclass(frozen=True)
class FinetuneData:
    """One process's share: item texts and factors (all items) and its training pairs."""

    texts: list[str]  # per item position
    item_factors: np.ndarray  # (items, rank) WALS factors
    pair_items: np.ndarray  # (pairs,) item positions
    pair_users: np.ndarray  # (pairs, rank) the pair's WALS user vector


def prepare_encoder(net: Any, lora_rank: int, freeze_layers: int | None) -> tuple[Any, str]:
    """Freeze the embeddings, the pooler and the lower layers; adapters on the rest.
    Returns the model to train and how it is adapted (``lora`` or ``upper_layers``)."""
    layers = int(net.config.num_hidden_layers)
    frozen = layers // 2 if freeze_layers is None else min(freeze_layers, layers)
    for name, param in net.named_parameters():
        index = _layer_index(name)
        param.requires_grad = index is not None and index >= frozen
    if lora_rank > 0:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            return net, "upper_layers (peft not installed)"
        lora = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.0,
            target_modules=["query", "value"],
            layers_to_transform=list(range(frozen, layers)),
            layers_pattern="layer",
        )
        return get_peft_model(net, lora), "lora"
    return net, "upper_layers"


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    if "layer" in parts:
        after = parts[parts.index("layer") + 1]
        return int(after) if after.isdigit() else None
    return None


def ranking_loss(users: Any, items: Any, item_ids: Any, temperature: float) -> Any:
    """Cross-entropy of each user's own item against the batch's other items; another pair
    of the same item is not counted as a negative."""
    import torch
    import torch.nn.functional as F

    logits = F.normalize(users, dim=1) @ F.normalize(items, dim=1).T / temperature
    same = item_ids[:, None] == item_ids[None, :]
    eye = torch.eye(len(item_ids), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(item_ids), device=logits.device))


def tuned_model(net: Any, rank: int, pooling: str, normalize: bool) -> Any:
    """Encoder + head as one torch module (the class is made here: torch is imported only
    where training runs)."""
    import torch

    class Tuned(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.head = torch.nn.Linear(int(net.config.hidden_size), rank)

        def forward(self, batch: Any) -> Any:
            hidden_states = pooling != "cls"
            out = self.net(**batch, output_hidden_states=hidden_states)
            states = out.hidden_states if hidden_states else [out.last_hidden_state]
            vectors = pool(states, batch["attention_mask"], pooling).float()
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=1)
            return self.head(vectors)

    return Tuned()


def fit_encoder(
    s: FinetuneSettings,
    data: FinetuneData,
    validation: PseudoCold | None,
    out_dir: str | None,
    *,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Any]:
    """Train (numbered steps in the module doc); the result (rank 0's is the one that counts):
    per-epoch loss and validation, the frozen figure, the best epoch and where it was saved."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(max(1, s.threads))
    torch.manual_seed(s.seed)
    device = torch.device(s.device)
    tokenizer, net = load_encoder(s.model, "cpu")
    net, adapted = prepare_encoder(net.train(), s.lora_rank, s.freeze_layers)
    module = tuned_model(net, data.item_factors.shape[1], s.pooling, s.normalize).to(device)
    encoder_params = [(n, p) for n, p in module.net.named_parameters() if p.requires_grad]
    start = [p.detach().clone() for _, p in encoder_params]
    model = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for _, p in encoder_params], "lr": s.learning_rate},
            {"params": list(module.head.parameters()), "lr": s.head_learning_rate},
        ],
        weight_decay=0.0,
    )
    steps = _steps_per_epoch(s, len(data.pair_items), world)
    spec = EncoderSpec(model=s.model, pooling=s.pooling, max_length=s.max_length,
                       batch_size=64, normalize=s.normalize)  # fmt: skip
    result: dict[str, Any] = {"adapted": adapted, "steps_per_epoch": steps, "epochs": []}
    frozen = _validate(module, tokenizer, spec, data, validation) if rank == 0 else None
    result["frozen_validation"] = frozen
    best, best_epoch, best_state, waited = frozen, None, None, 0
    for epoch in range(s.epochs):
        started = time.time()
        loss = _train_epoch(model, module, tokenizer, optimizer, data, s, steps, epoch, rank,
                            encoder_params, start, device)  # fmt: skip
        if world > 1:
            total = torch.tensor([loss], dtype=torch.float64)
            dist.all_reduce(total)
            loss = float(total.item()) / world
        stop = torch.zeros(1)
        entry = {"epoch": epoch + 1, "loss": loss, "seconds": round(time.time() - started, 2)}
        if rank == 0:
            figure = _validate(module, tokenizer, spec, data, validation)
            entry["validation"] = figure
            if best_epoch is None or figure is None or figure > best_epoch:
                best_epoch = figure
                best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                result["best_epoch"] = epoch + 1
            if best is None or figure is None or figure > best:
                best, waited = figure, 0
            else:
                waited += 1
                stop[0] = float(waited >= max(1, s.patience))
            result["epochs"].append(entry)
        if world > 1:
            dist.broadcast(stop, src=0)
        if stop.item():
            break
    if rank == 0:
        result["finetuned_validation"] = best_epoch
        if best_state is not None:
            module.load_state_dict(best_state)
        if out_dir is not None:
            result |= save_finetuned(module, tokenizer, out_dir)
    return result


def _steps_per_epoch(s: FinetuneSettings, local_pairs: int, world: int) -> int:
    """Equal on every process (DDP steps together): the smallest share, capped."""
    import torch
    import torch.distributed as dist

    per_process = min(local_pairs, s.max_pairs_per_epoch // world)
    steps = torch.tensor([max(1, per_process // s.batch_size)])
    if world > 1:
        dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    return int(steps.item())


def _train_epoch(model, module, tokenizer, optimizer, data, s, steps, epoch, rank,
                 encoder_params, start, device) -> float:  # fmt: skip
    import torch

    model.train()
    rng = np.random.default_rng([s.seed, epoch, rank])
    need = steps * s.batch_size
    rounds = -(-need // max(1, len(data.pair_items)))  # a small shard is cycled through
    order = np.concatenate([rng.permutation(len(data.pair_items)) for _ in range(rounds)])[:need]
    losses = []
    for step in range(steps):
        rows = order[step * s.batch_size : (step + 1) * s.batch_size]
        items = data.pair_items[rows]
        batch = tokenizer([data.texts[i] for i in items], padding=True, truncation=True,
                          max_length=s.max_length, return_tensors="pt").to(device)  # fmt: skip
        with _autocast(device):
            predicted = model(dict(batch))
        if s.objective == "ranking":
            users = torch.as_tensor(data.pair_users[rows], device=device)
            ids = torch.as_tensor(items, device=device)
            loss = ranking_loss(users, predicted.float(), ids, s.temperature)
        else:
            target = torch.as_tensor(data.item_factors[items], device=device)
            loss = torch.nn.functional.mse_loss(predicted.float(), target)
        total = loss
        if s.l2sp > 0 and encoder_params:
            drift = sum(
                ((p - p0) ** 2).sum() for (_, p), p0 in zip(encoder_params, start, strict=True)
            )
            total = loss + s.l2sp * drift
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _autocast(device: Any) -> Any:
    """Half precision on GPUs (bfloat16 where supported), full precision on CPUs."""
    import contextlib

    import torch

    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _validate(module, tokenizer, spec, data, validation) -> float | None:
    if validation is None:
        return None
    import torch

    module.eval()
    wanted = np.union1d(validation.fit_items, validation.held_items)
    embeddings = np.zeros((len(data.texts), int(module.net.config.hidden_size)), np.float32)
    with torch.no_grad():
        texts = [data.texts[i] for i in wanted]
        embeddings[wanted] = encode_texts(texts, spec, tokenizer, module.net)
    return round(pseudo_cold_recall(embeddings, validation), 6)


def save_finetuned(module: Any, tokenizer: Any, out_dir: str) -> dict[str, str]:
    """The encoder (adapters merged) and tokenizer under ``out_dir/encoder``, the head as
    ``out_dir/head.safetensors``."""
    from safetensors.torch import save_file

    net = module.net
    if hasattr(net, "merge_and_unload"):
        net = net.merge_and_unload()
    folder = Path(out_dir) / "encoder"
    folder.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    head = {k: v.detach().cpu().contiguous() for k, v in module.head.state_dict().items()}
    save_file(head, str(Path(out_dir) / "head.safetensors"))
    return {"encoder_path": str(folder)}
