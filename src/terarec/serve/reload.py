"""Hot reload: a served model follows a training run, checkpoint after checkpoint.

:class:`ModelReloader` polls a run's ``checkpoints/`` for a complete checkpoint newer than the
served model's step, exports it (in a helper process, :class:`~terarec.serve.exporter.ExportProcess`)
into a scratch directory of its own, opens it (every file CRC-checked) and swaps it in by
replacing one reference: a request takes the reference once, so it is answered wholly by the old
model or wholly by the new one, and requests keep flowing while the next model loads. A checkpoint that fails to export or open
(corrupt, truncated, removed while read) is counted and skipped; the served model stays.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from terarec.serve.exporter import ExportProcess
from terarec.serve.model import ServedModel, freeze_long_lived_objects
from terarec.train.checkpoint import checkpoint_step, latest_checkpoint

__all__ = ["CurrentModel", "ModelReloader"]


class CurrentModel:
    """The model that answers requests now; :attr:`model` is swapped whole."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model


class ModelReloader:
    """Swaps each newer checkpoint of ``run_dir`` into ``current`` (see the module docstring).

    Args:
        current (CurrentModel): the served model's holder.
        run_dir (Path): the training run to follow (its ``--out`` directory).
        scratch_parent (Path): where the exported versions go (a directory of this reloader's
            own is made there, removed by :meth:`stop`).
        poll_seconds (float, optional): how often to look for a new checkpoint. Default: ``1.0``
        on_reload (Callable[[ServedModel, ServedModel, float], None], optional): called after
            each swap with the old model, the new one and the seconds the reload took.
            Default: ``None``
        on_failure (Callable[[Path, Exception], None], optional): called with the checkpoint
            and the error when a reload fails. Default: ``None``
        cache_bytes (int, optional): the new models' table caches (:class:`ServedModel`).
            Default: ``None``
    """

    def __init__(
        self,
        current: CurrentModel,
        run_dir: Path,
        scratch_parent: Path,
        poll_seconds: float = 1.0,
        on_reload: Callable[[ServedModel, ServedModel, float], None] | None = None,
        on_failure: Callable[[Path, Exception], None] | None = None,
        cache_bytes: int | None = None,
    ) -> None:
        self.current, self.run_dir, self.poll_seconds = current, Path(run_dir), poll_seconds
        self.on_reload, self.on_failure, self.cache_bytes = on_reload, on_failure, cache_bytes
        self._scratch = Path(tempfile.mkdtemp(prefix=".terarec-serve-", dir=scratch_parent))
        self._exporter = ExportProcess()
        self._failed: set[Path] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Loads and swaps in the newest checkpoint if it is newer than the served model's;
        whether it swapped."""
        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is None or checkpoint in self._failed or checkpoint_step(checkpoint) <= self.current.model.step:
            return False
        begun = time.perf_counter()
        target = self._scratch / checkpoint.name
        try:
            if target.exists():
                shutil.rmtree(target)
            self._exporter.export(checkpoint, target)
            loaded = ServedModel(target, self.cache_bytes)
            loaded.warm_up()
        except Exception as err:  # any failure leaves the served model in place, and is reported
            self._failed.add(checkpoint)
            shutil.rmtree(target, ignore_errors=True)
            if self.on_failure is not None:
                self.on_failure(checkpoint, err)
            return False
        old, self.current.model = self.current.model, loaded
        if old.directory.parent == self._scratch:
            # Requests still on the old model keep reading it: its mapped files outlive their names.
            shutil.rmtree(old.directory, ignore_errors=True)
        freeze_long_lived_objects()
        if self.on_reload is not None:
            self.on_reload(old, loaded, time.perf_counter() - begun)
        return True

    def _run(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            self.check()

    def start(self) -> None:
        """Polls in a background thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="terarec-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling and removes the exported versions (a model still open keeps its
        mapped files until it is dropped)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._exporter.close()
        shutil.rmtree(self._scratch, ignore_errors=True)
