"""Numba kernels of the embedding layer: hashing IDs to rows, pooling and the fused sparse
optimizers. Row initialisation lives in :mod:`~terarec.embedding._init_kernels`, grouping equal
rows in :mod:`~terarec.embedding._dedupe_kernels`.

Every kernel sees NumPy arrays and scalars only, trusts its input (the public classes validate
it once) and writes into caller-allocated ``out`` arrays. ``prange`` is used only where each
iteration owns its output rows, so results are bit-identical for any thread count.

Pooling and the fused updates compile with the fast-math flags in ``FASTMATH`` only (no
NaN/inf/signed-zero care), none that changes a finite result's bits: not ``contract`` or
``arcp`` (a loop's vector body and its scalar remainder would round differently, so results
would depend on the vector width and on where a column block starts), and not ``reassoc`` (LLVM
may reorder sums differently in a fresh compile than in the code numba loads from its cache,
and a resumed run would differ in the last bit). Sums that need several accumulators to
vectorise spell them out (:func:`_sum_of_squares`), so their order is fixed by the source.

Symbols: ``N`` IDs, ``B`` bags, ``U`` distinct rows, ``D`` embedding dim, ``R`` storage rows,
``S`` optimizer state floats per row. ``slots`` index the storage arrays (``weights``,
``state``); for a RAM table a slot is the row itself, a tiered table maps rows to cache slots.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from terarec.embedding import _bf16
from terarec.embedding._bf16 import load_value, store_value
from terarec.embedding._kernel_cache import stamp_with_sources

__all__ = [
    "FASTMATH",
    "PREFETCH_DISTANCE",
    "UPDATE_PREFETCH_DISTANCE",
    "accumulate",
    "adagrad_row",
    "adagrad_update",
    "adam_row",
    "adam_update",
    "derive_table_seed",
    "hash_to_rows",
    "pool_bag",
    "pool_mean",
    "pool_sum",
    "prefetch_leading",
    "prefetch_update",
    "rounding_key",
    "rowwise_adagrad_row",
    "rowwise_adagrad_update",
    "sgd_row",
    "sgd_update",
    "splitmix64",
    "step_rounding_seed",
]

# Only flags that leave every finite result's bits alone: contraction into fused multiply-adds,
# reciprocal and approximate-function rewrites round differently in a loop's vector body than
# in its scalar remainder, so a column block of a row (column-wise shards) would not train
# bit-identically to the whole row, and AVX2 and AVX-512 builds would split a row differently.
FASTMATH = {"nsz", "nnan", "ninf"}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_UPDATE_CHUNK = 64  # unique rows per parallel work item in the optimizer kernels


@numba.njit(cache=True, nogil=True)
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64's finaliser of ``x + golden``: a bijective, well-mixed 64-bit hash."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def derive_table_seed(seed: int, name: str) -> np.uint64:
    """Stable 64-bit seed of table ``name`` under global ``seed`` (BLAKE2b, not Python's ``hash``)."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{name}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


@numba.njit(cache=True, nogil=True, inline="always")
def rounding_key(seed, row):
    """Stochastic-rounding key of ``row`` in a step whose seed is ``seed``
    (:func:`step_rounding_seed`); :mod:`~terarec.embedding._bf16` salts it with the column."""
    return splitmix64(seed + np.uint64(row))


def step_rounding_seed(table_seed: np.uint64, step: int, first_row: int = 0) -> np.uint64:
    """Seed of a table's stochastic rounding at ``step``: a hash of both, plus ``first_row``,
    so a shard holding rows from ``first_row`` on rounds each row as the whole table would."""
    mixed = int(splitmix64(np.uint64(table_seed) ^ splitmix64(np.uint64(step))))
    return np.uint64((mixed + int(first_row)) & 0xFFFF_FFFF_FFFF_FFFF)


# The kernels of ``prepare`` (hash, group) are serial on purpose: ``prepare`` runs on a
# background thread beside the parallel lookup/update kernels, and numba's fallback
# ``workqueue`` threading layer aborts when two threads launch parallel kernels at once.
# ``nogil`` still lets them overlap with the training thread.


@numba.njit(cache=True, nogil=True)
def hash_to_rows(ids, num_embeddings, out):
    """``out[i] = splitmix64(uint64(ids[i])) % num_embeddings``: a stable, seedless row per ID."""
    n = np.uint64(num_embeddings)
    for i in range(ids.shape[0]):
        out[i] = np.int64(splitmix64(np.uint64(ids[i])) % n)


# Rows ahead. The lookup's 12 was 15-20% faster than none pooling over 1 GB tables; the
# update, which also reads state and writes both back, was 5% faster at 6 than at 12 or 20
# (multi-hot and one-hot, Zipf and uniform): more rows in flight only queue behind each other.
PREFETCH_DISTANCE = 12
UPDATE_PREFETCH_DISTANCE = 6
_CACHE_LINE_BYTES = 64


@intrinsic
def _prefetch_line(typingctx, array, row, column):  # type: ignore[no-untyped-def]
    """Hints the CPU to start loading the cache line of ``array[row, column]`` (LLVM's
    ``llvm.prefetch``: read, high locality). A hint never faults and changes no result."""
    signature = types.void(array, row, column)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        array_type = sig.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer2(
            context, builder, data=view.data, shape=cgutils.unpack_tuple(builder, view.shape),
            strides=cgutils.unpack_tuple(builder, view.strides), layout=array_type.layout,
            inds=[args[1], args[2]], wraparound=False,
        )  # fmt: skip
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return signature, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_row(array, row):
    """Prefetches every 64-byte line of ``array[row]``. Rows are read in an order the hardware
    prefetcher cannot guess; asking a few rows ahead overlaps their memory latency with the
    current row's arithmetic. All lines, not only the first: a 128-float row spans eight, and
    the first-line hint alone left the update waiting on the other seven (update of 60k Zipf
    rows, dim 128: 6.9 ms with the first line, 4.5 ms with all of them)."""
    _prefetch_columns(array, row, 0, array.shape[1])


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_columns(array, row, first, count):
    """Prefetches every 64-byte line of ``array[row, first:first + count]``."""
    step = max(1, _CACHE_LINE_BYTES // array.itemsize)
    for column in range(first, first + count, step):
        _prefetch_line(array, row, column)


@numba.njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def _add_rows(weights, slots, start, stop, dst):
    """``dst += weights[slots[i]]`` for ``i`` in ``[start, stop)`` in order, skipping negative
    slots (an ID without a row in a dynamic table reads as zeros)."""
    for i in range(start, stop):
        s = slots[i]
        if s >= 0:
            for j in range(weights.shape[1]):
                dst[j] += load_value(weights, s, j)


@numba.njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def pool_bag(weights, slots, start, stop, limit, dst, is_mean):
    """``dst = sum(weights[slots[i]] for i in [start, stop) if slots[i] >= 0)``, divided by ``stop - start``
    when ``is_mean`` and the bag is not empty; ``dst`` is one output row (or a block of it).
    Rows up to ``slots[limit - 1]`` (later bags) are prefetched. Shared by the per-table and
    the fused lookup, so both compile the same instructions."""
    dim = weights.shape[1]
    for j in range(dim):
        dst[j] = np.float32(0.0)
    i = start
    # Four rows per pass over dst, added in the same left-to-right order as one at a time
    # (same bits): a pass per row made every add wait for the previous row's store of dst to
    # reach the next load, 11.6 ns per 128-float row against 5.3 ns four at a time.
    while i + 4 <= stop:
        for ahead in range(i + PREFETCH_DISTANCE, min(i + PREFETCH_DISTANCE + 4, limit)):
            _prefetch_row(weights, slots[ahead])
        s0, s1, s2, s3 = slots[i], slots[i + 1], slots[i + 2], slots[i + 3]
        if s0 >= 0 and s1 >= 0 and s2 >= 0 and s3 >= 0:
            for j in range(dim):
                w0, w1 = load_value(weights, s0, j), load_value(weights, s1, j)
                w2, w3 = load_value(weights, s2, j), load_value(weights, s3, j)
                dst[j] = (((dst[j] + w0) + w1) + w2) + w3
        else:
            _add_rows(weights, slots, i, i + 4, dst)
        i += 4
    for ahead in range(i + PREFETCH_DISTANCE, min(stop + PREFETCH_DISTANCE, limit)):
        _prefetch_row(weights, slots[ahead])
    _add_rows(weights, slots, i, stop, dst)
    if is_mean and stop > start:
        inv = np.float32(stop - start)
        for j in range(dim):
            dst[j] /= inv


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def pool_sum(weights, slots, offsets, out):
    """``out[b] = sum(weights[slots[i]] for i in bag b)``; an empty bag gives zeros."""
    for b in numba.prange(offsets.shape[0] - 1):
        pool_bag(weights, slots, offsets[b], offsets[b + 1], slots.shape[0], out[b], False)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=FASTMATH)
def pool_mean(weights, slots, offsets, out):
    """Like :func:`pool_sum`, then divided by the bag length; an empty bag gives zeros."""
    for b in numba.prange(offsets.shape[0] - 1):
        pool_bag(weights, slots, offsets[b], offsets[b + 1], slots.shape[0], out[b], True)


@numba.njit(cache=True, nogil=True, inline="always")
def prefetch_update(weights, state, rows, k, limit, with_state):
    """Prefetches the weights (and state) row that the update reaches ``UPDATE_PREFETCH_DISTANCE``
    rows later. ``limit`` is the end of the table's rows, not of the work item: the next item
    usually runs on the same thread (``prange`` hands each thread consecutive items)."""
    if k + UPDATE_PREFETCH_DISTANCE < limit:
        row = rows[k + UPDATE_PREFETCH_DISTANCE]
        _prefetch_row(weights, row)
        if with_state:
            _prefetch_row(state, row)


@numba.njit(cache=True, nogil=True, inline="always")
def prefetch_leading(weights, state, rows, start, limit, count, with_state):
    """Prefetches the first ``count`` rows (the prefetch distance) of a work item that starts
    at ``start``: no earlier iteration asked for them, and loading them one by one left a
    sixth to a third of the rows of short items (update chunks, one-hot lookup blocks)
    waiting on memory in turn."""
    for k in range(start, min(start + count, limit)):
        _prefetch_row(weights, rows[k])
        if with_state:
            _prefetch_row(state, rows[k])


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
        _prefetch_columns(grad_pooled, bag_of[occurrences[p]], col, dim)


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


stamp_with_sources(globals(), _bf16)
