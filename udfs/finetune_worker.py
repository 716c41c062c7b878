"""One fine-tuning process (what TorchDistributor starts, on the driver in local mode or in
barrier tasks on a cluster): join the process group, read this process's share of the
training data from the run directory, train (:func:`jobs.model.finetune.fit_encoder`).

The data is Parquet written by the ``finetune`` stage: ``items`` (every process reads it;
item-sized), ``pairs`` (each process reads its own files, so no process and not the driver
holds the user-sized table) and ``validation`` (rank 0 only).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

ITEMS, PAIRS, VALIDATION = "items", "pairs", "validation"


def local_path(uri: str) -> str:
    """A path torch, transformers and pyarrow open: ``file:`` and ``dbfs:`` become local
    (FUSE) paths; other schemes are passed on to pyarrow as they are."""
    if uri.startswith("file:"):
        return "/" + uri[len("file:") :].lstrip("/")
    if uri.startswith("dbfs:"):
        return "/dbfs/" + uri[len("dbfs:") :].lstrip("/")
    return uri


def read_parquet(folder: str, rank: int = 0, world: int = 1):
    """A pandas frame of the folder's Parquet files; with ``world`` > 1, this rank's files (its
    rows, when there are fewer files than processes)."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(local_path(folder), format="parquet")
    files = sorted(dataset.files)
    if world > 1 and len(files) >= world:
        part = ds.dataset(files[rank::world], format="parquet", filesystem=dataset.filesystem)
        return part.to_table().to_pandas()
    frame = dataset.to_table().to_pandas()
    return frame.iloc[rank::world] if world > 1 else frame


def train_process(settings: Any, data_dir: str, out_dir: str, k: int) -> dict[str, Any]:
    """The function TorchDistributor runs in every process; rank 0's result comes back."""
    import torch
    import torch.distributed as dist

    from wals_roberta.jobs.model.finetune import FinetuneData, fit_encoder

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    on_gpu = settings.device.startswith("cuda")
    if on_gpu:  # the GPUs this process sees (one per task on a cluster)
        local = int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count())
        settings = replace(settings, device=f"cuda:{local}")
        torch.cuda.set_device(local)
    if world > 1:
        dist.init_process_group("nccl" if on_gpu else "gloo")
    try:
        items = read_parquet(f"{data_dir}/{ITEMS}").sort_values("item_idx", kind="stable")
        position = {int(i): p for p, i in enumerate(items["item_idx"])}
        pairs = read_parquet(f"{data_dir}/{PAIRS}", rank, world)
        data = FinetuneData(
            texts=items["text"].tolist(),
            item_factors=_matrix(items["factors"], width=_width(items)),
            pair_items=np.array([position[int(i)] for i in pairs["item_idx"]], dtype=np.int64),
            pair_users=_matrix(pairs["user_factors"], width=_width(items)),
        )
        validation = _validation(items, position, data_dir, k) if rank == 0 else None
        return fit_encoder(settings, data, validation, out_dir if rank == 0 else None,
                           rank=rank, world=world)  # fmt: skip
    finally:
        if world > 1:
            dist.destroy_process_group()


def _validation(items, position: dict[int, int], data_dir: str, k: int):
    from wals_roberta.jobs.model.finetune_eval import PseudoCold

    held_mask = items["held"].to_numpy()
    fit = np.flatnonzero(~held_mask)
    held = np.flatnonzero(held_mask)
    held_rank = {int(p): r for r, p in enumerate(held)}
    rows = read_parquet(f"{data_dir}/{VALIDATION}").sort_values(["user_idx", "item_idx"])
    users, relevant = [], []
    for _, group in rows.groupby("user_idx", sort=True):
        users.append(np.asarray(group["user_factors"].iloc[0], dtype=np.float32))
        relevant.append(np.array([held_rank[position[int(i)]] for i in group["item_idx"]]))
    factors = _matrix(items["factors"], width=_width(items))
    user_vectors = np.stack(users) if users else np.zeros((0, factors.shape[1]), np.float32)
    return PseudoCold(fit, factors[fit], held, user_vectors, relevant, k=k)


def _width(items) -> int:
    """The factor rank (held-out items have no factors: the first item that has them)."""
    for v in items["factors"]:
        if v is not None:
            return len(v)
    return 0


def _matrix(column, width: int | None = None) -> np.ndarray:
    """One row per value; a missing vector (a held-out item's factors) is a row of zeros,
    never read: held-out items are neither trained on nor mapped from."""
    if len(column) == 0:
        return np.zeros((0, width or 0), dtype=np.float32)
    width = width or next((len(v) for v in column if v is not None), 0)
    rows = [np.zeros(width, np.float32) if v is None else np.asarray(v, np.float32) for v in column]
    return np.stack(rows)
