"""Exports for a serving process, done by a helper process kept warm.

A server following a training run exports each new checkpoint. Done in the serving process,
the export (rebuilding the tables, writing the model directory) shares the interpreter with the
requests and holds them up; done by a fresh ``terarec export`` each time, every export pays for
starting Python, torch and the kernels again. :class:`ExportProcess` starts one helper on the
first export, at a lower priority and on one thread, and keeps it for the next ones: requests
come first for the cores, and a new model is ready about as fast as an export takes.

The helper reads one JSON request per line on its standard input (``{"checkpoint": ..., "out":
...}``) and answers one JSON line (``{"ok": true}`` or ``{"error": "..."}``); nothing is pickled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from terarec.errors import DataError, TerarecError

__all__ = ["EXPORT_NICENESS", "ExportProcess", "main"]

EXPORT_NICENESS = 10


class ExportProcess:
    """Exports checkpoints into model directories through one helper process (module docstring).

    Thread-safe; the helper starts on the first :meth:`export` and again after it dies.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The helper's process ID, or ``None`` while none runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _start(self) -> subprocess.Popen[str]:
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "terarec.serve.exporter"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=environment, preexec_fn=lambda: os.nice(EXPORT_NICENESS),
        )

    def export(self, checkpoint: Path, out: Path) -> None:
        """Exports ``checkpoint`` into the new model directory ``out``
        (:func:`~terarec.serve.export_run`).

        Raises:
            DataError: naming the checkpoint, when the export fails or the helper dies.
        """
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps({"checkpoint": str(checkpoint), "out": str(out)}) + "\n")
                process.stdin.flush()
                answer = process.stdout.readline()
            except OSError as err:  # the helper died before reading the request
                answer, self._process = "", None
                process.kill()
                raise DataError(f"{checkpoint}: export failed: the export process stopped ({err})") from None
        if not answer:
            raise DataError(f"{checkpoint}: export failed: the export process stopped (exit code {process.wait()})")
        result = json.loads(answer)
        if "error" in result:
            raise DataError(f"{checkpoint}: export failed: {result['error']}")

    def close(self) -> None:
        """Stops the helper (closing its input ends it)."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main() -> None:
    """The helper: one export per request line, until its input closes."""
    from terarec.serve.export import export_run

    for line in sys.stdin:
        request = json.loads(line)
        try:
            export_run(Path(request["checkpoint"]), Path(request["out"]))
            answer: dict[str, object] = {"ok": True}
        except Exception as err:  # any failure is the requester's to report; the helper serves on
            answer = {"error": str(err) if isinstance(err, TerarecError) else f"{type(err).__name__}: {err}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
