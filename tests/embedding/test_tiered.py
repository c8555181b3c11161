"""Tiered tables: a RAM cache over a slab file must train exactly like the table held in RAM,
survive faults without losing rows, and checkpoint incrementally."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.embedding import (
    DynamicConfig,
    DynamicTable,
    EmbeddingTableConfig,
    FixedTable,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
    RowTable,
    TieredConfig,
    TieredRowStorage,
    check_disk,
)
from terarec.embedding.tiered import PHASES
from terarec.errors import PlanError

ROWS, DIM, BATCH, BAG = 5000, 8, 64, 3


def _config(optimizer: OptimizerType, pooling: PoolingType = PoolingType.SUM, **kwargs) -> EmbeddingTableConfig:
    return EmbeddingTableConfig(
        "t", ROWS, DIM, ("f",), pooling=pooling, optimizer=OptimizerConfig(optimizer, learning_rate=0.05), **kwargs
    )


def _tiered(config: EmbeddingTableConfig, cache_rows: int, **kwargs) -> EmbeddingTableConfig:
    return replace(config, tiered=TieredConfig(cache_bytes=cache_rows * config.row_bytes, **kwargs))


def _batches(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Zipf-like IDs (a hot head and a long tail), ragged bags, random gradients."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        lengths = rng.integers(0, 2 * BAG, BATCH)
        ids = (rng.zipf(1.2, lengths.sum()) % 20_000).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        grad = rng.standard_normal((BATCH, DIM)).astype(np.float32)
        out.append((torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(grad)))
    return out


def _train(table: RowTable, batches: list, pipelined: bool = True) -> list[torch.Tensor]:
    """Trains as the trainer does: batch n+1 is prepared before batch n's update when ``pipelined``."""
    outputs = []
    prepared = [table.prepare(batches[0][0], batches[0][1])] if pipelined else []
    for n, (values, offsets, grad) in enumerate(batches):
        current = prepared.pop(0) if pipelined else table.prepare(values, offsets)
        outputs.append(table.lookup_prepared(current))
        if pipelined and n + 1 < len(batches):
            prepared.append(table.prepare(batches[n + 1][0], batches[n + 1][1]))
        table.apply_gradients_prepared(current, grad)
    return outputs


@pytest.mark.parametrize("optimizer", list(OptimizerType))
@pytest.mark.parametrize("pooling", list(PoolingType))
def test_tiny_cache_trains_bit_identically_to_ram(tmp_path: Path, optimizer: OptimizerType, pooling: PoolingType) -> None:
    config = _config(optimizer, pooling)
    batches = _batches(25)
    ram = FixedTable(config, seed=3)
    tiered = FixedTable(_tiered(config, cache_rows=2 * BATCH * 2 * BAG), seed=3, directory=tmp_path)
    for expected, got in zip(_train(ram, batches), _train(tiered, batches), strict=True):
        assert torch.equal(expected, got)
    stats = tiered._storage.stats()
    assert stats.rows_written > 0 and stats.rows_read > 0  # the cache really evicted and reloaded
    np.testing.assert_array_equal(tiered.weights, ram.weights)
    np.testing.assert_array_equal(tiered.state, ram.state)


def test_dynamic_tiered_equals_dynamic_in_ram(tmp_path: Path) -> None:
    config = replace(_config(OptimizerType.ADAGRAD), dynamic=DynamicConfig(min_count=2, ttl_steps=5, sketch_width=4096))
    batches = _batches(30, seed=1)
    ram = DynamicTable(config, seed=0)
    tiered = DynamicTable(_tiered(config, cache_rows=2 * BATCH * 2 * BAG), seed=0, directory=tmp_path)
    for expected, got in zip(_train(ram, batches), _train(tiered, batches), strict=True):
        assert torch.equal(expected, got)
    assert ram.stats() == tiered.stats()
    assert ram.stats().evicted_ttl > 0 and ram.stats().rejected > 0


def test_cache_smaller_than_two_batches_is_refused_with_the_numbers(tmp_path: Path) -> None:
    table = FixedTable(_tiered(_config(OptimizerType.SGD), cache_rows=100), directory=tmp_path)
    values = torch.arange(80, dtype=torch.int64) * 7919
    table.prepare(values, torch.tensor([0, 80]))
    pattern = r"cache holds 100 rows but this batch needs \d+ distinct rows while \d+ of the previous batch"
    with pytest.raises(ValueError, match=pattern + r" are in use; set cache_bytes to at least \d+"):
        table.prepare(values + 1, torch.tensor([0, 80]))


def test_disk_full_during_write_back_raises_and_loses_nothing(tmp_path: Path) -> None:
    config = _config(OptimizerType.ADAGRAD)
    batches = _batches(40, seed=2)
    ram = FixedTable(config)
    tiered = FixedTable(_tiered(config, cache_rows=400), directory=tmp_path)
    _train(ram, batches[:6], pipelined=False)
    _train(tiered, batches[:6], pipelined=False)
    storage: TieredRowStorage = tiered._storage
    saved_fd = os.dup(storage._write_fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, storage._write_fd)  # every write-back now fails with ENOSPC
    try:
        with pytest.raises(OSError, match="No space left on device"):
            for values, offsets, _ in batches[6:]:
                tiered.prepare(values, offsets)
    finally:
        os.dup2(saved_fd, storage._write_fd)
        os.close(saved_fd)
        os.close(full)
    # Every dirty row is still cached or on disk: the table equals the RAM one.
    np.testing.assert_array_equal(tiered.weights, ram.weights)
    np.testing.assert_array_equal(tiered.state, ram.state)


def test_eval_mode_writes_nothing_back(tmp_path: Path) -> None:
    table = FixedTable(_tiered(_config(OptimizerType.SGD), cache_rows=2 * BATCH * 2 * BAG), directory=tmp_path)
    table.eval()
    for values, offsets, _ in _batches(20, seed=3):
        table.lookup(values, offsets)
    stats = table._storage.stats()
    assert stats.rows_written == 0 and stats.misses > table._storage.cache_rows  # clean victims are dropped


def test_each_residency_phase_is_timed_and_reported_with_the_counters(tmp_path: Path) -> None:
    table = FixedTable(_tiered(_config(OptimizerType.SGD), cache_rows=2 * BATCH * 2 * BAG), directory=tmp_path)
    assert set(table._storage.stats().phase_seconds.values()) == {0.0}
    _train(table, _batches(30, seed=4))  # enough batches to evict and write dirty rows back
    stats = table._storage.stats()
    assert tuple(stats.phase_seconds) == PHASES and stats.rows_written > 0
    assert all(seconds > 0 for seconds in stats.phase_seconds.values())
    counters = table.counters()
    assert {f"{phase}_seconds": counters[f"{phase}_seconds"] for phase in PHASES} == {
        f"{phase}_seconds": seconds for phase, seconds in stats.phase_seconds.items()
    }
    assert FixedTable(_config(OptimizerType.SGD)).counters() == {}  # a RAM table has no phases


def test_incremental_checkpoints_resume_exactly(tmp_path: Path) -> None:
    config = _tiered(_config(OptimizerType.ROWWISE_ADAGRAD), cache_rows=2 * BATCH * 2 * BAG, full_snapshot_every=3)
    batches = _batches(40, seed=4)
    straight = FixedTable(config, directory=tmp_path / "straight")
    _train(straight, batches)

    table = FixedTable(config, directory=tmp_path / "run")
    checkpoints = []
    for part in range(4):
        _train(table, batches[part * 10 : (part + 1) * 10])
        checkpoints.append(tmp_path / f"ckpt-{part}")
        checkpoints[-1].mkdir()
        table.save(checkpoints[-1])
    chains = [sorted(p.name for p in c.iterdir() if p.name.startswith(("full-", "delta-"))) for c in checkpoints]
    assert chains[0] == ["full-000001.slab"]
    assert chains[1] == ["delta-000002.npz", "full-000001.slab"]
    assert chains[3] == ["full-000004.slab"]  # a new full copy every 3 saves
    delta = checkpoints[1] / "delta-000002.npz"
    assert delta.stat().st_size < (checkpoints[0] / "full-000001.slab").stat().st_size
    assert (checkpoints[1] / "full-000001.slab").stat().st_ino == (checkpoints[0] / "full-000001.slab").stat().st_ino

    # Resume from the third checkpoint (full + 2 deltas), even after the older ones are deleted.
    for old in checkpoints[:2]:
        for path in old.iterdir():
            path.unlink()
    resumed = FixedTable(config, directory=tmp_path / "resumed")
    resumed.load(checkpoints[2])
    _train(resumed, batches[30:])
    np.testing.assert_array_equal(resumed.weights, straight.weights)
    np.testing.assert_array_equal(resumed.state, straight.state)


def test_truncated_or_corrupt_snapshots_are_refused(tmp_path: Path) -> None:
    config = _tiered(_config(OptimizerType.SGD), cache_rows=2 * BATCH * 2 * BAG)
    table = FixedTable(config, directory=tmp_path / "run")
    _train(table, _batches(3))
    first, second = tmp_path / "c1", tmp_path / "c2"
    for directory in (first, second):
        directory.mkdir()
        _train(table, _batches(3, seed=9))
        table.save(directory)
    restored = FixedTable(config, directory=tmp_path / "restored")
    delta = second / "delta-000002.npz"
    intact = delta.read_bytes()
    delta.unlink()  # the checkpoint's own link: the store's copy stays intact
    delta.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(ValueError, match="incremental snapshot"):
        restored.load(second)
    with open(first / "full-000001.slab", "r+b") as handle:  # one inode shared by both checkpoints
        handle.truncate(100)
    with pytest.raises(ValueError, match="full copy"):
        restored.load(second)
    with pytest.raises(ValueError, match="table.json"):
        restored.load(tmp_path / "nowhere")


def test_disk_space_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    huge = _tiered(replace(_config(OptimizerType.ADAM), num_embeddings=10**15), cache_rows=10)
    with pytest.raises(ValueError, match="bytes on disk"):
        FixedTable(huge, directory=tmp_path)
    assert not list(tmp_path.iterdir()) or all(p.stat().st_size == 0 for p in tmp_path.iterdir())
    estimate = huge.memory_estimate()
    assert estimate.disk_bytes == 10**15 * huge.row_bytes
    with pytest.raises(PlanError, match="tiered tables need .* on disk"):
        check_disk({"t": estimate}, tmp_path)


def test_memory_estimate_splits_ram_and_disk(tmp_path: Path) -> None:
    config = _tiered(_config(OptimizerType.ADAGRAD), cache_rows=100)
    table = FixedTable(config, directory=tmp_path)
    estimate = table.memory_estimate()
    assert estimate == config.memory_estimate()
    assert estimate.disk_bytes == ROWS * config.row_bytes
    # the estimate, made before allocating, is every array the table then holds in RAM
    held = sum(value.nbytes for value in vars(table._storage).values() if isinstance(value, np.ndarray))
    assert estimate.ram_bytes == held


def test_materialized_table_reads_its_rows_from_disk_with_the_same_results(tmp_path: Path) -> None:
    config = _config(OptimizerType.ADAGRAD)
    batches = _batches(15, seed=5)
    ram = FixedTable(config)
    tiered = FixedTable(_tiered(config, cache_rows=2 * BATCH * 2 * BAG), directory=tmp_path)
    tiered._storage.materialize(chunk_rows=1000)
    assert tiered._storage.path.stat().st_blocks * 512 >= ROWS * config.row_bytes
    for expected, got in zip(_train(ram, batches), _train(tiered, batches), strict=True):
        assert torch.equal(expected, got)
    assert tiered._storage.stats().rows_read == tiered._storage.stats().misses  # every miss came from disk
    with pytest.raises(ValueError, match="fresh table"):
        tiered._storage.materialize()


def test_failed_snapshot_write_keeps_older_checkpoints_and_loses_no_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _tiered(_config(OptimizerType.ADAGRAD), cache_rows=2 * BATCH * 2 * BAG)
    batches = _batches(30, seed=6)
    straight = FixedTable(config, directory=tmp_path / "straight")
    _train(straight, batches)
    table = FixedTable(config, directory=tmp_path / "run")
    first, failed, last = (tmp_path / name for name in ("c1", "c2", "c3"))
    for directory in (first, failed, last):
        directory.mkdir()
    _train(table, batches[:10])
    table.save(first)
    _train(table, batches[10:20])

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(np, "savez", disk_full)
        with pytest.raises(OSError, match="No space"):
            table.save(failed)
    _train(table, batches[20:])
    table.save(last)  # its snapshot covers the changes the failed one did not record
    for checkpoint, trained in ((first, 10), (last, 30)):
        restored = FixedTable(config, directory=tmp_path / f"restored-{checkpoint.name}")
        restored.load(checkpoint)
        if trained < len(batches):
            _train(restored, batches[trained:])
        np.testing.assert_array_equal(restored.weights, straight.weights)


def test_sector_sized_rows_are_written_back_with_direct_io(tmp_path: Path) -> None:
    config = replace(_config(OptimizerType.ADAGRAD), embedding_dim=64)  # 64 + 64 floats: one 512-byte sector
    batches = [(v, o, torch.ones(BATCH, 64) * 0.01) for v, o, _ in _batches(20, seed=7)]
    ram = FixedTable(config)
    tiered = FixedTable(_tiered(config, cache_rows=2 * BATCH * 2 * BAG), directory=tmp_path)
    assert tiered._storage._write_fd != tiered._storage._fd
    for expected, got in zip(_train(ram, batches), _train(tiered, batches), strict=True):
        assert torch.equal(expected, got)
    assert tiered._storage.stats().rows_written > 0
    tiered.flush()
    np.testing.assert_array_equal(tiered.weights, ram.weights)
