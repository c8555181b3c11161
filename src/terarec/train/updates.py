"""When the embedding tables take a step's gradients: at once (synchronous), or on a background
thread that may fall a bounded number of steps behind the lookups (Persia's hybrid training).

Both expose the same three calls the loop makes, in this order each step:
:meth:`before_lookup`, then :meth:`apply` once the dense backward has filled the gradient,
and :meth:`drain` before anything that must see every update (a checkpoint, evaluation).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import torch

from terarec.embedding import EmbeddingTableConfig
from terarec.errors import ConfigError

__all__ = ["EmbeddingUpdates", "HybridUpdates", "SyncUpdates", "check_hybrid_tables"]


class _Collection(Protocol):
    def apply_gradients(self, prepared: object, grad: torch.Tensor) -> None: ...


class EmbeddingUpdates(Protocol):
    """What the training loop calls to hand embedding gradients to the tables."""

    def before_lookup(self) -> None: ...

    def apply(self, prepared: object, grad: torch.Tensor) -> None: ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


class SyncUpdates:
    """Applies each step's gradients before returning: the next lookup sees them (deterministic)."""

    def __init__(self, collection: _Collection) -> None:
        self.collection = collection

    def before_lookup(self) -> None:
        """Nothing to wait for."""

    def apply(self, prepared: object, grad: torch.Tensor) -> None:
        """Sends and applies the gradients now."""
        self.collection.apply_gradients(prepared, grad)

    def drain(self) -> None:
        """Nothing is pending."""

    def close(self) -> None:
        """Nothing to stop."""


class HybridUpdates:
    """Sends and applies gradients on one background thread, in step order, while the loop goes
    on: a lookup waits only until at most ``staleness`` steps' updates are still pending, so
    rows it reads may lack the updates of the last ``staleness`` steps (and, being read while
    the thread writes, may mix two versions of a row, as Persia's embedding workers do).

    ``staleness=0`` waits for every update: the same results as :class:`SyncUpdates`, with the
    update moved to another thread.

    Args:
        collection: a collection with ``apply_gradients(prepared, grad)``; in a distributed
            run, one whose gradient exchange uses its own process group.
        staleness (int): most steps of updates a lookup may miss.
    """

    def __init__(self, collection: _Collection, staleness: int) -> None:
        self.collection = collection
        self.staleness = staleness
        self._pending: deque[Future[None]] = deque()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terarec-hybrid-update")

    def before_lookup(self) -> None:
        """Waits until no more than ``staleness`` updates are pending (re-raising their errors)."""
        while len(self._pending) > self.staleness:
            self._pending.popleft().result()

    def apply(self, prepared: object, grad: torch.Tensor) -> None:
        """Queues the update; ``grad`` must not be changed afterwards."""
        self._pending.append(self._worker.submit(self.collection.apply_gradients, prepared, grad))

    def drain(self) -> None:
        """Waits for every queued update."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Waits for queued updates, then stops the thread."""
        try:
            self.drain()
        finally:
            self._worker.shutdown(wait=True)


def check_hybrid_tables(tables: list[EmbeddingTableConfig]) -> None:
    """Refuses tables whose rows move while a batch is prepared (dynamic admission and
    eviction, a tiered cache): a late update could land on a row that meanwhile holds another
    ID. Hybrid mode trains fixed in-RAM tables."""
    moving = [t.name for t in tables if t.dynamic is not None or t.tiered is not None]
    if moving:
        raise ConfigError(
            f"sharding.mode=hybrid needs fixed in-RAM tables, but {moving} are dynamic or tiered "
            f"(their rows move while batches are prepared, so a late update could hit another ID's row); "
            f"use sharding.mode=sync for them"
        )
