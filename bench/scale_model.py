"""The cost model of docs/SCALING.md: bytes each stage shuffles, broadcasts and holds per
task, as formulas in users U, items I, interactions N (distinct pairs; N_raw rows read),
rank r, list length k and block counts. ``bench/scale_report.py`` sets them beside Spark's
measured shuffle bytes; ``python bench/scale_model.py`` prints the extrapolation.

Row widths are Spark's UnsafeRow layout, as a shuffle writes it before compression: an
8-byte null bitmap, 8 bytes per field, variable-length values padded to 8 bytes, a 4-byte
length. Arrays add 8 bytes of header per array and their elements.
"""

# ruff: noqa: E741 (U, I, N as in the document)
from __future__ import annotations

import math

MB = 2**20


def row(fields: int, var_bytes: int = 0) -> int:
    """Bytes of one shuffled row with ``fields`` columns and ``var_bytes`` of strings or
    arrays."""
    return 4 + 8 + 8 * fields + 8 * math.ceil(var_bytes / 8)


def array(n: int, item: int = 4) -> int:
    return 8 + n * item


# Spark's shuffle codec (LZ4) on UnsafeRows: rows of small integers keep about a quarter of
# their bytes (half of every 8-byte slot of an int is zero, and so are the high bytes of
# small values), rows with string ids about half, random float vectors all of them. Read
# off the 10^5 run; 10^6 and 10^7 check them.
INT_ROWS, STRING_ROWS = 0.25, 0.5


def model(
    U: int,
    I: int,
    N: int,
    *,
    N_raw: int | None = None,
    r: int = 64,
    k: int = 20,
    d: int = 384,
    text_bytes: int = 40,
    id_bytes: int = 8,
    als_blocks: int = 4,
    cg_blocks: int = 2,
    iterations: int = 10,
    users_per_block: int = 16384,
    items_per_block: int = 65536,
    broadcast_max_mb: float = 64.0,
    cores: int = 2,
    train_share: float = 0.8,
    merged: bool = False,
    validation_users: int = 10_000,
    maps: int = 18,
    merges: int = 40,
) -> dict:
    """Per stage: ``shuffle`` (bytes written to shuffle, = read), ``broadcast`` (bytes every
    executor receives) and ``task`` (bytes one task holds at its peak, beyond Spark's
    buffers), for one run of the pipeline with the given shape and settings. ``merged``:
    the recommend stage merges two sources (a merge other than plain raw scores)."""
    N_raw = N_raw or N
    N_train = int(N * train_share)
    rated = row(6)  # user_idx, item_idx, strength, rating, timestamp, n_events
    index = row(2, id_bytes)  # an id and its index
    factor = array(r) + 8  # one factor vector with its id
    out = {}
    # prepare: duplicates merged (map-side partial aggregation of N_raw rows of string ids),
    # distinct ids numbered by a distinct and a range sort each, split by a window per user;
    # the index joins broadcast while the id tables stay under Spark's 10 MB threshold,
    # else each side of N rows is shuffled once more.
    joins = 0 if max(U, I) * index < 10 * MB else 2 * N * rated * INT_ROWS
    out["prepare"] = {
        "shuffle": STRING_ROWS * (N_raw * row(5, 2 * id_bytes) + 2 * (U + I) * index)
        + INT_ROWS * N * rated
        + joins,
        "broadcast": (U + I) * index if not joins else 0,
        "task": 0,
    }

    # train (MLlib): canonical order (one shuffle of the training rows), rating blocks for
    # both sides (two shuffles of N_train (user, item, rating) triples), then every half
    # iteration each factor travels to every block of the other side holding one of its
    # pairs: at most min(pairs, vectors × blocks) vectors.
    def ratings(pairs: int) -> float:
        return INT_ROWS * pairs * row(3) + 2 * pairs * 12

    def mllib_als(pairs: int) -> float:
        shipped = min(pairs, I * als_blocks) + min(pairs, U * als_blocks)
        return ratings(pairs) + iterations * factor * shipped

    out["train"] = {
        "shuffle": mllib_als(N_train),
        "broadcast": 0,
        "task": (N_train // als_blocks) * 12 + (max(U, I) // als_blocks) * factor,
    }
    # train (cg): every half iteration each block being solved receives the whole other
    # side's vectors.
    out["train_cg"] = {
        "shuffle": ratings(N_train) + iterations * cg_blocks * (U + I) * 4 * r,
        "broadcast": 0,
        "task": (U + I) * 4 * r + (N_train // cg_blocks) * 12,
    }
    # embed: distinct texts by hash (one shuffle of the catalog's texts), one repartition
    # to the encoder's tasks, vectors joined back to the items.
    out["embed"] = {
        "shuffle": 2 * I * row(2, text_bytes) + 2 * I * row(2, array(d) - 8),
        "broadcast": 0,
        "task": 0,
    }
    # project: the item factors, embeddings and projections joined by item; the validation:
    # a second WALS model with the train stage's settings on the training rows less the
    # validation split (~77% of them), then for at most validation_users users every map's
    # lists over the pseudo-cold items, and every merge's candidate lists (2k per user: warm
    # and cold) ranked, met with the held-out pairs and summed per user (three shuffles); the
    # validation users' training pairs, excluded from two top-k passes.
    U_v = min(U, validation_users)
    validation_model = mllib_als(int(0.77 * N_train))
    lists = INT_ROWS * (3 * merges * U_v * 2 * k * row(5) + maps * U_v * k * row(5))
    out["project"] = {
        "shuffle": 2 * I * row(2, array(d) + array(r))
        + validation_model
        + lists
        + INT_ROWS * 2 * N_train * U_v / U * row(3, 8),
        "broadcast": d * r * 4,
        "task": 0,
    }
    out["recommend"] = top_k(U, I, N_train, r, k, users_per_block, items_per_block,
                             broadcast_max_mb, cores, id_bytes)  # fmt: skip
    if merged:  # a second top-k pass for the cold items and a window over both lists
        extra = U * row(4, array(r)) + INT_ROWS * U * 2 * k * row(5)
        out["recommend"]["shuffle"] += extra
    # evaluate: the lists of the model and the two baselines (popularity, random) ranked by
    # user, one shuffle; they meet the held-out pairs by a broadcast while those are under
    # Spark's 10 MB threshold, else by a sort-merge join that shuffles both once more.
    lists, held = 3 * U * k * row(5), (N - N_train) * row(3, 8)
    joined = lists + held if (N - N_train) * 20 > 10 * MB else 0
    out["evaluate"] = {
        "shuffle": INT_ROWS * (lists + held + joined),
        "broadcast": I * row(2),
        "task": 0,
    }
    out["publish"] = {"shuffle": 0, "broadcast": 0, "task": 0}
    return out


def top_k(U, I, N, r, k, users_per_block, items_per_block, broadcast_max_mb, cores, id_bytes):
    """The recommend stage's top-k (:func:`udfs.topk.recommend_top_k`)."""
    n_ub = max(cores, math.ceil(U / (users_per_block * cores)) * cores)
    n_ib = max(1, math.ceil(I / items_per_block))
    # vectors and seen pairs (rows with an empty vector), one shuffle
    users = U * row(4, array(r)) + INT_ROWS * N * row(3, 8)
    user_block = min(U, users_per_block) * (4 * r + 4) + (N / U) * min(U, users_per_block) * 4
    item_block = min(I, items_per_block) * (4 * r + 4)
    state = min(U, users_per_block) * k * 12
    if I * r * 4 <= broadcast_max_mb * MB:
        return {
            "shuffle": users,
            "broadcast": I * (4 * r + 4) + I * row(2, id_bytes),
            "task": user_block + I * (4 * r + 4) + state,
            "plan": "broadcast",
        }
    shares = max(1, min(n_ub, math.ceil(cores / n_ib)))
    tiles = n_ib * (U * (4 * r + 4) + N * 4) + shares * I * (4 * r + 4)
    partials = n_ib * U * k * 12  # packed arrays of (user, item, score)
    return {
        "shuffle": users + tiles + partials + I * (4 * r + 4),
        "broadcast": I * row(2, id_bytes),
        "task": user_block + item_block + 2 * state,
        "plan": "shuffle",
    }


def main() -> int:
    big = model(10**8, 10**7, 10**10, cores=1000, cg_blocks=1000, als_blocks=1000)
    print("stage | shuffle GB | broadcast GB | task MB")
    for stage, figures in big.items():
        print(
            f"{stage} | {figures['shuffle'] / 2**30:,.0f} | {figures['broadcast'] / 2**30:,.2f} | "
            f"{figures['task'] / MB:,.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
