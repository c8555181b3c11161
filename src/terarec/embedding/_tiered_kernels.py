"""numba kernels of the tiered storage: a CLOCK-managed row cache over a slab file.

A row's record in the file is its weights then its optimizer state, ``F = D + S`` values of
the storage's dtype (``float32``, or bfloat16 bits in ``uint16``) at byte
``row * F * itemsize``. File I/O goes through libc's ``pread``/``pwrite`` called from compiled
code (declared as external symbols), so a batch's misses cost one system call
each and no Python; the kernels release the GIL, so a batch's rows load on the prepare
thread while the trainer computes the previous batch.

A batch becomes resident in four phases: :func:`plan_batch` picks slots (serial, no I/O),
:func:`write_victims` writes dirty victims back, :func:`commit_batch` updates the maps once
they are safe, :func:`load_misses` fills the slots. The two I/O phases run on many threads
at once (each call handles a range of the misses): one miss is one small random read, and a
single thread would leave the SSD idle between them.

Status codes returned by the kernels: ``OK``; ``CACHE_FULL`` (no unpinned slot left);
``WRITE_FAILED`` / ``READ_FAILED`` with the failing row and ``errno`` in ``report``.
"""

from __future__ import annotations

import errno

import numba
import numpy as np

from terarec.embedding import _bf16, _hashing, _init_kernels, _libc
from terarec.embedding._libc import errno_value as _errno
from terarec.embedding._libc import pread as _pread
from terarec.embedding._libc import pwrite as _pwrite
from terarec.embedding._kernel_cache import stamp_with_sources

__all__ = [
    "CACHE_FULL",
    "OK",
    "READ_FAILED",
    "WRITE_FAILED",
    "commit_batch",
    "copy_rows",
    "mark_written",
    "gather_slots",
    "load_misses",
    "plan_batch",
    "read_rows",
    "write_rows",
    "write_victims",
]

OK, CACHE_FULL, WRITE_FAILED, READ_FAILED = 0, 1, 2, 3
_MAX_USES = 3  # GCLOCK's saturating use count
_SHORT_WRITE = errno.ENOSPC  # a write that wrote less than asked: the disk filled up

@numba.njit(cache=True, nogil=True, inline="always")
def _test_bit(bits, i):
    return (bits[i >> 3] >> (i & 7)) & 1


@numba.njit(cache=True, nogil=True, inline="always")
def _set_bit(bits, i):
    bits[i >> 3] |= np.uint8(1 << (i & 7))


@numba.njit(cache=True, nogil=True)
def _aligned_record(values, like):
    """A buffer of ``values`` elements of ``like``'s dtype starting on a 512-byte boundary, as
    ``O_DIRECT`` I/O requires."""
    itemsize = like.itemsize
    raw = np.empty(values + 512 // itemsize, dtype=like.dtype)
    shift = ((512 - raw.ctypes.data % 512) % 512) // itemsize
    return raw[shift : shift + values]


@numba.njit(cache=True, nogil=True)
def _write_record(fd, weights, state, slot, row, record):
    """Packs slot's weights and state into ``record`` and writes it as ``row``; returns 0 or errno."""
    dim = weights.shape[1]
    for j in range(dim):
        record[j] = weights[slot, j]
    for j in range(state.shape[1]):
        record[dim + j] = state[slot, j]
    nbytes = record.shape[0] * record.itemsize
    written = _pwrite(fd, record.ctypes.data, nbytes, row * nbytes)
    if written == nbytes:
        return 0
    return _errno() if written < 0 else _SHORT_WRITE


@numba.njit(cache=True, nogil=True)
def _read_record(fd, weights, state, slot, row, record):
    """Reads ``row``'s record into slot; returns 0 or errno (``-1`` for a short read: truncated file)."""
    nbytes = record.shape[0] * record.itemsize
    got = _pread(fd, record.ctypes.data, nbytes, row * nbytes)
    if got != nbytes:
        return _errno() if got < 0 else -1
    dim = weights.shape[1]
    for j in range(dim):
        weights[slot, j] = record[j]
    for j in range(state.shape[1]):
        state[slot, j] = record[dim + j]
    return 0


@numba.njit(cache=True, nogil=True)
def _take_slot(slot_row, slot_stamp, referenced, free_slots, cursor, tick):
    """A slot for a missing row: a free one, else the CLOCK victim, never one stamped by this
    batch or the previous. ``referenced`` holds a small use count per slot (GCLOCK): the hand
    decrements it and takes a slot at zero, so rows used often survive more sweeps than rows
    used once (Zipf tails). ``cursor`` holds ``[free count, clock hand]``. Returns ``-1`` when
    every slot is pinned."""
    if cursor[0] > 0:
        cursor[0] -= 1
        return free_slots[cursor[0]]
    capacity = slot_row.shape[0]
    for _ in range((_MAX_USES + 1) * capacity + 1):
        slot = cursor[1]
        cursor[1] = slot + 1 if slot + 1 < capacity else 0
        if slot_stamp[slot] >= tick - 1:
            continue
        if referenced[slot] > 0:
            referenced[slot] -= 1
            continue
        return slot
    return -1


@numba.njit(cache=True, nogil=True)
def plan_batch(
    row_slot, slot_row, slot_stamp, referenced, free_slots, cursor, unique_rows, is_new, tick, out, miss_index,
    victims, report,
):  # fmt: skip
    """First phase of making a batch resident: finds each row's slot without moving any data.

    A hit keeps its slot and counts one more use; a miss gets a free slot or a CLOCK victim,
    pinned at once so it is not chosen twice. Misses go to ``miss_index[:m]`` (positions in
    ``unique_rows``) with the row their slot held in ``victims[:m]`` (``-1`` if none); victims
    are unmapped at once (:func:`commit_batch` does the rest, or the caller restores them if a
    write-back fails). A new row already cached (a dynamic table re-using a row) is a miss that
    keeps its slot. ``report`` accumulates ``[hits, misses, rows read, rows written, failing
    row, errno]`` (the I/O phases fill the last four). Returns ``(status, m)``."""
    m = 0
    for i in range(unique_rows.shape[0]):
        row = unique_rows[i]
        slot = row_slot[row]
        if slot >= 0:
            if is_new[i]:
                miss_index[m], victims[m] = i, -1
                m += 1
                referenced[slot] = 1
            else:
                report[0] += 1
                if referenced[slot] < _MAX_USES:
                    referenced[slot] += 1
        else:
            slot = _take_slot(slot_row, slot_stamp, referenced, free_slots, cursor, tick)
            if slot < 0:
                report[4] = i
                return CACHE_FULL, m
            victim = slot_row[slot]
            if victim >= 0:
                row_slot[victim] = -1  # a later row of this batch that is the victim must miss
            miss_index[m], victims[m] = i, victim
            m += 1
            referenced[slot] = 1
        slot_stamp[slot] = tick
        out[i] = slot
    report[1] += m
    return OK, m


@numba.njit(cache=True, nogil=True)
def write_victims(fd, weights, state, dirty, out, miss_index, victims, start, stop, report):
    """Second phase, for misses ``[start, stop)`` (one call per I/O thread): writes each dirty
    victim's row back to the file. Touches no shared bookkeeping."""
    record = _aligned_record(weights.shape[1] + state.shape[1], weights)
    for k in range(start, stop):
        slot = out[miss_index[k]]
        if victims[k] >= 0 and dirty[slot]:
            error = _write_record(fd, weights, state, slot, victims[k], record)
            if error != 0:
                report[4], report[5] = victims[k], error
                return WRITE_FAILED
            report[3] += 1
    return OK


@numba.njit(cache=True, nogil=True)
def commit_batch(row_slot, slot_row, dirty, on_disk, changed, unique_rows, out, miss_index, victims, m, training):
    """Third phase, once every victim is safely on disk: records the victims as on disk, maps
    each missed row to its slot, and marks the batch's slots dirty when training."""
    for k in range(m):
        slot = out[miss_index[k]]
        victim = victims[k]
        if victim >= 0:
            if dirty[slot]:
                _set_bit(on_disk, victim)
                _set_bit(changed, victim)
                dirty[slot] = 0
        row = unique_rows[miss_index[k]]
        slot_row[slot] = row
        row_slot[row] = slot
    if training:
        for i in range(unique_rows.shape[0]):
            dirty[out[i]] = 1


@numba.njit(cache=True, nogil=True)
def load_misses(
    fd, weights, state, on_disk, unique_rows, out, miss_index, is_new, new_keys, start, stop,
    seed, scale, init_kind, initial_state, report,
):  # fmt: skip
    """Last phase, for misses ``[start, stop)`` (one call per I/O thread): fills each missed
    slot from the file when ``on_disk`` says the file holds the row, else with the row's
    initial value (keyed by the row, as a RAM table starts), or for a new row
    (``is_new``) by ``new_keys``. ``initial_state`` is in the storage's dtype."""
    record = np.empty(weights.shape[1] + state.shape[1], dtype=weights.dtype)
    for k in range(start, stop):
        i = miss_index[k]
        row, slot = unique_rows[i], out[i]
        if is_new[i]:
            _init_kernels.init_row(weights, slot, seed, new_keys[i], scale, init_kind)
            state[slot] = initial_state
        elif _test_bit(on_disk, row):
            error = _read_record(fd, weights, state, slot, row, record)
            if error != 0:
                report[4], report[5] = row, error
                return READ_FAILED
            report[2] += 1
        else:
            _init_kernels.init_row(weights, slot, seed, row, scale, init_kind)
            state[slot] = initial_state
    return OK


@numba.njit(cache=True, nogil=True)
def mark_written(dirty, on_disk, changed, slots, rows):
    """After ``rows`` were written from ``slots``: clean slots, rows recorded as in the file and
    changed since the last snapshot."""
    for k in range(slots.shape[0]):
        dirty[slots[k]] = 0
        _set_bit(on_disk, rows[k])
        _set_bit(changed, rows[k])


@numba.njit(cache=True, nogil=True)
def read_rows(fd, rows, out, report):
    """``out[i] = record of rows[i]`` (``out`` is ``(n, F)``); for the incremental snapshot."""
    nbytes = out.shape[1] * out.itemsize
    for i in range(rows.shape[0]):
        got = _pread(fd, out[i].ctypes.data, nbytes, rows[i] * nbytes)
        if got != nbytes:
            report[4], report[5] = rows[i], _errno() if got < 0 else -1
            return READ_FAILED
    return OK


@numba.njit(cache=True, nogil=True)
def write_rows(fd, rows, records, report):
    """Writes ``records[i]`` as row ``rows[i]``; to replay an incremental snapshot."""
    nbytes = records.shape[1] * records.itemsize
    for i in range(rows.shape[0]):
        written = _pwrite(fd, records[i].ctypes.data, nbytes, rows[i] * nbytes)
        if written != nbytes:
            report[4], report[5] = rows[i], _errno() if written < 0 else _SHORT_WRITE
            return WRITE_FAILED
    return OK


@numba.njit(cache=True, nogil=True)
def copy_rows(fd, weights, state, row_slot, on_disk, rows, seed, scale, init_kind, initial_state, record, out_w, out_s, report):
    """Current value of each of ``rows`` (cached, on disk, or initial) into ``out_w``/``out_s``
    (the storage's dtype), leaving the cache as it is."""
    for i in range(rows.shape[0]):
        row = rows[i]
        slot = row_slot[row]
        if slot >= 0:
            out_w[i] = weights[slot]
            out_s[i] = state[slot]
        elif _test_bit(on_disk, row):
            error = _read_record(fd, out_w, out_s, i, row, record)
            if error != 0:
                report[4], report[5] = row, error
                return READ_FAILED
        else:
            _init_kernels.init_row(out_w, i, seed, row, scale, init_kind)
            out_s[i] = initial_state
    return OK


@numba.njit(cache=True, nogil=True)
def gather_slots(row_slot, rows, out):
    """``out[i] = row_slot[rows[i]]``, ``-1`` kept for rows of ``-1``."""
    for i in range(rows.shape[0]):
        out[i] = row_slot[rows[i]] if rows[i] >= 0 else -1


stamp_with_sources(globals(), _hashing, _init_kernels, _bf16, _libc)
