"""The embedding layer's interfaces: the prepared IDs of a batch and the one contract every
table kind implements (:class:`EmbeddingTable`). Configs are in :mod:`terarec.embedding.config`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from terarec.embedding.config import EmbeddingTableConfig
from terarec.embedding.memory import MemoryEstimate

__all__ = ["EmbeddingTable", "PreparedIds"]


@dataclass(frozen=True)
class PreparedIds:
    """One table's IDs of one batch, mapped to rows and de-duplicated.

    Computed once by :meth:`EmbeddingTable.prepare` (possibly ahead, on a background thread)
    and used by both the lookup and the gradient update of that batch.

    Shape:
        - rows: :math:`(N)` row of each ID (``int64``), ``-1`` for an ID without a row (a
          dynamic table's unadmitted ID): it reads as zeros and is not updated
        - offsets: :math:`(B + 1)` bag boundaries
        - unique_rows: :math:`(U)` distinct rows, ascending
        - occurrence_offsets: :math:`(U + 1)` CSR boundaries into ``occurrences``
        - occurrences: :math:`(N)` positions ``i`` in ``rows`` grouped by row, ascending in ``i``
          within each group
        - bag_of: :math:`(N)` the bag (example) each position belongs to
        - slots: :math:`(N)` where each row's weights sit in the table's storage (``-1`` where
          ``rows`` is); the rows themselves unless the storage is a cache
        - unique_slots: :math:`(U)` the slot of each of ``unique_rows``

    ``for_training`` says whether the table was in training mode; only such a batch may be
    used to apply gradients (a tiered table marks its rows dirty, a dynamic one admitted them).
    """

    rows: np.ndarray
    offsets: np.ndarray
    unique_rows: np.ndarray
    occurrence_offsets: np.ndarray
    occurrences: np.ndarray
    bag_of: np.ndarray
    slots: np.ndarray | None = None
    unique_slots: np.ndarray | None = None
    for_training: bool = True

    def __post_init__(self) -> None:
        # A table whose storage is not the identity (a cache) passes slots; otherwise they are the rows.
        if self.slots is None:
            object.__setattr__(self, "slots", self.rows)
        if self.unique_slots is None:
            object.__setattr__(self, "unique_slots", self.unique_rows)

    @property
    def batch_size(self) -> int:
        return int(self.offsets.shape[0]) - 1


class EmbeddingTable(abc.ABC):
    """The contract of every table kind: fixed, dynamic, tiered, or a shard of any of them.

    A table owns its rows *and* their optimizer state, and updates itself outside autograd.
    Models, the trainer, checkpoints and serving see only this interface.

    Shape:
        - values: :math:`(N)` ``int64`` raw IDs
        - offsets: :math:`(B + 1)` ``int64``
        - lookup output and ``grad_pooled``: :math:`(B, D)` ``float32``
    """

    config: EmbeddingTableConfig
    training: bool = True

    def train(self, mode: bool = True) -> EmbeddingTable:
        """Sets training mode (as ``nn.Module.train``). Outside it, :meth:`prepare` only reads:
        a dynamic table admits, counts and evicts nothing, and a tiered table writes nothing."""
        self.training = bool(mode)
        return self

    def eval(self) -> EmbeddingTable:
        """``train(False)``."""
        return self.train(False)

    @property
    def num_embeddings(self) -> int:
        return self.config.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    @abc.abstractmethod
    def prepare(self, values: torch.Tensor, offsets: torch.Tensor) -> PreparedIds:
        """Maps IDs to rows and de-duplicates them; reads no weights, so it may run ahead."""

    @abc.abstractmethod
    def lookup_prepared(self, prepared: PreparedIds) -> torch.Tensor:
        """Pooled rows of each bag, :math:`(B, D)`."""

    @abc.abstractmethod
    def apply_gradients_prepared(self, prepared: PreparedIds, grad_pooled: torch.Tensor) -> None:
        """Accumulates ``grad_pooled`` into each touched row once and applies the optimizer in place."""

    def lookup(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Pooled rows of each bag, :math:`(B, D)`: :meth:`prepare` then :meth:`lookup_prepared`."""
        return self.lookup_prepared(self.prepare(values, offsets))

    def apply_gradients(self, values: torch.Tensor, offsets: torch.Tensor, grad_pooled: torch.Tensor) -> None:
        """Fused sparse update: de-duplicate, accumulate, update touched rows and their state."""
        self.apply_gradients_prepared(self.prepare(values, offsets), grad_pooled)

    @abc.abstractmethod
    def memory_estimate(self) -> MemoryEstimate:
        """Bytes used per tier (RAM, disk) for weights and optimizer state."""

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Writes rows, optimizer state and ID map into ``directory`` (which exists and is empty)."""

    @abc.abstractmethod
    def load(self, directory: Path) -> None:
        """Restores what :meth:`save` wrote; refuses files of the wrong shape or dtype."""
