"""Numba kernels that group a batch's equal rows (de-duplication): a stable LSD radix sort.

Serial on purpose, like every prepare kernel (see :mod:`~terarec.embedding._kernels`): they may
run on a background thread beside the parallel lookup and update.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["dedupe", "group_rows"]

_RADIX_BITS = 11
_RADIX = 1 << _RADIX_BITS


@numba.njit(cache=True, nogil=True, inline="always")
def _bit_length(value):
    bits = 1
    while (value >> bits) > 0:
        bits += 1
    return bits


@numba.njit(cache=True, nogil=True, inline="always")
def _radix_pass(source, target, shift, counts):
    """One stable counting-sort pass of ``source`` into ``target`` by bits ``[shift, shift + 11)``."""
    mask = np.uint64(_RADIX - 1)
    counts[:] = 0
    for i in range(source.shape[0]):
        counts[((np.uint64(source[i]) >> shift) & mask) + 1] += 1
    for d in range(_RADIX):
        counts[d + 1] += counts[d]
    for i in range(source.shape[0]):
        digit = (np.uint64(source[i]) >> shift) & mask
        target[counts[digit]] = source[i]
        counts[digit] += 1


@numba.njit(cache=True, nogil=True)
def _sort_packed(rows, row_bits, position_bits, order, scratch):
    """Radix-sorts ``row << position_bits | position`` keys on their row bits only: the sort
    moves one sequential word per ID instead of gathering ``rows[order[i]]`` at random.
    Stable, so positions stay ascending within a row. Leaves the
    positions in ``order`` and the rows, in the same order, in ``scratch``."""
    n = rows.shape[0]
    keys, spare = order.view(np.uint64), scratch.view(np.uint64)
    shift_positions = np.uint64(position_bits)
    for i in range(n):
        keys[i] = (np.uint64(rows[i]) << shift_positions) | np.uint64(i)
    counts = np.empty(_RADIX + 1, dtype=np.int64)
    source, target = keys, spare
    for shift in range(position_bits, position_bits + row_bits, _RADIX_BITS):
        _radix_pass(source, target, np.uint64(shift), counts)
        source, target = target, source
    mask = (np.uint64(1) << shift_positions) - np.uint64(1)
    for k in range(n):  # reads source[k] before writing index k of either buffer
        key = source[k]
        order[k] = np.int64(key & mask)
        scratch[k] = np.int64(key >> shift_positions)


@numba.njit(cache=True, nogil=True)
def _sort_indirect(rows, row_bits, order, scratch):
    """:func:`_sort_packed` for keys wider than 64 bits: sorts positions, gathering each one's
    row in every pass."""
    n = rows.shape[0]
    for i in range(n):
        order[i] = i
    counts = np.empty(_RADIX + 1, dtype=np.int64)
    source, target = order, scratch
    for shift in range(0, row_bits, _RADIX_BITS):
        counts[:] = 0
        for i in range(n):
            counts[((rows[source[i]] >> shift) & (_RADIX - 1)) + 1] += 1
        for d in range(_RADIX):
            counts[d + 1] += counts[d]
        for i in range(n):
            digit = (rows[source[i]] >> shift) & (_RADIX - 1)
            target[counts[digit]] = source[i]
            counts[digit] += 1
        source, target = target, source
    if source is not order:
        order[:] = source
    for k in range(n):
        scratch[k] = rows[order[k]]


@numba.njit(cache=True, nogil=True)
def group_rows(rows, offsets, max_row, order, scratch, unique_out, occurrence_offsets, bag_of):
    """Groups equal ``rows`` (all in ``[0, max_row]``) by a stable LSD radix sort, in ``O(N)`` per pass.

    ``ceil(bits(max_row) / 11)`` passes of 2048 buckets: 2 passes for a 200k-row table, 3 for
    40M. Writes into ``order`` the positions sorted by row (stable, so ascending within a row;
    ``scratch`` is an ``N``-sized buffer), the distinct rows ascending into ``unique_out[:U]``,
    their CSR boundaries into ``occurrence_offsets[:U + 1]``, and each position's bag into
    ``bag_of``; returns ``U``. Ascending rows make the update kernels walk memory forwards.
    """
    n = rows.shape[0]
    row_bits, position_bits = _bit_length(max_row), _bit_length(max(n - 1, 0))
    if row_bits + position_bits <= 64:
        _sort_packed(rows, row_bits, position_bits, order, scratch)
    else:
        _sort_indirect(rows, row_bits, order, scratch)
    u = 0
    occurrence_offsets[0] = 0
    previous = -1  # rows are non-negative
    for k in range(n):
        row = scratch[k]
        if row != previous:
            occurrence_offsets[u] = k
            unique_out[u] = row
            u += 1
            previous = row
    occurrence_offsets[u] = n
    for b in range(offsets.shape[0] - 1):
        for i in range(offsets[b], offsets[b + 1]):
            bag_of[i] = b
    return u


def dedupe(
    rows: np.ndarray, offsets: np.ndarray, num_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """De-duplicates ``rows`` (in ``[0, num_rows)``) into ``(unique_rows, occurrence_offsets, occurrences, bag_of)``.

    ``unique_rows`` ascend and each group's positions ascend, so the update kernels sum a row's
    gradients in a fixed order and touch memory in address order. The radix sort
    (:func:`group_rows`) replaced NumPy's stable argsort: 0.9 ms against 5.0 ms for the 102,400
    IDs of the largest multi-hot feature. The unique outputs are views of ``N``-sized buffers.
    """
    n = rows.shape[0]
    occurrences = np.empty(n, dtype=np.int64)
    scratch = np.empty(n, dtype=np.int64)
    unique_rows = np.empty(n, dtype=np.int64)
    occurrence_offsets = np.empty(n + 1, dtype=np.int64)
    bag_of = np.empty(n, dtype=np.int64)
    u = group_rows(rows, offsets, max(int(num_rows) - 1, 0), occurrences, scratch, unique_rows, occurrence_offsets, bag_of)
    return unique_rows[:u], occurrence_offsets[: u + 1], occurrences, bag_of
