from pathlib import Path

import numpy as np
import pytest

from terarec.errors import DataError
from terarec.train import fit, latest_checkpoint
from terarec.train.checkpoint import CHECKPOINTS, load_checkpoint

from tests.helpers import checkpoint_weights, tiny_config


def test_checkpoint_every_keeps_the_newest(tmp_path: Path) -> None:
    fit(tiny_config(tmp_path, train__steps=25, train__checkpoint_every=5, train__keep_checkpoints=2))
    names = sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir())
    assert names == ["step-000000020", "step-000000025"]


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = fit(tiny_config(tmp_path, train__steps=4))
    before = checkpoint_weights(result.checkpoint)
    from terarec.embedding import EmbeddingCollection

    def disk_full(self: EmbeddingCollection, directory: Path) -> None:
        (directory / "partial.npy").write_bytes(b"\0" * 10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EmbeddingCollection, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        fit(tiny_config(tmp_path, train__steps=8, train__resume=True))
    assert latest_checkpoint(tmp_path) == result.checkpoint
    assert not list((tmp_path / CHECKPOINTS).glob(".tmp-*"))
    after = checkpoint_weights(result.checkpoint)
    assert all(np.array_equal(before[key], after[key]) for key in before)


def test_corrupt_or_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    result = fit(tiny_config(tmp_path, train__steps=3))
    table_file = next((result.checkpoint / "tables").rglob("*.npy"))
    original = table_file.read_bytes()
    table_file.write_bytes(original[:-8])
    with pytest.raises(DataError, match="bytes, the manifest says"):
        fit(tiny_config(tmp_path, train__steps=6, train__resume=True))
    flipped = bytearray(original)
    flipped[-1] ^= 0xFF
    table_file.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="corrupt"):
        fit(tiny_config(tmp_path, train__steps=6, train__resume=True))


def test_no_checkpoint_here_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no checkpoint here"):
        load_checkpoint(tmp_path, None, None)  # type: ignore[arg-type]

