"""Software prefetch for the kernels that read rows in an order the hardware cannot guess:
LLVM's ``llvm.prefetch`` as a numba intrinsic, and the row and update look-aheads built on it.
A prefetch is a hint: it never faults and changes no result."""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["PREFETCH_DISTANCE", "UPDATE_PREFETCH_DISTANCE", "prefetch_columns", "prefetch_leading", "prefetch_line", "prefetch_row", "prefetch_update"]


# Rows ahead. The lookup's 12 was 15-20% faster than none pooling over 1 GB tables; the
# update, which also reads state and writes both back, was 5% faster at 6 than at 12 or 20
# (multi-hot and one-hot, Zipf and uniform): more rows in flight only queue behind each other.
PREFETCH_DISTANCE = 12
UPDATE_PREFETCH_DISTANCE = 6
_CACHE_LINE_BYTES = 64


@intrinsic
def prefetch_line(typingctx, array, row, column):  # type: ignore[no-untyped-def]
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
def prefetch_row(array, row):
    """Prefetches every 64-byte line of ``array[row]``. Rows are read in an order the hardware
    prefetcher cannot guess; asking a few rows ahead overlaps their memory latency with the
    current row's arithmetic. All lines, not only the first: a 128-float row spans eight, and
    the first-line hint alone left the update waiting on the other seven (update of 60k Zipf
    rows, dim 128: 6.9 ms with the first line, 4.5 ms with all of them)."""
    prefetch_columns(array, row, 0, array.shape[1])


@numba.njit(cache=True, nogil=True, inline="always")
def prefetch_columns(array, row, first, count):
    """Prefetches every 64-byte line of ``array[row, first:first + count]``."""
    step = max(1, _CACHE_LINE_BYTES // array.itemsize)
    for column in range(first, first + count, step):
        prefetch_line(array, row, column)


@numba.njit(cache=True, nogil=True, inline="always")
def prefetch_update(weights, state, rows, k, limit, with_state):
    """Prefetches the weights (and state) row that the update reaches ``UPDATE_PREFETCH_DISTANCE``
    rows later. ``limit`` is the end of the table's rows, not of the work item: the next item
    usually runs on the same thread (``prange`` hands each thread consecutive items)."""
    if k + UPDATE_PREFETCH_DISTANCE < limit:
        row = rows[k + UPDATE_PREFETCH_DISTANCE]
        prefetch_row(weights, row)
        if with_state:
            prefetch_row(state, row)


@numba.njit(cache=True, nogil=True, inline="always")
def prefetch_leading(weights, state, rows, start, limit, count, with_state):
    """Prefetches the first ``count`` rows (the prefetch distance) of a work item that starts
    at ``start``: no earlier iteration asked for them, and loading them one by one left a
    sixth to a third of the rows of short items (update chunks, one-hot lookup blocks)
    waiting on memory in turn."""
    for k in range(start, min(start + count, limit)):
        prefetch_row(weights, rows[k])
        if with_state:
            prefetch_row(state, rows[k])
