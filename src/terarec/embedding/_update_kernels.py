"""The fused sparse optimizers: each distinct row of a batch gathers its gradient and is
updated in one pass (SGD, Adagrad, row-wise Adagrad, Adam). Hashing lives in
:mod:`~terarec.embedding._hashing`, pooling in :mod:`~terarec.embedding._pooling_kernels`,
prefetching in :mod:`~terarec.embedding._prefetch`, the compile flags in
:mod:`~terarec.embedding._compile_flags`, row initialisation in
:mod:`~terarec.embedding._init_kernels`, grouping equal rows in
:mod:`~terarec.embedding._dedupe_kernels`.

Every kernel sees NumPy arrays and scalars only, trusts its input (the public classes validate
it once) and writes into caller-allocated ``out`` arrays. ``prange`` is used only where each
iteration owns its output rows, so results are bit-identical for any thread count.

The kernels compile with :data:`~terarec.embedding._compile_flags.FASTMATH` only; sums that
need several accumulators to vectorise spell them out (:func:`_sum_of_squares`), so their
order is fixed by the source.

Symbols: ``N`` IDs, ``B`` bags, ``U`` distinct rows, ``D`` embedding dim, ``R`` storage rows,
``S`` optimizer state floats per row. ``slots`` index the storage arrays (``weights``,
``state``); for a RAM table a slot is the row itself, a tiered table maps rows to cache slots.
"""

from __future__ import annotations

import numba
import numpy as np

from terarec.embedding import _bf16, _compile_flags, _hashing, _prefetch
from terarec.embedding._bf16 import load_value, store_value
from terarec.embedding._compile_flags import FASTMATH
from terarec.embedding._hashing import rounding_key
from terarec.embedding._kernel_cache import stamp_with_sources
from terarec.embedding._prefetch import (
    PREFETCH_DISTANCE,
    UPDATE_PREFETCH_DISTANCE,
    prefetch_columns,
    prefetch_leading,
    prefetch_update,
)

__all__ = ["accumulate", "adagrad_row", "adagrad_update", "adam_row", "adam_update", "rowwise_adagrad_row", "rowwise_adagrad_update", "sgd_row", "sgd_update"]
_UPDATE_CHUNK = 64  # unique rows per parallel work item in the optimizer kernels


@numba.njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad_pooled, col, offsets, is_mean):
    """``g = sum(grad_pooled[bag_of[i], col:col + D] * scale)`` over the occurrences of unique
    row ``k``, in ascending position order; ``scale`` is 1 (sum) or ``1 / len(bag)`` (mean).
    Four occurrences per pass over ``g``, in the same order as one at a time, for the reason
    given in :func:`pool_bag`."""
    dim = g.shape[0]
    for j in range(dim):
        g[j] = np.float32(0.0)
    p, stop = occurrence_offsets[k], occurrence_offsets[k + 1]
    while p + 4 <= stop:
        _prefetch_gradients(occurrences, bag_of, grad_pooled, col, dim, p, p + 4)
        # Views, not grad_pooled[b, col + j]: an index LLVM cannot prove non-negative gets
        # numba's wraparound select on every element, which stops vectorisation (3x slower).
        b0, b1, b2, b3 = bag_of[occurrences[p]], bag_of[occurrences[p + 1]], bag_of[occurrences[p + 2]], bag_of[occurrences[p + 3]]
        r0, r1 = grad_pooled[b0, col : col + dim], grad_pooled[b1, col : col + dim]
        r2, r3 = grad_pooled[b2, col : col + dim], grad_pooled[b3, col : col + dim]
        if is_mean:
            c0, c1 = _mean_scale(offsets, b0), _mean_scale(offsets, b1)
            c2, c3 = _mean_scale(offsets, b2), _mean_scale(offsets, b3)
            for j in range(dim):
                g[j] = (((g[j] + r0[j] * c0) + r1[j] * c1) + r2[j] * c2) + r3[j] * c3
        else:
            for j in range(dim):
                g[j] = (((g[j] + r0[j]) + r1[j]) + r2[j]) + r3[j]
        p += 4
    _prefetch_gradients(occurrences, bag_of, grad_pooled, col, dim, p, stop)
    for q in range(p, stop):
        b = bag_of[occurrences[q]]
        src = grad_pooled[b, col : col + dim]
        if is_mean:
            scale = _mean_scale(offsets, b)
            for j in range(dim):
                g[j] += src[j] * scale
        else:
            for j in range(dim):
                g[j] += src[j]


@numba.njit(cache=True, nogil=True, inline="always")
def _mean_scale(offsets, b):
    return np.float32(1.0) / np.float32(offsets[b + 1] - offsets[b])


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_gradients(occurrences, bag_of, grad_pooled, col, dim, first, stop):
    """Prefetches the gradient rows that occurrences ``PREFETCH_DISTANCE`` later than
    ``[first, stop)`` read. They come in bag order, random to the hardware prefetcher: fetching
    them ahead cut the accumulation of 219k multi-hot Zipf IDs from 4.6 to 2.7 ms. Past a row's
    last occurrence it fetches the next rows' (or another table's: harmless)."""
    for p in range(first + PREFETCH_DISTANCE, min(stop + PREFETCH_DISTANCE, occurrences.shape[0])):
        prefetch_columns(grad_pooled, bag_of[occurrences[p]], col, dim)


# One optimizer step of one row: slot ``s`` (table row ``row``) given its accumulated gradient
# ``g`` (float32 hyper-parameters). Shared by the per-table and the fused updates: same code,
# same bits. Weights and state are read and written in their stored precision (float32 or
# bfloat16, :mod:`~terarec.embedding._bf16`); ``seed`` keys bfloat16's stochastic rounding,
# the state's key offset by ``D`` so that it draws other noise than the weights.


@numba.njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def sgd_row(weights, s, row, g, lr32, seed):
    key = rounding_key(seed, row)
    for j in range(weights.shape[1]):
        store_value(weights, s, j, load_value(weights, s, j) - lr32 * g[j], key)


@numba.njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def adagrad_row(weights, state, s, row, g, lr32, eps32, seed):
    key = rounding_key(seed, row)
    dim = weights.shape[1]
    for j in range(dim):
        v = load_value(state, s, j) + g[j] * g[j]
        store_value(state, s, j, v, key + np.uint64(dim))
        # The stored v, not the exact one: a bfloat16 state must read the same when resumed.
        v = load_value(state, s, j)
        store_value(weights, s, j, load_value(weights, s, j) - lr32 * (g[j] / (np.sqrt(v) + eps32)), key)


@numba.njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def _sum_of_squares(g):
    """``sum(g ** 2)`` in eight interleaved partial sums combined pairwise: a fixed order that
    still vectorises (one SIMD register of eight lanes) without letting LLVM reassociate."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
    dim = g.shape[0]
    body = dim - dim % 8
    for j in range(0, body, 8):
        s0 += g[j] * g[j]
        s1 += g[j + 1] * g[j + 1]
        s2 += g[j + 2] * g[j + 2]
        s3 += g[j + 3] * g[j + 3]
        s4 += g[j + 4] * g[j + 4]
        s5 += g[j + 5] * g[j + 5]
        s6 += g[j + 6] * g[j + 6]
        s7 += g[j + 7] * g[j + 7]
    tail = np.float32(0.0)
    for j in range(body, dim):
        tail += g[j] * g[j]
    return (((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))) + tail


@numba.njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def rowwise_adagrad_row(weights, state, s, row, g, lr32, eps32, seed):
    key = rounding_key(seed, row)
    dim = weights.shape[1]
    store_value(state, s, 0, load_value(state, s, 0) + _sum_of_squares(g) / np.float32(dim), key + np.uint64(dim))
    multiplier = lr32 / (np.sqrt(load_value(state, s, 0)) + eps32)
    for j in range(dim):
        store_value(weights, s, j, load_value(weights, s, j) - multiplier * g[j], key)


@numba.njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def adam_row(weights, state, s, row, g, step32, one_m_b1, one_m_b2, eps32, seed):
    key = rounding_key(seed, row)
    dim = weights.shape[1]
    for j in range(dim):
        m = load_value(state, s, j)
        v = load_value(state, s, dim + j)
        store_value(state, s, j, m + (g[j] - m) * one_m_b1, key + np.uint64(dim))
        store_value(state, s, dim + j, v + (g[j] * g[j] - v) * one_m_b2, key + np.uint64(dim))
        m, v = load_value(state, s, j), load_value(state, s, dim + j)
        store_value(weights, s, j, load_value(weights, s, j) - step32 * (m / (np.sqrt(v) + eps32)), key)


# The four fused updates share one signature prefix:
#   weights (R, D), state (R, S), slots (U), rows (U, the table rows of the slots: bfloat16
#   rounding is keyed by row, wherever a cache puts it), occurrence_offsets (U + 1),
#   occurrences (N), bag_of (N), grad_pooled (B, D), offsets (B + 1), is_mean (bool), seed
#   (uint64, the step's rounding seed: :func:`step_rounding_seed`), then hyper-parameters.
# Each parallel item owns a chunk of unique rows (distinct slots), accumulates each row's
# gradient into its own buffer and updates that row and its state in place.


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def sgd_update(
    weights, state, slots, rows, occurrence_offsets, occurrences, bag_of, grad_pooled, offsets, is_mean, seed, lr
):
    """``w -= lr * g``."""
    dim = weights.shape[1]
    lr32 = np.float32(lr)
    u = slots.shape[0]
    for c in numba.prange((u + _UPDATE_CHUNK - 1) // _UPDATE_CHUNK):
        g = np.empty(dim, dtype=np.float32)
        start, stop = c * _UPDATE_CHUNK, min(u, (c + 1) * _UPDATE_CHUNK)
        prefetch_leading(weights, state, slots, start, u, UPDATE_PREFETCH_DISTANCE, False)
        for k in range(start, stop):
            prefetch_update(weights, state, slots, k, u, False)
            accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad_pooled, 0, offsets, is_mean)
            sgd_row(weights, slots[k], rows[k], g, lr32, seed)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def adagrad_update(
    weights, state, slots, rows, occurrence_offsets, occurrences, bag_of, grad_pooled, offsets, is_mean, seed, lr, eps
):
    """``s += g^2; w -= lr * g / (sqrt(s) + eps)`` elementwise, ``state`` is ``(R, D)``."""
    dim = weights.shape[1]
    lr32, eps32 = np.float32(lr), np.float32(eps)
    u = slots.shape[0]
    for c in numba.prange((u + _UPDATE_CHUNK - 1) // _UPDATE_CHUNK):
        g = np.empty(dim, dtype=np.float32)
        start, stop = c * _UPDATE_CHUNK, min(u, (c + 1) * _UPDATE_CHUNK)
        prefetch_leading(weights, state, slots, start, u, UPDATE_PREFETCH_DISTANCE, True)
        for k in range(start, stop):
            prefetch_update(weights, state, slots, k, u, True)
            accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad_pooled, 0, offsets, is_mean)
            adagrad_row(weights, state, slots[k], rows[k], g, lr32, eps32, seed)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def rowwise_adagrad_update(
    weights, state, slots, rows, occurrence_offsets, occurrences, bag_of, grad_pooled, offsets, is_mean, seed, lr, eps
):
    """``s += mean_j(g_j^2); w -= (lr / (sqrt(s) + eps)) * g``, ``state`` is ``(R, 1)`` (FBGEMM)."""
    dim = weights.shape[1]
    lr32, eps32 = np.float32(lr), np.float32(eps)
    u = slots.shape[0]
    for c in numba.prange((u + _UPDATE_CHUNK - 1) // _UPDATE_CHUNK):
        g = np.empty(dim, dtype=np.float32)
        start, stop = c * _UPDATE_CHUNK, min(u, (c + 1) * _UPDATE_CHUNK)
        prefetch_leading(weights, state, slots, start, u, UPDATE_PREFETCH_DISTANCE, True)
        for k in range(start, stop):
            prefetch_update(weights, state, slots, k, u, True)
            accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad_pooled, 0, offsets, is_mean)
            rowwise_adagrad_row(weights, state, slots[k], rows[k], g, lr32, eps32, seed)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def adam_update(
    weights,
    state,
    slots,
    rows,
    occurrence_offsets,
    occurrences,
    bag_of,
    grad_pooled,
    offsets,
    is_mean,
    seed,
    step_size,
    beta1,
    beta2,
    eps,
):
    """``torch.optim.SparseAdam``: ``m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    w -= step_size * m / (sqrt(v) + eps)``, ``step_size = lr sqrt(1 - b2^t) / (1 - b1^t)``;
    ``state`` is ``(R, 2 D)``, ``m`` then ``v``."""
    dim = weights.shape[1]
    step32, eps32 = np.float32(step_size), np.float32(eps)
    one_m_b1, one_m_b2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    u = slots.shape[0]
    for c in numba.prange((u + _UPDATE_CHUNK - 1) // _UPDATE_CHUNK):
        g = np.empty(dim, dtype=np.float32)
        start, stop = c * _UPDATE_CHUNK, min(u, (c + 1) * _UPDATE_CHUNK)
        prefetch_leading(weights, state, slots, start, u, UPDATE_PREFETCH_DISTANCE, True)
        for k in range(start, stop):
            prefetch_update(weights, state, slots, k, u, True)
            accumulate(g, k, occurrence_offsets, occurrences, bag_of, grad_pooled, 0, offsets, is_mean)
            adam_row(weights, state, slots[k], rows[k], g, step32, one_m_b1, one_m_b2, eps32, seed)


stamp_with_sources(globals(), _bf16, _compile_flags, _hashing, _prefetch)
