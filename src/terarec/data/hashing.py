"""Stable 64-bit IDs for categorical values.

Every categorical value becomes one 64-bit ID, the same on every machine, in every run and
in every format, with no seed and no vocabulary to store. The ID of a value is computed as:

1. Take its *canonical string*: a string as is; an integer or float as Arrow's cast to
   ``string`` writes it (``123`` in a Parquet ``int64`` column gives ``"123"``, exactly like
   the text ``123`` in a CSV file); a missing value (null, or an empty CSV field) as the empty
   string ``""``. Missing values thus share one ID of their own: in click logs, that a value is
   missing is itself informative.
2. Encode it as UTF-8 and hash the bytes with 64-bit FNV-1a: start from the offset basis
   ``h = 0xcbf29ce484222325``; for each byte ``b``: ``h = (h XOR b) * 0x100000001b3 mod 2**64``.
3. Reinterpret the unsigned 64-bit result as a signed ``int64`` (two's complement).

So the missing value's ID is ``0xcbf29ce484222325`` as ``int64``, ``-3750763034362895579``.
Any language reproduces these IDs in a few lines; :func:`hash_string` is the reference.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data import _kernels

__all__ = ["MISSING_ID", "hash_string", "hash_strings"]

_FNV_OFFSET_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def hash_string(value: str) -> int:
    """The 64-bit ID of one canonical string, in pure Python (the reference for :func:`hash_strings`).

    Args:
        value (str): the canonical string of a categorical value (``""`` for a missing one).

    Returns:
        int: the FNV-1a 64 hash of ``value.encode("utf-8")`` as a signed 64-bit integer.

    Example::

        >>> hash_string("")
        -3750763034362895579
        >>> hash_string("68fd1e64") == hash_string("68fd1e64")
        True
    """
    h = _FNV_OFFSET_BASIS
    for byte in value.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h - (1 << 64) if h >= 1 << 63 else h


MISSING_ID: int = hash_string("")
"""The ID of a missing (null or empty) categorical value."""


def _hash_chunk(array: pa.Array, out: np.ndarray) -> None:
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
            or pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)):
        try:
            array = pc.cast(array, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise TypeError(f"hash_strings: cannot cast Arrow type {array.type} to string: {exc}") from exc
    if len(array) == 0:
        return
    validity_buf, offsets_buf, data_buf = array.buffers()[:3]
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if wide else np.int32)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    if validity_buf is None or array.null_count == 0:
        validity = np.zeros(0, np.uint8)
    else:
        validity = np.frombuffer(validity_buf, dtype=np.uint8)
    _kernels.fnv1a_strings(data, offsets, validity, array.offset, out.view(np.uint64))


def hash_strings(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The 64-bit IDs of an Arrow array of categorical values, with a numba kernel.

    Works directly on the Arrow buffers (offsets, bytes and validity bitmap) of ``string``,
    ``large_string`` and binary arrays, including sliced and chunked ones; other types (integers,
    floats, dictionaries) are first cast to ``string`` with Arrow (see the module docstring).

    Args:
        array (pyarrow.Array or pyarrow.ChunkedArray): the values, one per row.

    Shape:
        - array: :math:`(N)`
        - output: :math:`(N)` ``int64``

    Raises:
        TypeError: if ``array`` is not an Arrow array or its type cannot be cast to string.

    Example::

        >>> import pyarrow as pa
        >>> ids = hash_strings(pa.array(["68fd1e64", None, ""]))
        >>> ids.dtype, int(ids[0]) == hash_string("68fd1e64"), int(ids[1]) == int(ids[2]) == MISSING_ID
        (dtype('int64'), True, True)
        >>> bool((hash_strings(pa.array([123])) == hash_strings(pa.array(["123"]))).all())
        True
    """
    if isinstance(array, pa.ChunkedArray):
        chunks = array.chunks
    elif isinstance(array, pa.Array):
        chunks = [array]
    else:
        raise TypeError(f"hash_strings: array must be a pyarrow Array or ChunkedArray, got {type(array).__name__}")
    out = np.empty(sum(len(c) for c in chunks), dtype=np.int64)
    start = 0
    for chunk in chunks:
        _hash_chunk(chunk, out[start:start + len(chunk)])
        start += len(chunk)
    return out
