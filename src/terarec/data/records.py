"""Examples given as records (feature name → value), as a scoring request sends them.

A record's values become model inputs exactly as the readers turn a file's columns into them:
a dense value is a number (``null`` or absent: missing, ``0``) passed through
``data.dense_transform``; a sparse value is one categorical value or a list of them (a bag),
each hashed as its text (:mod:`terarec.data.hashing`: an integer as its decimal digits, so
``123`` and ``"123"`` are one ID); ``null`` or absent is the missing value, the ID of the empty
string, or an empty bag for the features named ``empty_when_missing`` (a retrieval model's
``history``). The derived features of ``data.bucketize`` and ``data.crosses`` follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data import _convert
from terarec.data.config import DataConfig
from terarec.data.derived import derive_features, derived_feature_names
from terarec.data.hashing import hash_strings
from terarec.data.types import ColumnarData, JaggedColumn, Schema
from terarec.errors import DataError

__all__ = ["RecordError", "read_features", "records_to_data"]


class RecordError(DataError):
    """A record's value that cannot be read.

    Attributes:
        row (int | None): the record's position (``None``: every record).
        feature (str): the feature.
    """

    def __init__(self, row: int | None, feature: str, message: str) -> None:
        super().__init__(message)
        self.row, self.feature = row, feature


def read_features(schema: Schema, config: DataConfig) -> tuple[str, ...]:
    """The features a record may carry: ``schema``'s dense and sparse features, less the derived ones."""
    derived = set(derived_feature_names(config))
    return (*schema.dense_features, *(name for name in schema.sparse_features if name not in derived))


def _text(value: object, row: int, feature: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(row, feature, f"expected a categorical value (a string or an integer) or a list of them, got {value!r}")
    if isinstance(value, float):
        if not np.isfinite(value):
            raise RecordError(row, feature, f"expected a finite number, got {value!r}")
        return pa.scalar(value).cast(pa.string()).as_py()  # as a Parquet float column is hashed
    return str(value)


def _arrow_column(values: list[object], text: bool) -> pa.Array | None:
    """``values`` as one Arrow array of integers, finite floats or (with ``text``) strings,
    nulls allowed: the common case, converted without a Python loop; else ``None``, and the
    caller reads them one by one."""
    if any(type(value) is bool for value in values):  # Arrow would read True as 1.0 beside floats
        return None
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    kind = array.type
    if not (pa.types.is_int64(kind) or pa.types.is_float64(kind) or pa.types.is_null(kind) or (text and pa.types.is_string(kind))):
        return None
    if pa.types.is_float64(kind) and pc.all(pc.is_finite(array.drop_null())).as_py() is False:
        return None
    return array


def _sparse_column(records: Sequence[Mapping[str, object]], name: str, empty: bool) -> JaggedColumn:
    values = [record.get(name) for record in records]
    if not empty or None not in values:
        array = _arrow_column(values, text=True)
        if array is not None:
            return JaggedColumn(hash_strings(array), np.arange(len(values) + 1, dtype=np.int64))
    texts: list[str | None] = []
    lengths = np.empty(len(records), np.int64)
    for row, value in enumerate(values):
        if value is None:
            lengths[row] = 0 if empty else 1
            if not empty:
                texts.append(None)
        elif isinstance(value, (list, tuple)):
            lengths[row] = len(value)
            texts.extend(None if item is None else _text(item, row, name) for item in value)
        else:
            lengths[row] = 1
            texts.append(_text(value, row, name))
    offsets = np.zeros(len(records) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = hash_strings(pa.array(texts, pa.string())) if texts else np.empty(0, np.int64)
    return JaggedColumn(values, offsets)


def records_to_data(
    records: Sequence[Mapping[str, object]],
    schema: Schema,
    config: DataConfig,
    empty_when_missing: Sequence[str] = (),
    source: str = "records",
) -> ColumnarData:
    """The examples of ``records`` for a model trained on ``schema`` (its derived features
    included) read with ``config`` (see the module docstring); labels are zeros.

    Raises:
        RecordError: for a feature the model does not have, or a value of the wrong kind,
            naming the record and the feature.

    Example::

        >>> schema = Schema("label", ("price",), ("user", "tags"))
        >>> data = records_to_data([{"price": 9.0, "user": 7, "tags": ["a", "b"]}, {"user": "7"}], schema, DataConfig())
        >>> [round(float(v), 3) for v in data.dense[:, 0]], data.sparse["tags"].offsets.tolist()
        ([2.303, 0.0], [0, 2, 3])
        >>> bool(data.sparse["user"].values[0] == data.sparse["user"].values[1])
        True
        >>> records_to_data([{"colour": "red"}], schema, DataConfig())
        Traceback (most recent call last):
        ...
        terarec.data.records.RecordError: unknown feature 'colour'; the model's features are price, user, tags
    """
    known = read_features(schema, config)
    allowed = set(known)
    for row, record in enumerate(records):
        for name in record:
            if name not in allowed:
                raise RecordError(row, name, f"unknown feature {name!r}; the model's features are {', '.join(known)}")
    n = len(records)
    raw = np.zeros((n, schema.num_dense), np.float64)
    for j, name in enumerate(schema.dense_features):
        values = [record.get(name) for record in records]
        column = _arrow_column(values, text=False)
        if column is not None:
            raw[:, j] = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
            continue
        for row, value in enumerate(values):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value)):
                raise RecordError(row, name, f"expected a finite number, got {value!r}")
        raw[:, j] = [0.0 if value is None else value for value in values]
    dense = np.ascontiguousarray(_convert.apply_dense_transform(raw, config.dense_transform))
    empty = set(empty_when_missing)
    read = [name for name in known if name not in schema.dense_features]
    sparse = {name: _sparse_column(records, name, name in empty) for name in read}
    for name in dict.fromkeys(f for features in config.crosses for f in features):
        lengths = np.diff(sparse[name].offsets) if name in sparse else np.ones(0)
        if (lengths != 1).any():
            row = int(np.argmax(lengths != 1))
            raise RecordError(row, name, f"feature {name!r} is crossed with others (data.crosses) and takes one value, "
                                         f"got {int(lengths[row])}")
    read_schema = Schema(schema.label, schema.dense_features, tuple(read))
    data = ColumnarData(read_schema, np.zeros(n, np.float32), dense, sparse, source=source)
    return derive_features(data, config)
