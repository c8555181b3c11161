"""bfloat16 storage of weights and optimizer state: the encoding, stochastic rounding, and
what a bf16 table promises beyond the contract suite (half the bytes, shards that round as the
whole table, checkpoints that refuse the other precision, RAM-only placement)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.embedding import (
    DataType,
    EmbeddingTableConfig,
    FixedTable,
    OptimizerConfig,
    OptimizerType,
    TieredConfig,
    _dedupe_kernels,
    _update_kernels,
)
from terarec.embedding._bf16 import bf16_to_float32, float32_to_bf16
from terarec.embedding.shards import RowShardTable
from terarec.errors import ConfigError
from terarec.sharding import ShardingOverride, ShardingPlanner, ShardingType, Tier, Topology
from terarec.sharding.types import TableWorkload

BF16 = {"weights_dtype": DataType.BF16, "state_dtype": DataType.BF16}


def _config(optimizer: OptimizerType = OptimizerType.ADAGRAD, **kwargs: object) -> EmbeddingTableConfig:
    return EmbeddingTableConfig(
        "t", 1000, 16, ("f",), optimizer=OptimizerConfig(optimizer, learning_rate=0.05), **kwargs  # type: ignore[arg-type]
    )


def test_encoding_matches_torch_bfloat16() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(10_000).astype(np.float32) * np.float32(10.0) ** rng.integers(-30, 30, 10_000),
        np.array([0.0, -0.0, 1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.4e38, -3.4e38, 1e-40, np.inf, -np.inf], np.float32),
    ]).astype(np.float32)  # fmt: skip
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(float32_to_bf16(values), expected)
    np.testing.assert_array_equal(bf16_to_float32(expected), torch.from_numpy(expected.view(np.int16)).view(torch.bfloat16).float().numpy())
    assert np.isnan(bf16_to_float32(float32_to_bf16(np.array([np.nan], np.float32))))[0]


def _sgd_rows(start: float, step: float, rows: int, seed: int) -> np.ndarray:
    """bf16 rows all at ``start`` after one SGD update of ``-step`` each (one ID per row)."""
    weights = np.full((rows, 8), float32_to_bf16(np.float32(start)), dtype=np.uint16)
    ids = np.arange(rows, dtype=np.int64)
    offsets = np.arange(rows + 1, dtype=np.int64)
    unique_rows, occurrence_offsets, occurrences, bag_of = _dedupe_kernels.dedupe(ids, offsets, rows)
    grad = np.full((rows, 8), step, dtype=np.float32)
    _update_kernels.sgd_update(weights, np.zeros((rows, 0), np.uint16), unique_rows, unique_rows, occurrence_offsets, occurrences,
                        bag_of, grad, offsets, False, np.uint64(seed), 1.0)  # fmt: skip
    return bf16_to_float32(weights)


def test_stochastic_rounding_is_unbiased_and_keeps_small_updates() -> None:
    # 1.0 - 0.001 lies between the bf16 neighbours 1 - 2^-8 and 1.0: nearest rounding would
    # give 1.0 every time and lose the update; stochastic rounding keeps it on average.
    after = _sgd_rows(1.0, 0.001, 4096, seed=5)
    assert set(np.unique(after).tolist()) == {1.0 - 2**-8, 1.0}
    assert abs(after.mean() - 0.999) < 2e-5  # 32k draws: standard error 1e-5
    np.testing.assert_array_equal(after, _sgd_rows(1.0, 0.001, 4096, seed=5))
    assert not np.array_equal(after, _sgd_rows(1.0, 0.001, 4096, seed=6))


def test_bf16_table_halves_bytes_and_reads_float32() -> None:
    fp32, bf16 = FixedTable(_config()), FixedTable(_config(**BF16))
    assert bf16.memory_estimate().ram_bytes * 2 == fp32.memory_estimate().ram_bytes == 1000 * 32 * 4
    assert bf16.weights.dtype == bf16.state.dtype == np.float32
    # Initial rows are the float32 ones rounded to nearest.
    np.testing.assert_array_equal(bf16.weights, bf16_to_float32(float32_to_bf16(fp32.weights)))
    mixed = EmbeddingTableConfig("t", 1000, 16, ("f",), optimizer=OptimizerConfig(OptimizerType.ADAGRAD), state_dtype=DataType.BF16)
    assert mixed.row_bytes == 16 * 4 + 16 * 2


def test_bf16_training_follows_float32() -> None:
    """Fifty Adagrad steps on 40 hot rows: bf16 weights stay within about 1.5% of float32's
    (mean absolute difference over the mean magnitude; measured 1.4%), and the differences
    average out (stochastic rounding is unbiased: measured mean 1e-5 to 1.2e-4 over seeds)."""
    tables = FixedTable(_config()), FixedTable(_config(**BF16))
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        values, offsets = torch.randint(0, 40, (256,), generator=generator), torch.arange(0, 257, 4)
        grad = torch.randn(64, 16, generator=generator)
        for table in tables:
            table.apply_gradients(values, offsets, grad)
    fp32, bf16 = (table.weights for table in tables)
    touched = np.abs(fp32 - FixedTable(_config()).weights).max(axis=1) > 0
    assert touched.sum() >= 35
    difference = bf16[touched] - fp32[touched]
    assert np.abs(difference).mean() < 0.03 * np.abs(fp32[touched]).mean()
    assert abs(difference.mean()) < 3e-4


def test_row_shards_round_as_the_whole_table() -> None:
    config = _config(OptimizerType.ROWWISE_ADAGRAD, **BF16)
    whole = FixedTable(config, seed=2)
    shards = [RowShardTable(config, 0, 400, seed=2), RowShardTable(config, 400, 600, seed=2)]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        values, offsets = torch.randint(0, 10**6, (300,), generator=generator), torch.arange(0, 301, 3)
        grad = torch.randn(100, 16, generator=generator)
        rows = torch.from_numpy(whole.prepare(values, offsets).rows)
        whole.apply_gradients(values, offsets, grad)
        bag = torch.repeat_interleave(torch.arange(100), torch.diff(offsets))
        for shard, (lo, hi) in zip(shards, [(0, 400), (400, 1000)]):
            mine = (rows >= lo) & (rows < hi)
            lengths = torch.bincount(bag[mine], minlength=100)
            shard.apply_gradients(rows[mine], torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]), grad)
    np.testing.assert_array_equal(np.concatenate([s.weights for s in shards]), whole.weights)
    np.testing.assert_array_equal(np.concatenate([s.state for s in shards]), whole.state)


def test_checkpoint_of_the_other_precision_is_refused(tmp_path: Path) -> None:
    FixedTable(_config()).save(tmp_path)
    with pytest.raises(ValueError, match="weights_dtype='fp32' does not match"):
        FixedTable(_config(**BF16)).load(tmp_path)


def test_tiered_bf16_table_trains_as_in_ram(tmp_path: Path) -> None:
    """A cache of 100 rows under about 350 touched ones: rows go to the file and back as bf16 records."""
    ram = FixedTable(_config(**BF16), seed=4)
    tiered = FixedTable(_config(tiered=TieredConfig(cache_bytes=100 * 64), **BF16), seed=4, directory=tmp_path)
    assert tiered.memory_estimate().disk_bytes == 1000 * 64  # 16 weights + 16 state values, 2 bytes each
    generator = torch.Generator().manual_seed(2)
    for _ in range(10):
        values, offsets = torch.randint(0, 10**6, (40,), generator=generator), torch.arange(0, 41, 10)
        grad = torch.randn(4, 16, generator=generator)
        for table in (ram, tiered):
            table.apply_gradients(values, offsets, grad)
    assert tiered.counters()["disk_written_bytes"] > 0
    np.testing.assert_array_equal(tiered.weights, ram.weights)
    np.testing.assert_array_equal(tiered.state, ram.state)


def test_mixed_precision_tables_stay_in_ram() -> None:
    mixed = {"weights_dtype": DataType.BF16, "state_dtype": DataType.FP32}
    with pytest.raises(ValueError, match="tiered table stores weights and state in one dtype"):
        _config(tiered=TieredConfig(cache_bytes=1 << 20), **mixed)
    table = TableWorkload(dataclasses.replace(_config(**mixed), num_embeddings=10**6), (1.0,))
    planner = ShardingPlanner(Topology(1, ram_per_rank=1 << 30, ssd_per_rank=1 << 34), batch_size=64)
    assert all(shard.tier is Tier.RAM for placement in planner.plan([table]).placements for shard in placement.shards)
    pinned = ShardingPlanner(
        Topology(1, ram_per_rank=1 << 30, ssd_per_rank=1 << 34), batch_size=64,
        overrides=[ShardingOverride("t", ShardingType.TABLE_WISE, Tier.SSD)],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="in different dtypes and a tiered file holds one"):
        pinned.plan([table])
