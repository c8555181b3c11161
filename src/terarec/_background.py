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
    slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, item = slots.get()
            if kind == "done":
                return
            if kind == "error":
                raise item  # type: ignore[misc]
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
