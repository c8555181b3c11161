"""Numba kernels that give a table's rows their initial values: a pure function of
``(seed, key, column)``, the key being the row (a dynamic table's: the ID it admits), so a row
reads the same whether it is made at start-up, on a rank of a sharded table or when a tiered
table first loads it.
"""

from __future__ import annotations

import numba
import numpy as np

from terarec.embedding import _bf16, _hashing
from terarec.embedding._bf16 import store_nearest
from terarec.embedding._kernel_cache import stamp_with_sources
from terarec.embedding._hashing import splitmix64


__all__ = ["INIT_NORMAL", "INIT_UNIFORM", "INIT_ZEROS", "init_row", "init_rows_at", "init_rows_normal", "init_rows_uniform"]

_TWO_POW_M53 = 1.0 / 9007199254740992.0  # 2 ** -53


@numba.njit(cache=True, nogil=True, inline="always")
def _unit_uniform(row_key, counter):
    """Uniform float64 in ``[0, 1)`` from the 53 high bits of ``splitmix64(row_key + counter)``."""
    bits = splitmix64(row_key + np.uint64(counter))
    return np.float64(bits >> np.uint64(11)) * _TWO_POW_M53


@numba.njit(cache=True, nogil=True, inline="always")
def _row_key(seed, row):
    return splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(row)))


# Rows are written in the array's stored precision (store_nearest: float32 as is, bfloat16
# rounded to nearest), straight from the float64 draw, so a bfloat16 table needs no float32
# staging copy of its rows.


@numba.njit(cache=True, nogil=True, inline="always")
def _uniform_row(out, i, key, scale):
    for j in range(out.shape[1]):
        store_nearest(out, i, j, np.float32(scale * (2.0 * _unit_uniform(key, 2 * j) - 1.0)))


@numba.njit(cache=True, nogil=True, inline="always")
def _normal_row(out, i, key, scale):
    for j in range(out.shape[1]):
        u1 = 1.0 - _unit_uniform(key, 2 * j)  # in (0, 1]: log is finite
        u2 = _unit_uniform(key, 2 * j + 1)
        store_nearest(out, i, j, np.float32(scale * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)))


@numba.njit(cache=True, nogil=True, parallel=True)
def init_rows_uniform(out, rows, seed, scale):
    """``out[i, j] = scale * (2 u - 1)``, ``u = U(seed, rows[i], 2 j)``: uniform in ``[-scale, scale)``.

    ``U(seed, r, c)`` is the 53 high bits of ``splitmix64(splitmix64(seed ^ splitmix64(r)) + c)``
    over ``2^53``, so element ``(r, j)`` depends only on ``(seed, r, j)``.
    """
    for i in numba.prange(rows.shape[0]):
        _uniform_row(out, i, _row_key(seed, rows[i]), scale)


@numba.njit(cache=True, nogil=True, parallel=True)
def init_rows_normal(out, rows, seed, scale):
    """``out[i, j] = scale * sqrt(-2 ln(1 - u1)) * cos(2 pi u2)`` (Box–Muller), with
    ``u1 = U(seed, rows[i], 2 j)`` and ``u2 = U(seed, rows[i], 2 j + 1)`` as in :func:`init_rows_uniform`.
    """
    for i in numba.prange(rows.shape[0]):
        _normal_row(out, i, _row_key(seed, rows[i]), scale)


INIT_UNIFORM, INIT_NORMAL, INIT_ZEROS = 0, 1, 2


@numba.njit(cache=True, nogil=True, inline="always")
def init_row(out, i, seed, key, scale, kind):
    """Row ``i`` of ``out`` as :func:`init_rows_uniform` / :func:`init_rows_normal` would make
    row ``key`` (``kind``: ``INIT_UNIFORM``, ``INIT_NORMAL`` or ``INIT_ZEROS``)."""
    if kind == INIT_UNIFORM:
        _uniform_row(out, i, _row_key(seed, key), scale)
    elif kind == INIT_NORMAL:
        _normal_row(out, i, _row_key(seed, key), scale)
    else:
        for j in range(out.shape[1]):
            store_nearest(out, i, j, np.float32(0.0))


@numba.njit(cache=True, nogil=True)
def init_rows_at(weights, state, slots, keys, seed, scale, kind, initial_state):
    """Resets ``weights[slots[i]]`` to the initial row of ``keys[i]`` and its optimizer state to
    ``initial_state``. Serial on purpose: it runs on the prepare thread, next to the trainer's
    parallel kernels."""
    for i in range(slots.shape[0]):
        init_row(weights, slots[i], seed, keys[i], scale, kind)
        for j in range(state.shape[1]):
            store_nearest(state, slots[i], j, initial_state)


stamp_with_sources(globals(), _hashing, _bf16)
