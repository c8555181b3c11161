"""Running an iterator's work on a background thread, a bounded number of items ahead.

The data loader gathers batches this way and the trainer prepares embedding lookups this way
(a pipeline stage each). The work inside must release the GIL to overlap for real; numba
kernels compiled with ``nogil=True`` and NumPy copies do.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["iterate_in_background"]

T = TypeVar("T")
_POLL_SECONDS = 0.05


def iterate_in_background(items: Iterable[T], depth: int, name: str = "terarec-background") -> Iterator[T]:
    """Yields ``items`` in order while a daemon thread produces up to ``depth`` of them ahead.

    "Ahead" counts from the item the consumer holds: the thread starts producing item
    ``n + depth`` only once the consumer has asked for item ``n``, i.e. is done with item
    ``n - 1``. A stage whose production changes shared state (a dynamic table admitting IDs, a
    cache evicting rows) can therefore rely on at most ``depth + 1`` items being alive at once.

    Stopping early (``break``, ``close()`` or dropping the generator) stops the thread and
    closes ``items`` on it; an exception raised while producing is re-raised in the consumer.

    Args:
        items (Iterable[T]): consumed on the background thread only.
        depth (int): items produced ahead of the consumer (at least 1).
        name (str, optional): the thread's name. Default: ``"terarec-background"``

    Example::

        >>> list(iterate_in_background((i * i for i in range(5)), depth=2))
        [0, 1, 4, 9, 16]
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    produced: queue.Queue[tuple[str, object]] = queue.Queue()
    permits = threading.Semaphore(depth)
    stop = threading.Event()

    def wait_for_permit() -> bool:
        while not stop.is_set():
            if permits.acquire(timeout=_POLL_SECONDS):
                return True
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            while wait_for_permit():
                try:
                    item = next(iterator)
                except StopIteration:
                    produced.put(("done", None))
                    return
                produced.put(("item", item))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            produced.put(("error", exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, item = produced.get()
            if kind == "done":
                return
            if kind == "error":
                raise item  # type: ignore[misc]
            permits.release()  # the previous item is done with: one more may be produced
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
