"""ID → row mapping, the first stage of every table.

A :class:`RowMapper` turns raw 64-bit IDs into row indices in ``[0, num_embeddings)``;
everything after it (storage, pooling, optimizers) sees rows only. :class:`HashedRowMapper`
is the stateless one used by fixed tables; a collisionless map with admission and eviction
(:class:`~terarec.embedding.dynamic.DynamicRowMapper`) implements the same interface and
persists its state in ``save``/``load``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terarec.embedding import _hashing
from terarec.embedding.memory import MemoryEstimate

__all__ = ["HashedRowMapper", "RowMapper", "RowMapping"]

_NO_ROWS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class RowMapping:
    """What :meth:`RowMapper.map` found for a batch of IDs.

    Shape:
        - rows: :math:`(N)` ``int64``, the row of each ID, or ``-1`` where the ID has none (not
          admitted yet, or unknown outside training): it reads as zeros and is not updated
        - new_rows: :math:`(M)` rows this call created (or took over from evicted IDs); their
          weights and optimizer state must be initialised before they are read
        - new_ids: :math:`(M)` the ID each new row now holds
    """

    rows: np.ndarray
    new_rows: np.ndarray = field(default_factory=lambda: _NO_ROWS)
    new_ids: np.ndarray = field(default_factory=lambda: _NO_ROWS)


class RowMapper(abc.ABC):
    """Maps raw IDs to table rows.

    Calls come in batch order. A stateful mapper may create and evict rows while
    ``training``, but never evicts or reassigns a row returned by the previous call: that
    batch may still be training while the next one is prepared.

    Shape:
        - ids: :math:`(N)` ``int64`` raw IDs (the full 64-bit range)
        - output rows: :math:`(N)` ``int64`` in ``[0, R)``, or ``-1``
    """

    num_embeddings: int

    @abc.abstractmethod
    def map(self, ids: np.ndarray, training: bool = True) -> RowMapping:
        """Row of each ID; ``ids`` is a C-contiguous ``int64`` array (validated by the table).
        With ``training=False`` the mapper only reads: no counting, admission or eviction."""

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
        >>> rows = mapper.map(np.array([7, 7, -1, 2**63 - 1], dtype=np.int64)).rows
        >>> bool(rows[0] == rows[1]), bool(((rows >= 0) & (rows < 1000)).all())
        (True, True)
    """

    def __init__(self, num_embeddings: int) -> None:
        if num_embeddings < 1:
            raise ValueError(f"num_embeddings must be >= 1, got {num_embeddings}")
        self.num_embeddings = int(num_embeddings)

    def map(self, ids: np.ndarray, training: bool = True) -> RowMapping:
        rows = np.empty(ids.shape[0], dtype=np.int64)
        _hashing.hash_to_rows(ids, self.num_embeddings, rows)
        return RowMapping(rows)

    def memory_estimate(self) -> MemoryEstimate:
        return MemoryEstimate(ram_bytes=0, disk_bytes=0)

    def save(self, directory: Path) -> None:
        """Nothing to write: the hash is stateless (the table records ``num_embeddings``)."""

    def load(self, directory: Path) -> None:
        """Nothing to read: the hash is stateless."""

    def __repr__(self) -> str:
        return f"HashedRowMapper(num_embeddings={self.num_embeddings})"
