"""Numba kernels of the data layer, over NumPy arrays only.

Each kernel trusts its input (the public wrappers in :mod:`terarec.data.hashing`,
:mod:`terarec.data.stats` and :mod:`terarec.data.loader` validate it) and writes into a
caller-allocated ``out`` array. Reference implementations live in ``tests/data``.
"""

from __future__ import annotations

import numba
import numpy as np

FNV_OFFSET_BASIS = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, nogil=True)
def fnv1a_strings(data, offsets, validity, array_offset, out):  # pragma: no cover - jitted
    """FNV-1a 64 of each string of an Arrow string array, into ``out`` (``uint64``).

    ``data`` is the ``uint8`` value buffer, ``offsets`` the ``int32``/``int64`` offset buffer
    (``len(out) + array_offset + 1`` entries used), ``validity`` the Arrow validity bitmap as
    ``uint8`` (empty: all valid) and ``array_offset`` the array's slice offset. A null hashes
    as the empty string.
    """
    has_validity = validity.shape[0] > 0
    for i in range(out.shape[0]):
        j = i + array_offset
        h = FNV_OFFSET_BASIS
        if (not has_validity) or ((validity[j >> 3] >> (j & 7)) & 1) == 1:
            for k in range(offsets[j], offsets[j + 1]):
                h = h ^ np.uint64(data[k])
                h = h * FNV_PRIME
        out[i] = h


@numba.njit(cache=True, nogil=True)
def _mix64(x):  # pragma: no cover - jitted
    # splitmix64's finalizer: a bijection of uint64 with good avalanche.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def mix64(values, out):  # pragma: no cover - jitted
    """splitmix64 finalizer of each ``uint64`` in ``values``, into ``out``."""
    for i in range(values.shape[0]):
        out[i] = _mix64(values[i])


@numba.njit(cache=True, nogil=True)
def hll_update(values, precision, registers):  # pragma: no cover - jitted
    """Adds ``int64`` IDs (viewed as ``uint64``) to HyperLogLog ``registers`` (``uint8``, ``2**precision``).

    Each ID is mixed with splitmix64; the top ``precision`` bits pick the register, which keeps
    the maximum over IDs of 1 + the number of leading zeros of the remaining bits.
    """
    rest_bits = 64 - precision
    for i in range(values.shape[0]):
        h = _mix64(values[i])
        idx = np.int64(h >> np.uint64(rest_bits))
        w = h << np.uint64(precision)
        rank = 1
        while rank <= rest_bits and (w & np.uint64(0x8000000000000000)) == 0:
            rank += 1
            w = w << np.uint64(1)
        if rank > registers[idx]:
            registers[idx] = rank


@numba.njit(cache=True, nogil=True)
def gather_lengths(offsets, rows, out_offsets):  # pragma: no cover - jitted
    """CSR offsets of the bags ``rows`` of a jagged column, into ``out_offsets`` (``len(rows) + 1``)."""
    out_offsets[0] = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        out_offsets[i + 1] = out_offsets[i] + (offsets[r + 1] - offsets[r])


@numba.njit(cache=True, nogil=True)
def gather_values(values, offsets, rows, out_offsets, out_values):  # pragma: no cover - jitted
    """Copies the IDs of bags ``rows`` into ``out_values`` at ``out_offsets`` (from :func:`gather_lengths`)."""
    for i in range(rows.shape[0]):
        r = rows[i]
        start = offsets[r]
        dst = out_offsets[i]
        for k in range(offsets[r + 1] - start):
            out_values[dst + k] = values[start + k]
