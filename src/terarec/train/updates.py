"""When the embedding tables take a step's gradients: at once (synchronous), or on a background
thread, a fixed number of steps late (Persia's hybrid training, made deterministic).

Both expose the calls the loop makes each step, in this order: :meth:`before_lookup`, the
lookup, :meth:`after_lookup`, the dense forward and backward, then :meth:`apply` with the
gradient; and :meth:`drain` before anything that must see every update (a checkpoint, evaluation).
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

    def after_lookup(self) -> None: ...

    def apply(self, prepared: object, grad: torch.Tensor) -> None: ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


class SyncUpdates:
    """Applies each step's gradients before returning: the next lookup sees them."""

    def __init__(self, collection: _Collection) -> None:
        self.collection = collection

    def before_lookup(self) -> None:
        """Nothing to wait for."""

    def after_lookup(self) -> None:
        """Nothing to start."""

    def apply(self, prepared: object, grad: torch.Tensor) -> None:
        """Sends and applies the gradients now."""
        self.collection.apply_gradients(prepared, grad)

    def drain(self) -> None:
        """Nothing is pending."""

    def close(self) -> None:
        """Nothing to stop."""


class HybridUpdates:
    """Applies step ``t``'s embedding gradients on a background thread while step
    ``t + staleness`` runs its dense forward and backward, so the embedding side's exchange
    and optimizer overlap the dense network's work.

    The lookup of step ``t`` sees exactly the updates of steps up to ``t - staleness - 1``:
    each update starts only after that lookup and ends before the next one, so no row is read
    while it is written and runs are reproducible, like Persia's bounded staleness without its
    races. :meth:`drain` (before a checkpoint) applies everything pending, after which lookups
    are briefly fresher; a run resumed from a checkpoint matches one that did not stop.

    Args:
        collection: a collection with ``apply_gradients(prepared, grad)``; in a distributed
            run, one whose gradient exchange uses its own process group.
        staleness (int): steps of updates each lookup misses, ``>= 1``.

    Example::

        >>> class Log:
        ...     applied = []
        ...     def apply_gradients(self, step, grad): self.applied.append(step)
        >>> updates, seen = HybridUpdates(Log(), staleness=2), []
        >>> for step in range(5):
        ...     updates.before_lookup(); seen.append(list(Log.applied)); updates.after_lookup()
        ...     updates.apply(step, torch.zeros(1))
        >>> updates.close()
        >>> seen  # what each step's lookup saw
        [[], [], [], [0], [0, 1]]
    """

    def __init__(self, collection: _Collection, staleness: int) -> None:
        if staleness < 1:
            raise ValueError(f"staleness must be >= 1, got {staleness}")
        self.collection = collection
        self.staleness = staleness
        self._waiting: deque[tuple[object, torch.Tensor]] = deque()
        self._running: Future[None] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terarec-hybrid-update")

    def _wait(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            running.result()

    def before_lookup(self) -> None:
        """Waits for the update started after the previous lookup (re-raising its error)."""
        self._wait()

    def after_lookup(self) -> None:
        """Starts the update of the step ``staleness`` steps back."""
        if len(self._waiting) == self.staleness:
            self._running = self._worker.submit(self.collection.apply_gradients, *self._waiting.popleft())

    def apply(self, prepared: object, grad: torch.Tensor) -> None:
        """Queues this step's gradients; ``grad`` must not change afterwards."""
        self._waiting.append((prepared, grad))

    def drain(self) -> None:
        """Applies every queued update, in step order."""
        self._wait()
        while self._waiting:
            self.collection.apply_gradients(*self._waiting.popleft())

    def close(self) -> None:
        """Drains, then stops the thread."""
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
