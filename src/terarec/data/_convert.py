"""Vectorised conversion of Arrow columns into terarec's NumPy columns, locating bad values.

Converters return the converted values and a boolean mask of rows whose value is bad (the
reader turns the first bad row into a ``file:line:column`` error, or skips the bad rows).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data.hashing import MISSING_ID, hash_strings
from terarec.data.types import DenseTransform, JaggedColumn

# Finite decimal numbers as Arrow's string -> float cast accepts them.
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def apply_dense_transform(values: np.ndarray, transform: DenseTransform) -> np.ndarray:
    """``float32`` model inputs from raw ``float64`` dense values."""
    if transform is DenseTransform.SIGNED_LOG1P:
        values = np.sign(values) * np.log1p(np.abs(values))
    return values.astype(np.float32)


def _as_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def to_float(column: pa.Array | pa.ChunkedArray, missing_is_bad: bool) -> tuple[np.ndarray, np.ndarray]:
    """``float64`` values and a bad-value mask; missing values (null or ``""``) are 0 unless ``missing_is_bad``."""
    column = _as_array(column)
    n = len(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        missing = pc.fill_null(pc.equal(column, ""), True)
        number = pc.fill_null(pc.match_substring_regex(column, _NUMBER), False)
        good = pc.and_not(number, missing)
        text = pc.if_else(good, column, "0")
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        missing_np = missing.to_numpy(zero_copy_only=False)
        bad = ~good.to_numpy(zero_copy_only=False) & ~missing_np
    elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
        missing_np = column.is_null().to_numpy(zero_copy_only=False)
        values = pc.cast(pc.fill_null(column, 0), pa.float64()).to_numpy(zero_copy_only=False)
        bad = np.zeros(n, dtype=bool)
    else:
        raise TypeError(f"cannot read Arrow type {column.type} as numbers")
    bad |= ~np.isfinite(values)
    if missing_is_bad:
        bad |= missing_np
    values = np.where(bad | missing_np, 0.0, values)
    return values, bad


def to_labels(
    column: pa.Array | pa.ChunkedArray, threshold: float | None = None, graded: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``float32`` labels and a mask of rows whose label is missing or not 0/1 (with a
    ``threshold``: missing or not a finite number; the label is then ``value >= threshold``;
    ``graded``: missing, not a finite number or negative, a relevance grade kept as it is)."""
    values, bad = to_float(column, missing_is_bad=True)
    if threshold is not None:
        return np.where(bad, 0.0, values >= threshold).astype(np.float32), bad
    bad |= (values < 0.0) if graded else ((values != 0.0) & (values != 1.0))
    return np.where(bad, 0.0, values).astype(np.float32), bad


def to_jagged(column: pa.Array | pa.ChunkedArray) -> JaggedColumn:
    """IDs of a categorical column: one per row for scalars, one bag per row for list columns.

    A null list becomes a bag holding :data:`MISSING_ID`; an empty list an empty bag.
    """
    column = _as_array(column)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    n = len(column)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        return JaggedColumn(hash_strings(column), np.arange(n + 1, dtype=np.int64))
    flat = hash_strings(column.flatten())
    src_lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    is_null = column.is_null().to_numpy(zero_copy_only=False)
    lengths = src_lengths + is_null
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.full(int(offsets[-1]), MISSING_ID, dtype=np.int64)
    # Each flat ID goes to its row's start in the output plus its position inside the bag.
    src_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(src_lengths, out=src_offsets[1:])
    rows = np.repeat(np.arange(n, dtype=np.int64), src_lengths)
    dest = offsets[rows] + (np.arange(flat.shape[0], dtype=np.int64) - src_offsets[rows])
    values[dest] = flat
    return JaggedColumn(values, offsets)


def text_of(column: pa.Array | pa.ChunkedArray, row: int) -> str:
    """The raw value of one row, for error messages."""
    value = column[row].as_py()
    return "" if value is None else str(value)
