"""RamRowStorage and HashedRowMapper: the two components every table composes."""

from __future__ import annotations

from pathlib import Path

from tests.embedding import embedding_reference as ref
import numpy as np
import pytest

from terarec.embedding import HashedRowMapper, InitConfig, InitType, RamRowStorage, storage


@pytest.mark.parametrize("init_type", [InitType.UNIFORM, InitType.NORMAL])
def test_chunked_initialisation_equals_whole(monkeypatch: pytest.MonkeyPatch, init_type: InitType) -> None:
    whole = RamRowStorage(1000, 3, 0, InitConfig(init_type, 0.5), seed=4)
    monkeypatch.setattr(storage, "_INIT_CHUNK_ROWS", 7)
    chunked = RamRowStorage(1000, 3, 0, InitConfig(init_type, 0.5), seed=4)
    np.testing.assert_array_equal(whole.weights, chunked.weights)
    expected = (ref.init_uniform if init_type is InitType.UNIFORM else ref.init_normal)(
        np.arange(1000, dtype=np.int64), 3, 4, 0.5
    )
    np.testing.assert_allclose(whole.weights, expected, rtol=1e-6, atol=1e-7)


def test_default_scale_is_dlrm() -> None:
    weights = RamRowStorage(10_000, 4, 0, InitConfig(), seed=0).weights
    assert np.abs(weights).max() <= np.sqrt(1 / 10_000) and np.abs(weights).max() > 0.009


def test_resolve_is_identity_without_copy() -> None:
    rows = np.array([3, 1, 3], dtype=np.int64)
    assert RamRowStorage(5, 2, 1, InitConfig(), seed=0).resolve(rows) is rows


def test_save_load_and_refusals(tmp_path: Path) -> None:
    saved = RamRowStorage(50, 4, 1, InitConfig(), seed=1, initial_state=0.5)
    saved.save(tmp_path)
    loaded = RamRowStorage(50, 4, 1, InitConfig(InitType.ZEROS), seed=2)
    weights_before = loaded.weights
    loaded.load(tmp_path)
    assert loaded.weights is weights_before  # loaded in place: views stay valid
    np.testing.assert_array_equal(loaded.weights, saved.weights)
    np.testing.assert_array_equal(loaded.state, saved.state)
    with pytest.raises(ValueError, match=r"shape \(60, 4\)"):
        RamRowStorage(60, 4, 1, InitConfig(), seed=0).load(tmp_path)
    np.save(tmp_path / "state.npy", np.zeros((50, 1), dtype=np.float16))
    with pytest.raises(ValueError, match="float16"):
        loaded.load(tmp_path)
    np.testing.assert_array_equal(loaded.weights, saved.weights)  # nothing half-loaded
    (tmp_path / "state.npy").unlink()
    with pytest.raises(ValueError, match="missing"):
        loaded.load(tmp_path)


def test_sgd_storage_has_no_state(tmp_path: Path) -> None:
    s = RamRowStorage(5, 2, 0, InitConfig(), seed=0)
    assert s.state.shape == (5, 0) and s.memory_estimate().ram_bytes == 40
    s.save(tmp_path)
    s.load(tmp_path)


def test_hashed_row_mapper() -> None:
    mapper = HashedRowMapper(77)
    ids = np.array([0, -1, 2**63 - 1, 12345, 12345], dtype=np.int64)
    np.testing.assert_array_equal(mapper.map(ids).rows, ref.hash_to_rows(ids, 77))
    assert mapper.memory_estimate().total_bytes == 0
    with pytest.raises(ValueError, match="num_embeddings"):
        HashedRowMapper(0)
