"""numba kernels of a frozen table's row cache: a read-only CLOCK cache over an exported weights file.

Row ``r`` of the file is ``D`` values of the table's dtype at byte ``header + r * D * itemsize``
(the ``.npy`` header first). A lookup's distinct rows are found in the cache or read into a
victim slot with one ``pread`` each; the hand skips the slots the same lookup uses, so a lookup
never evicts its own rows, and gives a slot with its referenced bit set a second chance.
"""

from __future__ import annotations

import numba

from terarec.embedding import _libc
from terarec.embedding._kernel_cache import stamp_with_sources
from terarec.embedding._libc import errno_value, pread

__all__ = ["OK", "READ_FAILED", "fetch_rows", "read_rows"]

OK, READ_FAILED = 0, 3
# report: [hits, misses, failed row, errno]


@numba.njit(cache=True, nogil=True)
def _read_row(fd, header, out, row, report):
    nbytes = out.shape[0] * out.itemsize
    got = pread(fd, out.ctypes.data, nbytes, header + row * nbytes)
    if got == nbytes:
        return True
    report[2], report[3] = row, errno_value() if got < 0 else -1
    return False


@numba.njit(cache=True, nogil=True)
def fetch_rows(fd, header, rows, row_slot, slot_row, referenced, in_use, hand, cache, slots, report):
    """``slots[i]``: the cache slot holding ``rows[i]`` (distinct rows, at most the cache's size),
    each miss read from the file; returns ``OK`` or ``READ_FAILED`` (row and ``errno`` in
    ``report``; the cache stays consistent)."""
    capacity = cache.shape[0]
    for i in range(rows.shape[0]):
        slot = row_slot[rows[i]]
        slots[i] = slot
        if slot >= 0:
            in_use[slot] = 1
            referenced[slot] = 1
            report[0] += 1
    status = OK
    for i in range(rows.shape[0]):
        if slots[i] >= 0:
            continue
        while True:
            victim = hand[0]
            hand[0] = victim + 1 if victim + 1 < capacity else 0
            if in_use[victim]:
                continue
            if referenced[victim]:
                referenced[victim] = 0
                continue
            break
        evicted = slot_row[victim]
        if evicted >= 0:
            row_slot[evicted] = -1
            slot_row[victim] = -1
        if not _read_row(fd, header, cache[victim], rows[i], report):
            status = READ_FAILED
            break
        row_slot[rows[i]] = victim
        slot_row[victim] = rows[i]
        in_use[victim] = 1
        slots[i] = victim
        report[1] += 1
    for i in range(rows.shape[0]):
        if slots[i] >= 0:
            in_use[slots[i]] = 0
    return status


@numba.njit(cache=True, nogil=True)
def read_rows(fd, header, rows, out, report):
    """``out[i]`` = row ``rows[i]`` of the file, past the cache (a lookup with more distinct rows
    than the cache holds); returns ``OK`` or ``READ_FAILED``."""
    for i in range(rows.shape[0]):
        if not _read_row(fd, header, out[i], rows[i], report):
            return READ_FAILED
    return OK


stamp_with_sources(globals(), _libc)
