"""ID → row mapping, the first stage of every table.

A :class:`RowMapper` turns raw 64-bit IDs into row indices in ``[0, num_embeddings)``;
everything after it (storage, pooling, optimizers) sees rows only. :class:`HashedRowMapper`
is the stateless one used by fixed tables; a collisionless map with admission and eviction
(dynamic tables) implements the same interface and persists its state in ``save``/``load``.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from terarec.embedding import _kernels
from terarec.embedding.types import MemoryEstimate

__all__ = ["HashedRowMapper", "RowMapper"]


class RowMapper(abc.ABC):
    """Maps raw IDs to table rows.

    Shape:
        - ids: :math:`(N)` ``int64`` raw IDs (the full 64-bit range)
        - output: :math:`(N)` ``int64`` rows in ``[0, R)``
    """

    num_embeddings: int

    @abc.abstractmethod
    def map(self, ids: np.ndarray) -> np.ndarray:
        """Row of each ID; ``ids`` is a C-contiguous ``int64`` array (validated by the table)."""

    @abc.abstractmethod
    def memory_estimate(self) -> MemoryEstimate:
        """Bytes the mapping itself holds (zero for a hash)."""

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Writes the mapping's state into ``directory``."""

    @abc.abstractmethod
    def load(self, directory: Path) -> None:
        """Restores what :meth:`save` wrote."""


class HashedRowMapper(RowMapper):
    """Stable, seedless hashing of IDs into a fixed row range.

    ``row = splitmix64(uint64(id)) % num_embeddings``, where ``splitmix64(x)`` is SplitMix64's
    finaliser applied to ``x + 0x9E3779B97F4A7C15``. The same ID gives the same row on every
    machine, process and run; distinct IDs may collide (choose a dynamic table to avoid that).

    Args:
        num_embeddings (int): rows ``R`` to hash into.

    Example::

        >>> mapper = HashedRowMapper(1000)
        >>> rows = mapper.map(np.array([7, 7, -1, 2**63 - 1], dtype=np.int64))
        >>> bool(rows[0] == rows[1]), bool(((rows >= 0) & (rows < 1000)).all())
        (True, True)
    """

    def __init__(self, num_embeddings: int) -> None:
        if num_embeddings < 1:
            raise ValueError(f"num_embeddings must be >= 1, got {num_embeddings}")
        self.num_embeddings = int(num_embeddings)

    def map(self, ids: np.ndarray) -> np.ndarray:
        rows = np.empty(ids.shape[0], dtype=np.int64)
        _kernels.hash_to_rows(ids, self.num_embeddings, rows)
        return rows

    def memory_estimate(self) -> MemoryEstimate:
        return MemoryEstimate(ram_bytes=0, disk_bytes=0)

    def save(self, directory: Path) -> None:
        """Nothing to write: the hash is stateless (the table records ``num_embeddings``)."""

    def load(self, directory: Path) -> None:
        """Nothing to read: the hash is stateless."""

    def __repr__(self) -> str:
        return f"HashedRowMapper(num_embeddings={self.num_embeddings})"
