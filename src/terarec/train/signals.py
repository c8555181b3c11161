"""Stopping a long-running trainer cleanly: SIGTERM or SIGINT ask it to stop after the step in
flight, and it stops with a final checkpoint instead of dying mid-write."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopRequest"]


class StopRequest:
    """A request to stop after the batch in flight, set by SIGTERM or SIGINT while installed as a
    context manager (the main thread only; a second signal acts as it would without it), or by
    :meth:`set`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleeps up to ``seconds``, less when a stop is requested; returns whether one was."""
        return self._event.wait(seconds)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._restore()
        self.set()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
