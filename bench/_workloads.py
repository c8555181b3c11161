"""Embedding-layer workloads shared by the benchmark scripts.

A workload is a set of tables (one per feature), bag sizes, an embedding dim and an ID
distribution. Batches are generated once, before timing, and every system under test
consumes the same batches and the same upstream gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from terarec.data.config import CRITEO_1TB_CARDINALITIES

# MLPerf DLRM-DCNv2 multi-hot sizes for the 26 Criteo features (214 IDs per example).
MULTIHOT_BAG_SIZES = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)
ZIPF_EXPONENT = 1.05


@dataclass(frozen=True)
class Workload:
    """``name`` is ``multihot`` or ``onehot``; one table per feature, ``C1..C26``."""

    name: str
    embedding_dim: int
    bag_sizes: tuple[int, ...]
    num_embeddings: tuple[int, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"C{i + 1}" for i in range(len(self.bag_sizes)))

    @property
    def ids_per_example(self) -> int:
        return sum(self.bag_sizes)

    @property
    def num_parameters(self) -> int:
        return sum(self.num_embeddings) * self.embedding_dim


def make_workload(name: str, max_rows: int) -> Workload:
    rows = tuple(min(card, max_rows) for card in CRITEO_1TB_CARDINALITIES)
    if name == "multihot":
        return Workload(name, 128, MULTIHOT_BAG_SIZES, rows)
    if name == "onehot":
        return Workload(name, 64, (1,) * 26, rows)
    raise ValueError(f"unknown workload {name!r}: expected multihot or onehot")


@dataclass(frozen=True)
class BenchBatch:
    """One batch: per feature ``(values, offsets)`` int64 tensors (IDs already in ``[0, rows)``),
    and the upstream gradient of the pooled output, :math:`(B, F \\cdot D)` float32."""

    features: dict[str, tuple[torch.Tensor, torch.Tensor]]
    grad: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.grad.shape[0])


def _draw_ids(rng: np.random.Generator, rows: int, size: int, distribution: str) -> np.ndarray:
    if distribution == "uniform":
        return rng.integers(0, rows, size, dtype=np.int64)
    if distribution == "zipf":
        cdf = np.cumsum(np.arange(1, rows + 1, dtype=np.float64) ** -ZIPF_EXPONENT)
        ranks = np.searchsorted(cdf / cdf[-1], rng.random(size), side="right")
        # Hot IDs scattered over the table, as hashing would place them.
        return rng.permutation(rows)[np.minimum(ranks, rows - 1)].astype(np.int64)
    raise ValueError(f"unknown distribution {distribution!r}: expected zipf or uniform")


def make_batches(workload: Workload, distribution: str, batch_size: int, count: int, seed: int = 0) -> list[BenchBatch]:
    """``count`` batches of fixed-size bags; IDs drawn per feature from ``distribution``."""
    rng = np.random.default_rng(seed)
    batches = []
    width = len(workload.bag_sizes) * workload.embedding_dim
    for _ in range(count):
        features = {}
        for name, bag, rows in zip(workload.feature_names, workload.bag_sizes, workload.num_embeddings):
            values = _draw_ids(rng, rows, batch_size * bag, distribution)
            offsets = np.arange(batch_size + 1, dtype=np.int64) * bag
            features[name] = (torch.from_numpy(values), torch.from_numpy(offsets))
        grad = torch.from_numpy(rng.standard_normal((batch_size, width), dtype=np.float32) * np.float32(1e-3))
        batches.append(BenchBatch(features, grad))
    return batches


def unique_rows_per_example(workload: Workload, batches: list[BenchBatch]) -> float:
    """Distinct (table, row) pairs a batch touches, per example, averaged over ``batches``."""
    total = 0
    for batch in batches:
        total += sum(int(np.unique(values.numpy()).size) for values, _ in batch.features.values())
    return total / sum(batch.batch_size for batch in batches)
