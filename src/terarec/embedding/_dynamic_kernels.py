"""Numba kernels of the dynamic (collisionless) row map: an ``int64 -> row`` hash map, the
admission sketch, the batch mapping stages and eviction.

The map is open addressing over a power-of-two number of slots with linear probing from
``splitmix64(uint64(key)) & (slots - 1)``. A slot is empty when its ``slot_rows`` entry is
``-1``: that marker lives beside the keys, so every 64-bit key (``-1``, ``0``, ``INT64_MIN``,
``INT64_MAX``) is storable. Deletion shifts the following entries of the probe run back (no
tombstones), so probes stay short however many rows are evicted.

Per-row metadata is indexed by row: ``row_ids`` (the key a row holds), ``last_seen`` (the
training step the row was last returned, ``-1`` for a free row) and ``frequency``
(occurrences since the row was created, ``uint32``, saturating). Free rows form a stack,
``free_rows[:free_count]``, popped from the end.

Like :mod:`terarec.embedding._kernels`, kernels see arrays and scalars only, trust their input
and run serially (mapping happens on the background ``prepare`` thread), so results are
bit-identical everywhere. Symbols: ``N`` IDs in the batch, ``M`` of them not in the map,
``K`` distinct among those, ``C`` capacity (rows), ``S`` slots.
"""

from __future__ import annotations

import numba
import numpy as np

from terarec.embedding import _bf16, _hashing
from terarec.embedding._kernel_cache import stamp_with_sources
from terarec.embedding._hashing import splitmix64


__all__ = [
    "assign_rows",
    "count_and_admit",
    "evict_rows",
    "expire_rows",
    "lookup_rows",
    "map_known_rows",
    "select_victims",
]

_UINT32_MAX = np.uint32(0xFFFFFFFF)
_TWO_POW_M53 = 1.0 / 9007199254740992.0  # 2 ** -53
_DIGIT_BITS = 16  # radix of the victim selection: 65,536 buckets per pass


# ---- the hash map -----------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _home(key, mask):
    return np.int64(splitmix64(np.uint64(key)) & np.uint64(mask))


@numba.njit(cache=True, nogil=True, inline="always")
def _find(slot_keys, slot_rows, key):
    """The row of ``key``, or ``-1``."""
    mask = slot_rows.shape[0] - 1
    s = _home(key, mask)
    while slot_rows[s] >= 0:
        if slot_keys[s] == key:
            return slot_rows[s]
        s = (s + 1) & mask
    return np.int64(-1)


@numba.njit(cache=True, nogil=True, inline="always")
def _insert(slot_keys, slot_rows, key, row):
    """Stores ``key -> row``; ``key`` must be absent and a slot free (load stays <= 1/2)."""
    mask = slot_rows.shape[0] - 1
    s = _home(key, mask)
    while slot_rows[s] >= 0:
        s = (s + 1) & mask
    slot_keys[s] = key
    slot_rows[s] = row


@numba.njit(cache=True, nogil=True, inline="always")
def _delete(slot_keys, slot_rows, key):
    """Removes ``key`` (which must be present) by backward shift: each later entry of the probe
    run moves into the hole when the hole lies on its probe path from its home slot."""
    mask = slot_rows.shape[0] - 1
    hole = _home(key, mask)
    while slot_keys[hole] != key or slot_rows[hole] < 0:
        hole = (hole + 1) & mask
    s = hole
    while True:
        s = (s + 1) & mask
        if slot_rows[s] < 0:
            break
        home = _home(slot_keys[s], mask)
        if ((s - home) & mask) >= ((s - hole) & mask):
            slot_keys[hole] = slot_keys[s]
            slot_rows[hole] = slot_rows[s]
            hole = s
    slot_rows[hole] = -1


@numba.njit(cache=True, nogil=True, inline="always")
def _free_row(row, slot_keys, slot_rows, row_ids, last_seen, frequency, free_rows, free_count):
    """Evicts ``row``: drops its key from the map, clears its metadata, pushes it on the free stack."""
    _delete(slot_keys, slot_rows, row_ids[row])
    last_seen[row] = -1
    frequency[row] = 0
    free_rows[free_count] = row
    return free_count + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _bump(frequency, row):
    if frequency[row] != _UINT32_MAX:
        frequency[row] += np.uint32(1)


# ---- mapping a batch: map_known_rows -> count_and_admit -> (evict) -> assign_rows ---------


@numba.njit(cache=True, nogil=True)
def lookup_rows(ids, slot_keys, slot_rows, out):
    """``out[i]`` = row of ``ids[i]``, or ``-1``; reads only (evaluation)."""
    for i in range(ids.shape[0]):
        out[i] = _find(slot_keys, slot_rows, ids[i])


@numba.njit(cache=True, nogil=True)
def map_known_rows(ids, slot_keys, slot_rows, last_seen, frequency, step, out):
    """``out[i]`` = row of ``ids[i]`` or ``-1``; each found row gets ``last_seen = step`` and one
    more ``frequency`` per occurrence. Returns ``M``, the number of ``-1`` written."""
    misses = 0
    for i in range(ids.shape[0]):
        row = _find(slot_keys, slot_rows, ids[i])
        out[i] = row
        if row >= 0:
            last_seen[row] = step
            _bump(frequency, row)
        else:
            misses += 1
    return misses


@numba.njit(cache=True, nogil=True)
def count_and_admit(
    ids, out, misses, sketch, sketch_seeds, min_count, admit_probability, draw_seed, step, distinct_ids, decisions
):
    """Groups the IDs with ``out[i] == -1`` by value and decides each one's admission once.

    Writes the ``K`` distinct missing IDs in first-occurrence order into ``distinct_ids[:K]``
    and replaces ``out[i] = -1`` by ``-2 - k`` (``k`` its index there). Each distinct ID then,
    in that order, adds its occurrence count to its ``sketch`` counters (saturating) and is
    admitted (``decisions[k] = 1``, else ``0``) when the count-min estimate reaches
    ``min_count`` and, unless ``admit_probability == 1``, a uniform draw
    ``U(draw_seed, id, step)`` falls below ``admit_probability``. A sketch with no rows admits
    on the count alone (``min_count`` is then 1). ``distinct_ids`` and ``decisions`` hold ``M``;
    returns ``K``.
    """
    size = 2
    while size < 2 * misses:
        size <<= 1
    mask = size - 1
    table = np.full(size, -1, dtype=np.int64)  # index into distinct_ids, -1 when empty
    counts = np.zeros(misses, dtype=np.int64)
    distinct = 0
    for i in range(ids.shape[0]):
        if out[i] != -1:
            continue
        key = ids[i]
        s = _home(key, mask)
        while True:
            k = table[s]
            if k < 0:
                k = distinct
                table[s] = k
                distinct_ids[k] = key
                distinct += 1
                break
            if distinct_ids[k] == key:
                break
            s = (s + 1) & mask
        counts[k] += 1
        out[i] = -2 - k
    depth = sketch.shape[0]
    width = np.uint64(sketch.shape[1])
    for k in range(distinct):
        key = np.uint64(distinct_ids[k])
        estimate = np.int64(0xFFFFFFFF)
        for r in range(depth):
            c = np.int64(splitmix64(key ^ sketch_seeds[r]) % width)
            value = min(np.int64(sketch[r, c]) + counts[k], np.int64(0xFFFFFFFF))
            sketch[r, c] = np.uint32(value)
            estimate = min(estimate, value)
        admitted = depth == 0 or estimate >= min_count
        if admitted and admit_probability < 1.0:
            bits = splitmix64(splitmix64(draw_seed ^ splitmix64(key)) + np.uint64(step))
            admitted = np.float64(bits >> np.uint64(11)) * _TWO_POW_M53 < admit_probability
        decisions[k] = 1 if admitted else 0
    return distinct


@numba.njit(cache=True, nogil=True)
def assign_rows(
    out,
    distinct_ids,
    decisions,
    distinct,
    slot_keys,
    slot_rows,
    row_ids,
    last_seen,
    frequency,
    free_rows,
    free_count,
    step,
    new_rows,
    new_ids,
):
    """Gives each admitted distinct ID (``decisions[k] == 1``), in order, a row popped from the
    free stack, inserts it in the map and records it in ``new_rows``/``new_ids``; admitted IDs
    left without a free row get ``-1``. Then resolves every ``out[i] = -2 - k`` to its row (or
    ``-1``), counting occurrences into ``frequency``. ``decisions[:K]`` is overwritten with the
    rows. Returns ``(new rows, capacity-rejected IDs, free_count)``.
    """
    created = 0
    capacity_rejected = 0
    for k in range(distinct):
        if decisions[k] == 1 and free_count > 0:
            free_count -= 1
            row = free_rows[free_count]
            key = distinct_ids[k]
            _insert(slot_keys, slot_rows, key, row)
            row_ids[row] = key
            last_seen[row] = step
            frequency[row] = 0
            new_rows[created] = row
            new_ids[created] = key
            created += 1
            decisions[k] = row
        else:
            if decisions[k] == 1:
                capacity_rejected += 1
            decisions[k] = -1
    for i in range(out.shape[0]):
        if out[i] <= -2:
            row = decisions[-2 - out[i]]
            out[i] = row
            if row >= 0:
                _bump(frequency, row)
    return created, capacity_rejected, free_count


# ---- eviction -------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _victim_key(row, field, frequency, last_seen, is_lfu):
    """Field ``field`` of a row's eviction key: ``(frequency, last_seen)`` for LFU, ``(last_seen,)`` for LRU."""
    if is_lfu and field == 0:
        return np.int64(frequency[row])
    return last_seen[row]


@numba.njit(cache=True, nogil=True)
def select_victims(last_seen, frequency, step, count, is_lfu, out):
    """Writes into ``out`` (ascending) the ``count`` evictable rows that sort first by
    ``(frequency, last_seen, row)`` (LFU) or ``(last_seen, row)`` (LRU), or every evictable
    row if there are fewer; returns how many. Evictable: live and not returned by this step
    or the previous one (``0 <= last_seen < step - 1``).

    An MSD radix select: each pass over the rows histograms the next 16-bit digit of the key
    among the rows sharing the chosen prefix, until the key of the ``count``-th row is known;
    a last pass takes the rows below it and the lowest-numbered rows equal to it. ``O(C)`` per
    pass, a handful of passes, and no ``C``-sized temporaries.
    """
    capacity = last_seen.shape[0]
    evictable = 0
    top = np.zeros(2, dtype=np.int64)  # largest value of each key field among evictable rows
    fields = 2 if is_lfu else 1
    for row in range(capacity):
        if 0 <= last_seen[row] < step - 1:
            evictable += 1
            for f in range(fields):
                top[f] = max(top[f], _victim_key(row, f, frequency, last_seen, is_lfu))
    if count <= 0:
        return 0
    threshold = np.zeros(2, dtype=np.int64)  # the count-th key, built digit by digit
    remaining = count  # rows still to take at or above the current prefix
    if count < evictable:
        histogram = np.empty(1 << _DIGIT_BITS, dtype=np.int64)
        for f in range(fields):
            bits = 0
            while bits < 64 and (top[f] >> bits) > 0:
                bits += _DIGIT_BITS
            for shift in range(bits - _DIGIT_BITS, -1, -_DIGIT_BITS):
                histogram[:] = 0
                for row in range(capacity):
                    if not 0 <= last_seen[row] < step - 1:
                        continue
                    matches = True
                    for g in range(f):
                        matches = matches and _victim_key(row, g, frequency, last_seen, is_lfu) == threshold[g]
                    value = _victim_key(row, f, frequency, last_seen, is_lfu)
                    high = shift + _DIGIT_BITS  # the digits above this one must equal the prefix
                    if matches and (high >= 64 or (value >> high) == (threshold[f] >> high)):
                        histogram[(value >> shift) & ((1 << _DIGIT_BITS) - 1)] += 1
                digit = 0
                while histogram[digit] < remaining:
                    remaining -= histogram[digit]
                    digit += 1
                threshold[f] |= np.int64(digit) << shift
    taken = 0
    for row in range(capacity):
        if not 0 <= last_seen[row] < step - 1:
            continue
        if count >= evictable:
            out[taken] = row
            taken += 1
            continue
        order = 0  # -1, 0, 1: the row's key below, equal to or above the threshold
        for f in range(fields):
            if order == 0:
                value = _victim_key(row, f, frequency, last_seen, is_lfu)
                order = -1 if value < threshold[f] else (1 if value > threshold[f] else 0)
        if order < 0 or (order == 0 and remaining > 0):
            out[taken] = row
            taken += 1
            if order == 0:
                remaining -= 1
    return taken


@numba.njit(cache=True, nogil=True)
def evict_rows(victims, slot_keys, slot_rows, row_ids, last_seen, frequency, free_rows, free_count):
    """Frees ``victims`` (ascending), pushed so the lowest is reused first; returns ``free_count``."""
    for i in range(victims.shape[0] - 1, -1, -1):
        free_count = _free_row(victims[i], slot_keys, slot_rows, row_ids, last_seen, frequency, free_rows, free_count)
    return free_count


@numba.njit(cache=True, nogil=True)
def expire_rows(
    cursor, window, step, ttl_steps, slot_keys, slot_rows, row_ids, last_seen, frequency, free_rows, free_count
):
    """Checks ``window`` rows from ``cursor`` round-robin and frees the live ones unseen for more
    than ``ttl_steps`` steps (``step - last_seen > ttl_steps``), in scan order. Returns
    ``(next cursor, rows freed, free_count)``."""
    capacity = last_seen.shape[0]
    freed = 0
    for _ in range(min(window, capacity)):
        if last_seen[cursor] >= 0 and step - last_seen[cursor] > ttl_steps:
            free_count = _free_row(cursor, slot_keys, slot_rows, row_ids, last_seen, frequency, free_rows, free_count)
            freed += 1
        cursor += 1
        if cursor == capacity:
            cursor = 0
    return cursor, freed, free_count


stamp_with_sources(globals(), _hashing, _bf16)
