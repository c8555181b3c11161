"""The data layer's types: formats, options, the schema, columnar datasets and batches.

A dataset, whether read from raw text, memory-mapped from a prepared directory or
generated, is one :class:`ColumnarData`: a label column, a dense float matrix and, per
sparse feature, a jagged column of 64-bit IDs. Training reads it as :class:`Batch` es.

Raw categorical values become 64-bit IDs here (see :mod:`terarec.data.hashing`); tables
map those IDs to rows, so a dynamic table can later see the raw ID space unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import torch

from terarec.sparse import JaggedTensor

__all__ = [
    "BadRowPolicy",
    "Batch",
    "ColumnarData",
    "DataFormat",
    "DenseTransform",
    "JaggedColumn",
    "Schema",
]


class DataFormat(enum.Enum):
    """Input file formats. ``PREPARED`` is terarec's own memory-mapped layout (``terarec prepare``);
    ``INTERACTIONS`` is a log of user-item events for retrieval (:mod:`terarec.data.interactions`)."""

    CRITEO = "criteo"
    CSV = "csv"
    INTERACTIONS = "interactions"
    LIBFM = "libfm"
    PARQUET = "parquet"
    PREPARED = "prepared"


class BadRowPolicy(enum.Enum):
    """What a reader does with a malformed row: stop with an error naming it, or skip and count it."""

    ERROR = "error"
    SKIP = "skip"


class DenseTransform(enum.Enum):
    """How raw dense values become model inputs.

    ``SIGNED_LOG1P`` maps ``x`` to ``sign(x) * log(1 + |x|)`` (counts in click logs span many
    orders of magnitude); ``NONE`` passes values through. Missing values become ``0`` either way.
    """

    SIGNED_LOG1P = "signed_log1p"
    NONE = "none"


@dataclass(frozen=True)
class Schema:
    """Which columns are the label, the dense features and the sparse features.

    Args:
        label (str): the label column (values 0 or 1).
        dense_features (tuple[str, ...]): dense (float) columns, in model input order.
        sparse_features (tuple[str, ...]): sparse (categorical ID) columns, in model input order.

    Example::

        >>> Schema("label", ("I1",), ("C1", "C2")).num_sparse
        2
    """

    label: str
    dense_features: tuple[str, ...]
    sparse_features: tuple[str, ...]

    @property
    def num_dense(self) -> int:
        return len(self.dense_features)

    @property
    def num_sparse(self) -> int:
        return len(self.sparse_features)

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "dense_features": list(self.dense_features),
            "sparse_features": list(self.sparse_features),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> Schema:
        return cls(str(raw["label"]), tuple(raw["dense_features"]), tuple(raw["sparse_features"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class JaggedColumn:
    """One sparse feature over a whole dataset, as NumPy arrays in CSR form.

    The NumPy twin of :class:`terarec.sparse.JaggedTensor`, so that columns can be memory-mapped.

    Shape:
        - values: :math:`(N)` ``int64`` IDs
        - offsets: :math:`(R + 1)` ``int64``, ``R`` rows
        - weights: :math:`(N)` ``float32``, each ID's value (libFM's ``idx:val``), or ``None``
          when every value is 1
    """

    values: np.ndarray
    offsets: np.ndarray
    weights: np.ndarray | None = None

    def weights_or_ones(self) -> np.ndarray:
        """``weights``, or ones where the column has none."""
        return np.ones(len(self.values), np.float32) if self.weights is None else np.asarray(self.weights)


@dataclass
class ColumnarData:
    """A dataset (or one split of it) held column by column, in RAM or memory-mapped.

    Args:
        schema (Schema): the column roles.
        labels (np.ndarray): ``float32`` labels, 0 or 1.
        dense (np.ndarray): ``float32`` dense features after the dense transform.
        sparse (dict[str, JaggedColumn]): one jagged ``int64`` ID column per sparse feature.
        skipped_rows (int, optional): malformed rows skipped while reading. Default: ``0``
        source (str, optional): where the rows came from, for messages. Default: ``""``
        groups (np.ndarray, optional): learning to rank: each row's query (group) ID, a group's
            rows contiguous (:mod:`terarec.data.groups`); ``None`` otherwise. Default: ``None``

    Shape:
        - labels: :math:`(R)`
        - dense: :math:`(R, D_{dense})`
        - sparse[f].offsets: :math:`(R + 1)`
    """

    schema: Schema
    labels: np.ndarray
    dense: np.ndarray
    sparse: dict[str, JaggedColumn]
    skipped_rows: int = 0
    source: str = field(default="")
    groups: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return int(self.labels.shape[0])

    def slice_rows(self, start: int, stop: int) -> ColumnarData:
        """Rows ``start:stop`` (clipped like a Python slice); labels, dense and IDs are views, offsets rebased copies."""
        start, stop, _ = slice(start, stop).indices(self.num_rows)
        stop = max(start, stop)
        sparse = {}
        for name, col in self.sparse.items():
            offsets = np.asarray(col.offsets[start:stop + 1], dtype=np.int64)
            ids = slice(int(offsets[0]), int(offsets[-1]))
            weights = None if col.weights is None else col.weights[ids]
            sparse[name] = JaggedColumn(col.values[ids], offsets - offsets[0], weights)
        groups = None if self.groups is None else self.groups[start:stop]
        return ColumnarData(self.schema, self.labels[start:stop], self.dense[start:stop], sparse,
                            skipped_rows=0, source=self.source, groups=groups)

    @classmethod
    def concat(cls, parts: list[ColumnarData]) -> ColumnarData:
        """Concatenates datasets with one schema, row after row, into RAM; ``skipped_rows`` add up."""
        if not parts:
            raise ValueError("ColumnarData.concat: parts must not be empty")
        if len(parts) == 1:
            return parts[0]
        schema = parts[0].schema
        for part in parts[1:]:
            if part.schema != schema:
                raise ValueError(f"ColumnarData.concat: schemas differ: {schema} vs {part.schema}")
            if (part.groups is None) != (parts[0].groups is None):
                raise ValueError("ColumnarData.concat: some parts have groups and some do not")
        sparse = {}
        for name in schema.sparse_features:
            cols = [p.sparse[name] for p in parts]
            lengths = np.concatenate([np.diff(np.asarray(c.offsets)) for c in cols])
            offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            weights = None
            if any(c.weights is not None for c in cols):
                weights = np.concatenate([c.weights_or_ones() for c in cols])
            sparse[name] = JaggedColumn(np.concatenate([np.asarray(c.values) for c in cols]), offsets, weights)
        return cls(
            schema,
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.dense for p in parts]),
            sparse,
            skipped_rows=sum(p.skipped_rows for p in parts),
            source=",".join(dict.fromkeys(p.source for p in parts if p.source)),
            groups=None if parts[0].groups is None else np.concatenate([p.groups for p in parts]),
        )


@dataclass(frozen=True)
class Batch:
    """One training or evaluation batch, as tensors.

    Args:
        labels (Tensor): ``float32`` click labels (graded relevance when ranking).
        dense (Tensor): ``float32`` dense features.
        sparse (dict[str, JaggedTensor]): per sparse feature, its bags of 64-bit IDs.
        groups (Tensor, optional): learning to rank: each row's group within the batch,
            ``0 .. G - 1`` in row order; ``None`` otherwise. Default: ``None``

    Shape:
        - labels, groups: :math:`(B)`
        - dense: :math:`(B, D_{dense})`
        - sparse[f]: ``offsets`` :math:`(B + 1)`
    """

    labels: torch.Tensor
    dense: torch.Tensor
    sparse: dict[str, JaggedTensor]
    groups: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])
