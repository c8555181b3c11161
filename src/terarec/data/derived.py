"""Sparse features derived from others: bucketized dense features and crosses of categorical ones.

Both are pure functions of a row, with no state fitted on the training data, so the same rows
give the same IDs in training, validation, evaluation and ``terarec eval`` of a saved run:

- ``data.bucketize``: a dense feature ``I1`` also becomes the sparse feature ``I1_bucket`` whose ID
  is ``floor(value / data.bucket_width)`` of its transformed value (with the default signed
  ``log1p`` transform and width ``1``, buckets grow geometrically with the raw value, as the
  winners of Criteo's Kaggle challenge bucketed counts by ``log(x)^2``);
- ``data.crosses``: a list of features such as ``[C1, C2]`` becomes the sparse feature ``C1_x_C2``,
  one ID per row: a splitmix64 chain over the features' IDs, so every combination of values gets
  its own ID (up to 64-bit collisions). Crossed features must hold one ID per row.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from terarec.data import _kernels
from terarec.data.config import DataConfig
from terarec.data.types import ColumnarData, JaggedColumn
from terarec.errors import ConfigError

__all__ = ["BUCKET_SUFFIX", "CROSS_SEPARATOR", "derive_features", "derived_feature_names"]

BUCKET_SUFFIX = "_bucket"
CROSS_SEPARATOR = "_x_"
_CROSS_PRIME = np.uint64(0x100000001B3)  # FNV-64's prime: spreads one ID before the next joins


def derived_feature_names(config: DataConfig) -> tuple[str, ...]:
    """The sparse features ``config`` derives, in the order they follow the read ones.

    Example::

        >>> derived_feature_names(DataConfig(bucketize=("I1",), crosses=(("C1", "C2"),)))
        ('I1_bucket', 'C1_x_C2')
    """
    return (*(f"{name}{BUCKET_SUFFIX}" for name in config.bucketize), *(CROSS_SEPARATOR.join(c) for c in config.crosses))


def _one_per_row(offsets: np.ndarray) -> bool:
    return bool(np.array_equal(np.diff(offsets), np.ones(offsets.shape[0] - 1, dtype=offsets.dtype)))


def _bucket_ids(values: np.ndarray, width: float) -> np.ndarray:
    return np.floor(values.astype(np.float64) / width).astype(np.int64)


def _cross_ids(columns: list[np.ndarray]) -> np.ndarray:
    mixed = np.empty(columns[0].shape[0], dtype=np.uint64)
    _kernels.mix64(columns[0].astype(np.uint64), mixed)
    for ids in columns[1:]:
        with np.errstate(over="ignore"):
            joined = (mixed * _CROSS_PRIME) ^ ids.astype(np.uint64)
        _kernels.mix64(joined, mixed)
    return mixed.view(np.int64)


def derive_features(data: ColumnarData, config: DataConfig) -> ColumnarData:
    """``data`` with the sparse features ``config.bucketize`` and ``config.crosses`` describe
    appended (see the module docstring); the read columns are shared, not copied.

    Raises:
        ConfigError: naming the key when a feature to bucketize is not dense, one to cross is
            not sparse, or a crossed feature holds other than one ID per row.

    Example::

        >>> from terarec.data import Schema
        >>> data = ColumnarData(Schema("label", ("I1",), ("C1", "C2")), np.zeros(3, np.float32),
        ...                     np.array([[0.1], [2.6], [-0.3]], np.float32),
        ...                     {c: JaggedColumn(np.array([1, 2, 1]), np.arange(4)) for c in ("C1", "C2")})
        >>> derived = derive_features(data, DataConfig(bucketize=("I1",), crosses=(("C1", "C2"),)))
        >>> derived.schema.sparse_features, derived.sparse["I1_bucket"].values.tolist()
        (('C1', 'C2', 'I1_bucket', 'C1_x_C2'), [0, 2, -1])
        >>> crossed = derived.sparse["C1_x_C2"].values
        >>> bool(crossed[0] == crossed[2]), bool(crossed[0] == crossed[1])
        (True, False)
    """
    if not config.bucketize and not config.crosses:
        return data
    schema, rows = data.schema, np.arange(data.num_rows + 1, dtype=np.int64)
    sparse = dict(data.sparse)
    for index, name in enumerate(config.bucketize):
        if name not in schema.dense_features:
            raise ConfigError(f"data.bucketize[{index}]: {name!r} is not a dense feature; dense features are: "
                              f"{', '.join(schema.dense_features) or '(none)'}")
        column = data.dense[:, schema.dense_features.index(name)]
        sparse[f"{name}{BUCKET_SUFFIX}"] = JaggedColumn(_bucket_ids(column, config.bucket_width), rows)
    for index, features in enumerate(config.crosses):
        for name in features:
            if name not in schema.sparse_features:
                raise ConfigError(f"data.crosses[{index}]: {name!r} is not a sparse feature of {data.source or 'the data'}")
            if not _one_per_row(data.sparse[name].offsets):
                raise ConfigError(f"data.crosses[{index}]: {name!r} holds bags of several IDs (or none) in some rows; "
                                  f"crosses take features with one ID per row")
        sparse[CROSS_SEPARATOR.join(features)] = JaggedColumn(_cross_ids([data.sparse[f].values for f in features]), rows)
    derived = replace(schema, sparse_features=(*schema.sparse_features, *derived_feature_names(config)))
    return ColumnarData(derived, data.labels, data.dense, sparse, skipped_rows=data.skipped_rows, source=data.source)
