"""The top-k kernel: one block of users against one block of items by a matrix product and
a selection of the candidates, and the merge of partial lists. Plain numpy, no Spark and no
torch (the scoring's Python workers never pay for importing it); the Arrow bodies in
:mod:`udfs.topk_arrow` call it, :func:`udfs.topk.recommend_top_k` plans the blocks.
"""

from __future__ import annotations

import numpy as np

# Scores of one user chunk against one item block stay under this many floats (8 MB): the
# matmul writes them and the selection reads them while they are still in cache. Measured with
# 4,096 users × 40,000 items, rank 64, one thread: 256 MB chunks 2.3 s, 8 MB 0.9 s (torch
# products); with numpy's products 0.41 s against 0.59 s for torch's, two tasks at once.
MAX_SCORE_FLOATS = 2 * 1024 * 1024
# Items per group of the selection (fewer where the items are fewer than 8·k groups of it):
# a user's k-th best group maximum bounds their k-th best score from below, so only groups
# whose maximum reaches it hold candidates.
GROUP = 64


def top_k_block(
    user_vectors: np.ndarray,
    item_ids: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    seen_offsets: np.ndarray | None = None,
    seen_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k items per user by dot product, excluding each user's seen items.

    Args:
        user_vectors: (n_users, rank) float32.
        item_ids: (n_items,) item indexes, ascending.
        item_vectors: (n_items, rank) float32, rows matching ``item_ids``.
        k: list length; fewer where a user has fewer unseen items.
        seen_offsets, seen_items: the seen items in CSR form, user i's are
            ``seen_items[seen_offsets[i]:seen_offsets[i+1]]`` (ids outside this block ignored).

    Returns:
        ``(row, item, score)`` flat arrays, rows in user order and, within a user, by score
        descending then item index ascending. ``row`` indexes ``user_vectors``.
    """
    n_users, n_items = user_vectors.shape[0], item_ids.shape[0]
    if n_users == 0 or n_items == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.astype(np.int32), np.empty(0, dtype=np.float32)
    kk = min(k, n_items)
    # Items padded with zero vectors to whole groups; their scores are set to -inf.
    group = max(1, min(GROUP, n_items // (8 * kk)))
    width = -(-n_items // group) * group
    items_t = np.zeros((user_vectors.shape[1], width), dtype=np.float32)
    items_t[:, :n_items] = np.asarray(item_vectors, dtype=np.float32).T
    users = np.asarray(user_vectors, dtype=np.float32)
    seen_rows, seen_cols = _seen_positions(n_users, item_ids, seen_offsets, seen_items)
    chunk = min(n_users, max(1, MAX_SCORE_FLOATS // width))
    buffer = np.empty((chunk, width), dtype=np.float32)
    rows, items, scores = [], [], []
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        # Products by numpy (OpenBLAS; the job's session sets spark.executorEnv.
        # OPENBLAS_NUM_THREADS=1, one thread per task; see MAX_SCORE_FLOATS).
        block = np.matmul(users[start:stop], items_t, out=buffer[: stop - start])
        block[:, n_items:] = -np.inf
        if seen_rows.size:
            # seen_rows is sorted: the chunk's entries are one slice, found without a scan.
            lo, hi = np.searchsorted(seen_rows, [start, stop])
            block[seen_rows[lo:hi] - start, seen_cols[lo:hi]] = -np.inf
        r, pos, s = _candidates(block, kk, group)
        top_items = item_ids[pos]
        # Every candidate sorted by (user, score descending, item index): ties in score are
        # ordered by item index, so that lists never depend on the order of the computation.
        order = np.lexsort((top_items, -s, r))
        r, top_items, s = r[order], top_items[order], s[order]
        keep = ranks_within_rows(r) <= kk
        rows.append(r[keep] + start)
        items.append(top_items[keep])
        scores.append(s[keep])
    return (
        np.concatenate(rows),
        np.concatenate(items).astype(np.int32),
        np.concatenate(scores).astype(np.float32),
    )


def _candidates(block: np.ndarray, kk: int, group: int):
    """``(row, column, score)`` of every finite score that may be among its row's best
    ``kk``: at least the best ``kk`` (all of them where a row has fewer), every item tied with
    the kk-th included.

    The maximum of each ``group`` of columns is taken (one pass over the block, while it
    is in cache); the kk-th largest group maximum ``t`` is at most the kk-th largest score
    (kk groups each hold a score of at least ``t``), so only scores ``>= t`` in groups whose
    maximum reaches ``t`` are candidates — about kk groups per row instead of all columns.
    """
    n_rows, width = block.shape
    n_groups = width // group
    grouped = block.reshape(n_rows, n_groups, group)
    group_max = grouped.max(axis=2)
    if n_groups >= kk:
        bound = np.partition(group_max, n_groups - kk, axis=1)[:, n_groups - kk]
    else:  # fewer groups than places: every score is a candidate
        bound = np.full(n_rows, -np.inf, dtype=np.float32)
    g_rows, g_cols = np.nonzero(group_max >= bound[:, None])
    values = grouped[g_rows, g_cols]  # (candidate groups, group)
    keep = (values >= bound[g_rows, None]) & np.isfinite(values)
    cols = g_cols[:, None] * group + np.arange(group)
    return np.repeat(g_rows, keep.sum(axis=1)), cols[keep], values[keep]


def _seen_positions(
    n_users: int,
    item_ids: np.ndarray,
    seen_offsets: np.ndarray | None,
    seen_items: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every seen item that lies in this item block."""
    if seen_offsets is None or seen_items is None or len(seen_items) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    counts = np.diff(np.asarray(seen_offsets, dtype=np.int64))
    rows = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    seen = np.asarray(seen_items, dtype=np.int64)
    cols = np.searchsorted(item_ids, seen)
    inside = cols < len(item_ids)
    inside[inside] = item_ids[cols[inside]] == seen[inside]
    return rows[inside], cols[inside].astype(np.int64)


def ranks_within_rows(rows: np.ndarray) -> np.ndarray:
    """1-based position of each entry within its run of equal ``rows`` (rows are grouped)."""
    if rows.size == 0:
        return rows.astype(np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    lengths = np.diff(np.r_[starts, rows.size])
    return (np.arange(rows.size) - np.repeat(starts, lengths) + 1).astype(np.int32)


def merge_top_k(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the best ``k`` entries of each row among partial lists over disjoint
    item sets, in output order: by row, then score descending, then item index.

    Every partial list is the exact top-k of its items in that order, so the best k of their
    union is the exact top-k over all of the items, ties included: nothing left out of a
    partial list can rank above its k-th entry.
    """
    order = np.lexsort((items, -scores, rows))
    return order[ranks_within_rows(rows[order]) <= k]
