"""bfloat16 storage for the kernels: reading and writing an array element in its stored
precision while computing in ``float32``.

A bfloat16 is the high 16 bits of a ``float32``, kept in a ``uint16`` (numba has no 16-bit
float on the CPU). The kernels read and write weights and optimizer state only through
:func:`load_value` and :func:`store_value`; for a ``float32`` array they compile to a plain
load and store, so the ``float32`` kernels are unchanged, instruction for instruction.

Writes round stochastically: ``bits(x) + n`` truncated to its high half, with ``n`` uniform in
``[0, 2^16)``, rounds ``|x|`` up with probability equal to the dropped fraction, so an update
smaller than half a bfloat16 step still moves the weight on average (round-to-nearest would
drop it every time). ``n`` is a hash of ``(key, column)``, the key a hash of ``(table seed,
step, row)`` (:func:`~terarec.embedding._hashing.rounding_key`): the same run writes the
same bits. The conversions are LLVM intrinsics on 32-bit integers, so they vectorise (a
64-bit multiply would not on AVX2).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

__all__ = ["bf16_to_float32", "float32_to_bf16", "load_value", "store_nearest", "store_value"]

_I16, _I32 = ir.IntType(16), ir.IntType(32)


@intrinsic
def _bf16_bits_to_float(typingctx, bits):  # type: ignore[no-untyped-def]
    """``float32`` whose high half is ``bits`` (a ``uint16``) and low half zero: exact."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        wide = builder.shl(builder.zext(args[0], _I32), _I32(16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(types.uint16), codegen


def _mix32(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """MurmurHash3's 32-bit finaliser: a bijection whose every output bit depends on every input bit."""
    x = builder.xor(x, builder.lshr(x, _I32(16)))
    x = builder.mul(x, _I32(0x85EBCA6B))
    x = builder.xor(x, builder.lshr(x, _I32(13)))
    x = builder.mul(x, _I32(0xC2B2AE35))
    return builder.xor(x, builder.lshr(x, _I32(16)))


@intrinsic
def _float_to_bf16_stochastic(typingctx, value, key, column):  # type: ignore[no-untyped-def]
    """``value`` rounded to bfloat16 bits, up with probability equal to the dropped fraction,
    the noise being the high 16 bits of ``mix32(low32(key) + column * golden)``."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        value_bits = builder.bitcast(args[0], _I32)
        salted = builder.add(builder.trunc(args[1], _I32), builder.mul(builder.trunc(args[2], _I32), _I32(0x9E3779B9)))
        noise = builder.lshr(_mix32(builder, salted), _I32(16))
        return builder.trunc(builder.lshr(builder.add(value_bits, noise), _I32(16)), _I16)

    return types.uint16(types.float32, types.uint64, types.intp), codegen


@intrinsic
def _float_to_bf16_nearest(typingctx, value):  # type: ignore[no-untyped-def]
    """``value`` rounded to the nearest bfloat16, ties to even, as :func:`float32_to_bf16`
    (NaN aside: the kernels compile without NaN care)."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        bits = builder.bitcast(args[0], _I32)
        odd = builder.and_(builder.lshr(bits, _I32(16)), _I32(1))
        rounded = builder.add(builder.add(bits, _I32(0x7FFF)), odd)
        return builder.trunc(builder.lshr(rounded, _I32(16)), _I16)

    return types.uint16(types.float32), codegen


def load_value(array, i, j):  # type: ignore[no-untyped-def]
    """``array[i, j]`` as ``float32``, for a ``float32`` or bfloat16 (``uint16``) array."""
    raise NotImplementedError("compiled by numba only")


def store_value(array, i, j, value, key):  # type: ignore[no-untyped-def]
    """``array[i, j] = value``, rounded stochastically with ``key``
    (:func:`~terarec.embedding._hashing.rounding_key`) when ``array`` holds bfloat16; for
    ``float32`` the key is unused and its hash compiled away."""
    raise NotImplementedError("compiled by numba only")


def store_nearest(array, i, j, value):  # type: ignore[no-untyped-def]
    """``array[i, j] = value``, rounded to nearest (ties to even) when ``array`` holds bfloat16:
    for initial values, which must not depend on a step."""
    raise NotImplementedError("compiled by numba only")


@overload(load_value, inline="always")
def _load_value(array, i, j):  # type: ignore[no-untyped-def]
    if array.dtype == types.uint16:
        return lambda array, i, j: _bf16_bits_to_float(array[i, j])
    return lambda array, i, j: array[i, j]


@overload(store_value, inline="always")
def _store_value(array, i, j, value, key):  # type: ignore[no-untyped-def]
    if array.dtype == types.uint16:

        def store_bf16(array, i, j, value, key):  # type: ignore[no-untyped-def]
            array[i, j] = _float_to_bf16_stochastic(np.float32(value), key, j)

        return store_bf16

    def store_float(array, i, j, value, key):  # type: ignore[no-untyped-def]
        array[i, j] = value

    return store_float


@overload(store_nearest, inline="always")
def _store_nearest(array, i, j, value):  # type: ignore[no-untyped-def]
    if array.dtype == types.uint16:

        def store_bf16(array, i, j, value):  # type: ignore[no-untyped-def]
            array[i, j] = _float_to_bf16_nearest(np.float32(value))

        return store_bf16

    def store_float(array, i, j, value):  # type: ignore[no-untyped-def]
        array[i, j] = value

    return store_float


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """bfloat16 bits (``uint16``) of ``float32`` ``values``, rounded to nearest, ties to even
    (for initial values and imports, which have no step to draw noise from); NaN stays NaN.

    Example::

        >>> float32_to_bf16(np.array([1.0, -2.5, 1.0 + 2**-8], dtype=np.float32)).tolist()
        [16256, 49184, 16256]
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet_nan = (bits >> np.uint32(16)) | np.uint32(0x40)
    return np.where(np.isnan(values), quiet_nan, rounded).astype(np.uint16)


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """``float32`` values of bfloat16 ``bits`` (exact).

    Example::

        >>> bf16_to_float32(np.array([16256, 49184], dtype=np.uint16)).tolist()
        [1.0, -2.5]
    """
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
