"""Numba kernels that run a group of tables as one: one call per phase for ``T`` tables.

The group's tables share ``embedding_dim``, pooling and optimizer; their weights and state
arrays reach the kernels as ``numba.typed.List``s built once per group (no copy). The IDs of
all tables are concatenated, table after table, and described by CSR boundaries:

- ``value_offsets`` :math:`(T + 1)`: table ``t``'s IDs are ``values[value_offsets[t]:value_offsets[t + 1]]``
- ``offsets`` :math:`(T, B + 1)`: each table's bag boundaries, local to its IDs
- ``unique_offsets`` :math:`(T + 1)`: table ``t``'s distinct rows are ``unique_rows[unique_offsets[t]:unique_offsets[t + 1]]``
- ``occurrence_offsets`` :math:`(U + 1)` and ``occurrences`` :math:`(N)`: positions in the
  concatenated IDs, grouped by (table, row), ascending within a group
- ``bag_of`` :math:`(N)`: each position's bag, local to its table
- ``columns`` :math:`(T)`: the first column of table ``t``'s block in the ``(B, sum D)`` output

Per row and per bag the kernels run the very helpers of :mod:`terarec.embedding._kernels`
(:func:`pool_bag`, :func:`accumulate` and the ``_*_row`` updates) in the same order, so a
group's results are bit-identical to running its tables one by one.
"""

from __future__ import annotations

import numba
import numpy as np

from terarec.embedding import _bf16, _compile_flags, _dedupe_kernels, _hashing, _pooling_kernels, _prefetch, _update_kernels
from terarec.embedding._dedupe_kernels import group_rows
from terarec.embedding._kernel_cache import stamp_with_sources
from terarec.embedding._compile_flags import FASTMATH
from terarec.embedding._hashing import splitmix64
from terarec.embedding._pooling_kernels import pool_bag
from terarec.embedding._prefetch import PREFETCH_DISTANCE, UPDATE_PREFETCH_DISTANCE, prefetch_leading, prefetch_update
from terarec.embedding._update_kernels import accumulate, adagrad_row, adam_row, rowwise_adagrad_row, sgd_row


__all__ = [
    "group_adagrad_update",
    "group_adam_update",
    "group_lookup",
    "group_rowwise_adagrad_update",
    "group_sgd_update",
    "prepare_group",
    "prepare_group_parallel",
]

# A parallel work item of the update holds the unique rows of one table until its cost
# (2 per row: weights and state read and written; 1 per occurrence: a gradient row read)
# reaches this, so items cost about the same however the batch's rows spread over tables.
_CHUNK_COST = 256
_LOOKUP_BLOCK = 32  # examples per parallel item of the lookup


# Serial on purpose, like the prepare kernels of ``_kernels``: it may run on a background
# thread beside the parallel lookup and update (see the note there on numba's workqueue).
@numba.njit(cache=True, nogil=True)
def prepare_group(
    values, value_offsets, offsets, num_embeddings, rows, occurrences, scratch, unique_rows, unique_offsets,
    occurrence_offsets, bag_of, chunk_table, chunk_start,
):  # fmt: skip
    """Hashes and de-duplicates the IDs of ``T`` tables; returns the number of update chunks.

    Per table ``t``: ``rows = splitmix64(id) % num_embeddings[t]`` (as
    :func:`~terarec.embedding._hashing.hash_to_rows`), then :func:`group_rows` on its segment,
    then positions and boundaries shifted to the concatenated arrays. ``occurrence_offsets``
    holds ``N + T + 1`` entries (table ``t`` first writes its own at ``value_offsets[t] + t``);
    the first ``U + 1`` are the result. Writes the update's work items into ``chunk_table`` /
    ``chunk_start`` (capacity ``N + T``): item ``c`` runs table ``chunk_table[c]``'s unique rows
    from ``chunk_start[c]`` to the next item's start or the table's end.
    """
    for t in range(num_embeddings.shape[0]):
        _prepare_table(t, values, value_offsets, offsets, num_embeddings, rows, occurrences, scratch, unique_rows,
                       occurrence_offsets, bag_of, unique_offsets)  # fmt: skip
    return _join_tables(value_offsets, unique_rows, unique_offsets, occurrence_offsets, occurrences, chunk_table, chunk_start)


@numba.njit(cache=True, nogil=True, parallel=True)
def prepare_group_parallel(
    values, value_offsets, offsets, num_embeddings, rows, occurrences, scratch, unique_rows, unique_offsets,
    occurrence_offsets, bag_of, chunk_table, chunk_start, workers,
):  # fmt: skip
    """:func:`prepare_group` with the tables spread over ``workers`` threads (the same result).
    Only for the thread that runs the other parallel kernels, never beside them.

    Tables go to threads longest first, each to the least loaded thread, so that one large
    table (the 100-ID bags of the multi-hot benchmark hold 47% of its IDs) runs beside all the
    others instead of after them.
    """
    num_tables = num_embeddings.shape[0]
    sizes = value_offsets[1:] - value_offsets[:-1]
    owner = np.empty(num_tables, dtype=np.int64)
    load = np.zeros(workers, dtype=np.int64)
    for t in np.argsort(-sizes, kind="mergesort"):
        worker = np.argmin(load)
        owner[t] = worker
        load[worker] += sizes[t]
    for worker in numba.prange(workers):
        for t in range(num_tables):
            if owner[t] == worker:
                _prepare_table(t, values, value_offsets, offsets, num_embeddings, rows, occurrences, scratch,
                               unique_rows, occurrence_offsets, bag_of, unique_offsets)  # fmt: skip
    return _join_tables(value_offsets, unique_rows, unique_offsets, occurrence_offsets, occurrences, chunk_table, chunk_start)


@numba.njit(cache=True, nogil=True, inline="always")
def _prepare_table(
    t, values, value_offsets, offsets, num_embeddings, rows, occurrences, scratch, unique_rows, occurrence_offsets,
    bag_of, unique_counts,
):  # fmt: skip
    """Maps and groups table ``t``'s IDs, in place, inside its own segment of every array:
    ``[lo, hi)`` of the ``N``-sized ones and ``[lo + t, hi + t + 1)`` of ``occurrence_offsets``;
    positions and boundaries stay local to the table. Writes its distinct-row count."""
    lo, hi = value_offsets[t], value_offsets[t + 1]
    n = np.uint64(num_embeddings[t])
    for i in range(lo, hi):
        rows[i] = np.int64(splitmix64(np.uint64(values[i])) % n)
    unique_counts[t] = group_rows(
        rows[lo:hi], offsets[t], max(num_embeddings[t] - 1, 0), occurrences[lo:hi], scratch[lo:hi],
        unique_rows[lo:hi], occurrence_offsets[lo + t : hi + t + 1], bag_of[lo:hi],
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _join_tables(value_offsets, unique_rows, unique_offsets, occurrence_offsets, occurrences, chunk_table, chunk_start):
    """Moves each table's distinct rows and boundaries from its segment to the front, one table
    after another, shifts positions to the concatenated arrays, turns the per-table counts in
    ``unique_offsets[:T]`` into CSR boundaries and writes the update chunks; returns their count.
    Copying forwards in place is safe: a table's result never starts after its segment."""
    num_tables = value_offsets.shape[0] - 1
    u = 0
    for t in range(num_tables):
        lo, hi, count = value_offsets[t], value_offsets[t + 1], unique_offsets[t]
        unique_offsets[t] = u
        for k in range(count):
            unique_rows[u + k] = unique_rows[lo + k]
        for k in range(count + 1):
            occurrence_offsets[u + k] = occurrence_offsets[lo + t + k] + lo
        for i in range(lo, hi):
            occurrences[i] += lo
        u += count
    unique_offsets[num_tables] = u
    chunks = 0
    for t in range(num_tables):
        cost = _CHUNK_COST
        for k in range(unique_offsets[t], unique_offsets[t + 1]):
            if cost >= _CHUNK_COST:
                chunk_table[chunks] = t
                chunk_start[chunks] = k
                chunks += 1
                cost = 0
            cost += 2 + occurrence_offsets[k + 1] - occurrence_offsets[k]
    return chunks


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def group_lookup(weights, rows, value_offsets, offsets, columns, is_mean, out):
    """``out[b, columns[t]:columns[t] + D]`` = table ``t``'s pooled bag ``b``, for every
    ``(t, b)``. A parallel item owns a block of ``_LOOKUP_BLOCK`` examples (output rows) and
    runs every table over it, so every thread gets every table and fetches each table's
    weights once per block."""
    num_tables = columns.shape[0]
    batch = offsets.shape[1] - 1
    for blk in numba.prange((batch + _LOOKUP_BLOCK - 1) // _LOOKUP_BLOCK):
        first, last = blk * _LOOKUP_BLOCK, min(batch, (blk + 1) * _LOOKUP_BLOCK)
        for t in range(num_tables):
            w, base, col, bounds = weights[t], value_offsets[t], columns[t], offsets[t]
            dim = w.shape[1]
            # One-hot tables have only 32 IDs per block: without this the first 12 of them
            # (a third) would be loaded one after another.
            prefetch_leading(w, w, rows, base + bounds[first], base + bounds[last], PREFETCH_DISTANCE, False)
            for b in range(first, last):
                pool_bag(w, rows, base + bounds[b], base + bounds[b + 1], base + bounds[last], out[b, col : col + dim], is_mean)


# The four group updates share one signature: weights and states (typed lists of ``T``
# arrays), the chunks, the prepared CSR arrays, grad (B, sum D), columns, offsets, is_mean,
# seeds (T, each table's rounding seed for this step), then rates (T) (the learning rate, or Adam's bias-corrected step size, per table), eps,
# beta1, beta2. Each parallel item owns one chunk of one table's distinct rows. One kernel per
# optimizer: a runtime switch between the row updates inside one kernel ran 2.5x slower.


@numba.njit(cache=True, nogil=True, inline="always")
def _chunk(c, chunk_table, chunk_start, unique_offsets):
    """``(t, start, stop)``: table and distinct-row range of update chunk ``c``."""
    t = chunk_table[c]
    stop = unique_offsets[t + 1]
    if c + 1 < chunk_table.shape[0] and chunk_table[c + 1] == t:
        stop = chunk_start[c + 1]
    return t, chunk_start[c], stop


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def group_sgd_update(
    weights, states, chunk_table, chunk_start, unique_offsets, unique_rows, occurrence_offsets, occurrences,
    bag_of, grad, columns, offsets, is_mean, seeds, rates, eps, beta1, beta2,
):  # fmt: skip
    """:func:`~terarec.embedding._update_kernels.sgd_update` of every table of the group."""
    dim = weights[0].shape[1]
    for c in numba.prange(chunk_table.shape[0]):
        t, start, stop = _chunk(c, chunk_table, chunk_start, unique_offsets)
        w, col, bounds, rate32 = weights[t], columns[t], offsets[t], np.float32(rates[t])
        g = np.empty(dim, dtype=np.float32)
        limit = unique_offsets[t + 1]
        prefetch_leading(w, w, unique_rows, start, limit, UPDATE_PREFETCH_DISTANCE, False)
        for k in range(start, stop):
            prefetch_update(w, w, unique_rows, k, limit, False)
            accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad, col, bounds, is_mean)
            sgd_row(w, unique_rows[k], unique_rows[k], g, rate32, seeds[t])


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def group_adagrad_update(
    weights, states, chunk_table, chunk_start, unique_offsets, unique_rows, occurrence_offsets, occurrences,
    bag_of, grad, columns, offsets, is_mean, seeds, rates, eps, beta1, beta2,
):  # fmt: skip
    """:func:`~terarec.embedding._update_kernels.adagrad_update` of every table of the group."""
    dim = weights[0].shape[1]
    eps32 = np.float32(eps)
    for c in numba.prange(chunk_table.shape[0]):
        t, start, stop = _chunk(c, chunk_table, chunk_start, unique_offsets)
        w, s, col, bounds, rate32 = weights[t], states[t], columns[t], offsets[t], np.float32(rates[t])
        g = np.empty(dim, dtype=np.float32)
        limit = unique_offsets[t + 1]
        prefetch_leading(w, s, unique_rows, start, limit, UPDATE_PREFETCH_DISTANCE, True)
        for k in range(start, stop):
            prefetch_update(w, s, unique_rows, k, limit, True)
            accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad, col, bounds, is_mean)
            adagrad_row(w, s, unique_rows[k], unique_rows[k], g, rate32, eps32, seeds[t])


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def group_rowwise_adagrad_update(
    weights, states, chunk_table, chunk_start, unique_offsets, unique_rows, occurrence_offsets, occurrences,
    bag_of, grad, columns, offsets, is_mean, seeds, rates, eps, beta1, beta2,
):  # fmt: skip
    """:func:`~terarec.embedding._update_kernels.rowwise_adagrad_update` of every table of the group."""
    dim = weights[0].shape[1]
    eps32 = np.float32(eps)
    for c in numba.prange(chunk_table.shape[0]):
        t, start, stop = _chunk(c, chunk_table, chunk_start, unique_offsets)
        w, s, col, bounds, rate32 = weights[t], states[t], columns[t], offsets[t], np.float32(rates[t])
        g = np.empty(dim, dtype=np.float32)
        limit = unique_offsets[t + 1]
        prefetch_leading(w, s, unique_rows, start, limit, UPDATE_PREFETCH_DISTANCE, True)
        for k in range(start, stop):
            prefetch_update(w, s, unique_rows, k, limit, True)
            accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad, col, bounds, is_mean)
            rowwise_adagrad_row(w, s, unique_rows[k], unique_rows[k], g, rate32, eps32, seeds[t])


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def group_adam_update(
    weights, states, chunk_table, chunk_start, unique_offsets, unique_rows, occurrence_offsets, occurrences,
    bag_of, grad, columns, offsets, is_mean, seeds, rates, eps, beta1, beta2,
):  # fmt: skip
    """:func:`~terarec.embedding._update_kernels.adam_update` of every table of the group."""
    dim = weights[0].shape[1]
    eps32 = np.float32(eps)
    one_m_b1, one_m_b2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    for c in numba.prange(chunk_table.shape[0]):
        t, start, stop = _chunk(c, chunk_table, chunk_start, unique_offsets)
        w, s, col, bounds, rate32 = weights[t], states[t], columns[t], offsets[t], np.float32(rates[t])
        g = np.empty(dim, dtype=np.float32)
        limit = unique_offsets[t + 1]
        prefetch_leading(w, s, unique_rows, start, limit, UPDATE_PREFETCH_DISTANCE, True)
        for k in range(start, stop):
            prefetch_update(w, s, unique_rows, k, limit, True)
            accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad, col, bounds, is_mean)
            adam_row(w, s, unique_rows[k], unique_rows[k], g, rate32, one_m_b1, one_m_b2, eps32, seeds[t])


stamp_with_sources(globals(), _pooling_kernels, _update_kernels, _hashing, _prefetch, _compile_flags, _dedupe_kernels, _bf16)
