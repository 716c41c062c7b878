"""mapInArrow bodies of the blocked top-k: user and seen rows packed into user blocks,
block pairs scored by the kernel (:mod:`udfs.topk_kernel`), partial lists merged per user,
and the re-score check's pairs. Vectors travel as flat Arrow lists; nothing here loops
over users in Python.
"""

from __future__ import annotations

import numpy as np

from wals_roberta.udfs import topk_kernel as kernel
from wals_roberta.udfs.topk_kernel import merge_top_k, ranks_within_rows, top_k_block


def list_values(column, i: int) -> np.ndarray:
    """Row ``i`` of an Arrow list column as a numpy view (no copy for numeric values)."""
    return column[i].values.to_numpy(zero_copy_only=False)


def vector_rows(column, rank: int, what: str) -> np.ndarray:
    """An Arrow ``list<float>`` column (array or chunked) as an ``(n, rank)`` float32 array.

    Raises:
        ValueError: naming ``what`` when a vector is null or not of length ``rank`` (each
            length is checked, not only the total).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) and (
        column.null_count or pc.any(pc.not_equal(pc.list_value_length(column), rank)).as_py()
    ):
        raise ValueError(f"{what} are not all of length {rank}")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(-1, rank)


def pack_user_rows(rank: int, carry: str | None = None):
    """mapInArrow body: one partition's user rows and seen rows → one user-block row.

    Input rows are either ``(user_idx, vector)`` with ``item_idx`` −1, or a seen pair
    ``(user_idx, item_idx)`` with an empty ``vector``, hash-partitioned by user in any order
    (empty lists, not nulls: Spark's Arrow conversion of null arrays is several times
    slower). The output row holds the partition's users sorted by index, their vectors
    flattened and their seen items in CSR form (offsets into ``seen_items``), plus the
    ``carry`` column's values per user, and ``block``: the partition's number (the blocks
    are numbered 0..n-1 by the shuffle that made them). Users with seen rows but no vector
    are dropped (they get no list).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark import TaskContext

    def run(batches):
        batches = [b for b in batches if b.num_rows]
        if not batches:  # an empty partition
            return
        table = pa.Table.from_batches(batches)
        table = table.combine_chunks()
        is_vector = pc.less(table.column("item_idx"), 0)
        users = table.filter(is_vector)
        if users.num_rows == 0:
            return
        seen = table.filter(pc.invert(is_vector))
        user_idx = users.column("user_idx").to_numpy()
        order = np.argsort(user_idx, kind="stable")
        user_idx = user_idx[order]
        vectors = vector_rows(users.column("vector"), rank, "top-k: user vectors")[order]
        s_user = seen.column("user_idx").to_numpy()
        s_item = seen.column("item_idx").to_numpy()
        s_order = np.lexsort((s_item, s_user))
        s_user, s_item = s_user[s_order], s_item[s_order]
        # Offsets of each listed user's seen items; seen rows of users without a vector
        # fall between the offsets and are never read.
        lo = np.searchsorted(s_user, user_idx, side="left")
        hi = np.searchsorted(s_user, user_idx, side="right")
        lengths = hi - lo
        take = np.repeat(lo - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        columns = {
            "user_idx": user_idx.astype(np.int32),
            "vectors": vectors,
            "seen_offsets": np.r_[0, np.cumsum(lengths)].astype(np.int32),
            "seen_items": s_item[take].astype(np.int32),
        }
        if carry is not None:
            columns[carry] = users.column(carry).take(pa.array(order)).combine_chunks()
        task = TaskContext.get()  # None when called outside Spark (tests)
        block = pa.array([task.partitionId() if task else 0], type=pa.int32())
        yield pa.RecordBatch.from_arrays(
            [block, *one_row_lists(**columns)], names=["block", *columns]
        )

    return run


def one_row_lists(**arrays) -> list:
    """Each array as a one-row Arrow list column: numpy float32 → list<float>, other numpy
    → list<int>, an Arrow array → a list of its own type."""
    import pyarrow as pa

    columns = []
    for values in arrays.values():
        if not isinstance(values, pa.Array):
            kind = pa.float32() if values.dtype == np.float32 else pa.int32()
            values = pa.array(np.ravel(values), type=kind)
        offsets = pa.array([0, len(values)], type=pa.int32())
        columns.append(pa.ListArray.from_arrays(offsets, values))
    return columns


class RunningLists:
    """The best k entries per user so far, for each key (user block, item group), from
    partial lists over disjoint item sets added in any order (:func:`merge_top_k`). It
    holds at most one user block's k entries per key; a key is handed out by
    :meth:`drain` once its last partial list arrived, or at the end."""

    def __init__(self, k: int, carry: str | None, group: str | None, expected: int = 0):
        self.k, self.carry, self.group, self.expected = k, carry, group, expected
        self.lists: dict[tuple, tuple] = {}
        self.arrived: dict[int, int] = {}

    def add(self, block: int, group_value, users, items, scores, carried) -> list:
        """Merge one partial list (sorted by user, score descending, item) into its key's;
        returns the batches of the block when this was its last expected partial list."""
        import pyarrow as pa

        key = (block, group_value)
        if key in self.lists:
            old_users, old_items, old_scores, old_carried = self.lists[key]
            users = np.concatenate([old_users, users])
            items = np.concatenate([old_items, items])
            scores = np.concatenate([old_scores, scores])
            keep = merge_top_k(users, items, scores, self.k)
            users, items, scores = users[keep], items[keep], scores[keep]
            if carried is not None:
                carried = pa.concat_arrays([old_carried, carried]).take(pa.array(keep))
        self.lists[key] = (users, items, scores, carried)
        self.arrived[block] = self.arrived.get(block, 0) + 1
        if self.expected and self.arrived[block] == self.expected:
            return self.drain(block)
        return []

    def drain(self, block: int | None = None) -> list:
        """Record batches ``([carry,] [group,] user_idx, item_idx, score, rank)`` of the
        keys of ``block`` (every key when None), removed from the state."""
        import pyarrow as pa

        out = []
        for key in [key for key in self.lists if block is None or key[0] == block]:
            users, items, scores, carried = self.lists.pop(key)
            arrays = [
                pa.array(users, type=pa.int32()),
                pa.array(items, type=pa.int32()),
                pa.array(scores, type=pa.float32()),
                pa.array(ranks_within_rows(users), type=pa.int32()),
            ]
            names = ["user_idx", "item_idx", "score", "rank"]
            if self.group is not None:
                arrays.insert(0, pa.array(np.full(len(users), key[1], dtype=np.int32)))
                names.insert(0, self.group)
            if self.carry is not None:
                arrays.insert(0, carried)
                names.insert(0, self.carry)
            out.append(pa.RecordBatch.from_arrays(arrays, names=names))
        return out


def score_block_pairs(
    k: int, rank: int, carry: str | None = None, group: str | None = None, merge: bool = True
):
    """mapInArrow body: each input row is one (user block, item block) pair.

    With ``merge``, the pairs of one user block all arrive in the same task (the broadcast
    plan: one user block per partition): their partial lists are merged here, and the output
    is the final ``([carry,] [group,] user_idx, item_idx, score, rank)``. Without, each pair
    yields one row ``(block, [group,] user_idx[], item_idx[], score[], [carry[]])``: its
    partial list packed, for :func:`merge_partial_lists` after a shuffle by block.
    """
    import pyarrow as pa

    def run(batches):
        running = RunningLists(k, carry, group)
        for batch in batches:
            cols = {name: batch.column(name) for name in batch.schema.names}
            for i in range(batch.num_rows):
                user_idx = list_values(cols["user_idx"], i)
                item_idx = list_values(cols["item_idx"], i)
                item_vectors = list_values(cols["item_vectors"], i)
                if item_vectors.size != item_idx.size * rank:
                    raise ValueError(f"top-k: item vectors are not all of length {rank}")
                rows, top_items, scores = top_k_block(
                    list_values(cols["user_vectors"], i).reshape(-1, rank),
                    item_idx,
                    item_vectors.reshape(-1, rank),
                    k,
                    list_values(cols["seen_offsets"], i),
                    list_values(cols["seen_items"], i),
                )
                users = user_idx[rows]
                carried = cols[carry][i].values.take(pa.array(rows)) if carry else None
                block = cols["block"][i].as_py()
                group_value = cols[group][i].as_py() if group else None
                if merge:
                    running.add(block, group_value, users, top_items, scores, carried)
                    continue
                arrays = {"block": pa.array([block], type=pa.int32())}
                if group is not None:
                    arrays[group] = pa.array([group_value], type=pa.int32())
                lists = one_row_lists(user_idx=users.astype(np.int32), item_idx=top_items,
                                      score=scores)  # fmt: skip
                arrays.update(zip(("user_idx", "item_idx", "score"), lists, strict=True))
                if carry is not None:
                    arrays[carry] = one_row_lists(carried=carried)[0]
                yield pa.RecordBatch.from_arrays(list(arrays.values()), names=list(arrays))
        yield from running.drain()

    return run


def merge_partial_lists(k: int, per_block: int, carry: str | None = None, group: str | None = None):
    """mapInArrow body: packed partial lists ``(block, [group,] user_idx[], item_idx[],
    score[], [carry[]])`` of :func:`score_block_pairs` (``merge=False``), shuffled by block
    → each user's final top-k, ``([carry,] [group,] user_idx, item_idx, score, rank)``.
    ``per_block``: the partial lists each block gets (one per item block); a block's lists
    leave the state as soon as its last one arrived."""

    def run(batches):
        running = RunningLists(k, carry, group, expected=per_block)
        for batch in batches:
            cols = {name: batch.column(name) for name in batch.schema.names}
            for i in range(batch.num_rows):
                yield from running.add(
                    cols["block"][i].as_py(),
                    cols[group][i].as_py() if group else None,
                    list_values(cols["user_idx"], i),
                    list_values(cols["item_idx"], i),
                    list_values(cols["score"], i),
                    cols[carry][i].values if carry else None,
                )
        yield from running.drain()

    return run


def reaching_pairs(items):
    """mapInArrow body: rows ``(user_idx, vector, kth)`` → ``(user_idx, item_idx)`` for every
    item that scores at least the row's ``kth`` — the items that would enter a list whose
    k-th score is ``kth``. ``items`` is ``(item indexes, item vectors)`` or a Spark broadcast
    of it. Users are scored in chunks of at most MAX_SCORE_FLOATS scores; no per-row Python."""
    import pyarrow as pa

    def run(batches):
        item_ids, item_vectors = items.value if hasattr(items, "value") else items
        rank = item_vectors.shape[1]
        items_t = np.ascontiguousarray(np.asarray(item_vectors, dtype=np.float32).T)
        chunk = max(1, kernel.MAX_SCORE_FLOATS // max(1, len(item_ids)))
        for batch in batches:
            if batch.num_rows == 0 or len(item_ids) == 0:
                continue
            user_idx = batch.column("user_idx").to_numpy(zero_copy_only=False)
            user_vectors = vector_rows(batch.column("vector"), rank, "re-score check: user vectors")
            kth = batch.column("kth").to_numpy(zero_copy_only=False).astype(np.float32)
            for start in range(0, batch.num_rows, chunk):
                stop = start + chunk
                hit = user_vectors[start:stop] @ items_t >= kth[start:stop, None]
                rows, cols = np.nonzero(hit)
                if rows.size:
                    yield pa.RecordBatch.from_arrays(
                        [
                            pa.array(user_idx[start:stop][rows], type=pa.int32()),
                            pa.array(item_ids[cols], type=pa.int32()),
                        ],
                        names=["user_idx", "item_idx"],
                    )

    return run
