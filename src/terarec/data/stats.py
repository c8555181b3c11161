"""Dataset statistics: row count, click rate and per-feature distinct-ID estimates.

Distinct IDs are estimated with a HyperLogLog sketch (precision ``p = 14``, 16384 one-byte
registers per feature, relative standard error :math:`1.04 / \\sqrt{2^{14}} \\approx 0.8\\%`),
which merges block by block, so :func:`terarec.data.prepare` computes stats while streaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from terarec.data import _kernels
from terarec.data.types import ColumnarData

__all__ = ["HLL_PRECISION", "DatasetStats", "StatsAccumulator", "compute_stats", "estimate_distinct"]

HLL_PRECISION = 14


def _hll_estimate(registers: np.ndarray) -> int:
    m = registers.shape[0]
    alpha = 0.7213 / (1.0 + 1.079 / m)
    raw = alpha * m * m / float(np.sum(np.ldexp(1.0, -registers.astype(np.int64))))
    zeros = int(np.count_nonzero(registers == 0))
    if raw <= 2.5 * m and zeros:
        return int(round(m * math.log(m / zeros)))  # linear counting for small cardinalities
    return int(round(raw))


def estimate_distinct(values: np.ndarray) -> int:
    """Estimates the number of distinct ``int64`` IDs in ``values`` with HyperLogLog (``p = 14``).

    Args:
        values (np.ndarray): ``int64`` IDs.

    Shape:
        - values: :math:`(N)`

    Example::

        >>> abs(estimate_distinct(np.arange(1000, dtype=np.int64) % 300) - 300) <= 3
        True
    """
    registers = np.zeros(1 << HLL_PRECISION, dtype=np.uint8)
    values = np.ascontiguousarray(values, dtype=np.int64)
    _kernels.hll_update(values.view(np.uint64), HLL_PRECISION, registers)
    return _hll_estimate(registers)


@dataclass(frozen=True)
class DatasetStats:
    """Summary statistics of a dataset, saved as ``stats.json`` beside prepared data.

    Args:
        num_rows (int): examples.
        label_mean (float): fraction of positive labels (the click rate).
        distinct_ids (dict[str, int]): per sparse feature, the estimated number of distinct IDs
            (HyperLogLog, about 1% relative error), a good ``num_embeddings`` for hashed tables.
        skipped_rows (int, optional): malformed rows skipped while reading. Default: ``0``

    Example::

        >>> stats = DatasetStats(num_rows=4, label_mean=0.25, distinct_ids={"C1": 3})
        >>> DatasetStats.from_dict(stats.to_dict()) == stats
        True
    """

    num_rows: int
    label_mean: float
    distinct_ids: dict[str, int]
    skipped_rows: int = 0

    @property
    def rows(self) -> int:
        """Alias of ``num_rows``."""
        return self.num_rows

    def to_dict(self) -> dict[str, object]:
        return {"num_rows": self.num_rows, "label_mean": self.label_mean,
                "distinct_ids": dict(self.distinct_ids), "skipped_rows": self.skipped_rows}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> DatasetStats:
        distinct = raw["distinct_ids"]
        if not isinstance(distinct, dict):
            raise ValueError(f"DatasetStats.from_dict: distinct_ids must be a mapping, got {distinct!r}")
        return cls(int(raw["num_rows"]), float(raw["label_mean"]),  # type: ignore[arg-type]
                   {str(k): int(v) for k, v in distinct.items()}, int(raw.get("skipped_rows", 0)))  # type: ignore[arg-type]


class StatsAccumulator:
    """Builds :class:`DatasetStats` from a stream of :class:`ColumnarData` blocks.

    Args:
        feature_names (tuple[str, ...]): the sparse features to sketch.
    """

    def __init__(self, feature_names: tuple[str, ...]) -> None:
        self.feature_names = feature_names
        self._registers = np.zeros((len(feature_names), 1 << HLL_PRECISION), dtype=np.uint8)
        self._rows = 0
        self._positives = 0.0
        self._skipped = 0

    def update(self, block: ColumnarData) -> None:
        """Adds one block's rows."""
        self._rows += block.num_rows
        self._positives += float(np.sum(block.labels, dtype=np.float64))
        self._skipped += block.skipped_rows
        for i, name in enumerate(self.feature_names):
            values = np.ascontiguousarray(block.sparse[name].values, dtype=np.int64)
            _kernels.hll_update(values.view(np.uint64), HLL_PRECISION, self._registers[i])

    def result(self) -> DatasetStats:
        """The statistics of every block added so far."""
        mean = self._positives / self._rows if self._rows else 0.0
        distinct = {name: _hll_estimate(self._registers[i]) for i, name in enumerate(self.feature_names)}
        return DatasetStats(self._rows, mean, distinct, self._skipped)


def compute_stats(data: ColumnarData) -> DatasetStats:
    """Computes :class:`DatasetStats` of a dataset (in RAM or memory-mapped) in one pass.

    Args:
        data (ColumnarData): the dataset.

    Example::

        >>> from terarec.data import SyntheticConfig, generate_synthetic
        >>> ds = generate_synthetic(SyntheticConfig(num_examples=2000, num_eval_examples=10, num_sparse=2))
        >>> stats = compute_stats(ds.train)
        >>> stats.num_rows, sorted(stats.distinct_ids)
        (2000, ['C1', 'C2'])
    """
    acc = StatsAccumulator(data.schema.sparse_features)
    acc.update(data)
    return acc.result()
