"""The export helper of a serving process: exports in a process of its own, reports a failed
export without dying, and starts again when it has died."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from terarec.errors import DataError
from terarec.serve import ServedModel
from terarec.serve.exporter import ExportProcess
from terarec.train.checkpoint import latest_checkpoint


@pytest.mark.slow
def test_exports_reports_failures_and_survives_its_helper(criteo_model: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = criteo_model
    checkpoint = latest_checkpoint(run)
    assert checkpoint is not None
    broken = shutil.copytree(checkpoint, tmp_path / "checkpoints" / checkpoint.name)
    (broken / "model.pt").write_bytes(b"not a model")
    exporter = ExportProcess()
    try:
        exporter.export(checkpoint, tmp_path / "first")
        assert ServedModel(tmp_path / "first").step == 40
        with pytest.raises(DataError, match=r"export failed: .*model\.pt"):
            exporter.export(broken, tmp_path / "broken")
        assert not (tmp_path / "broken").exists()
        exporter.export(checkpoint, tmp_path / "second")  # the same helper, after a failure
        assert (tmp_path / "second" / "manifest.json").is_file()
        helper = exporter.pid
        assert helper is not None
        os.kill(helper, signal.SIGKILL)
        os.waitpid(helper, 0)
        exporter.export(checkpoint, tmp_path / "third")  # a new helper
        assert (tmp_path / "third" / "manifest.json").is_file() and exporter.pid not in (None, helper)
    finally:
        exporter.close()
    assert exporter.pid is None
