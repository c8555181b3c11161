"""Row-wise shards against the whole table: a table split into row blocks looks up, trains and
saves exactly as the whole table does, for every optimizer (a shard pools by sum: the ranks
add the blocks' partial sums)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.embedding import (
    EmbeddingTableConfig,
    FixedTable,
    OptimizerConfig,
    OptimizerType,
    TieredConfig,
)
from terarec.embedding.shards import RowShardTable

BLOCKS = [(0, 300), (300, 450), (450, 1000)]


def _config(optimizer: OptimizerType) -> EmbeddingTableConfig:
    return EmbeddingTableConfig("t", 1000, 8, ("f",), optimizer=OptimizerConfig(optimizer, learning_rate=0.05))


def _batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.randint(0, 5, (64,), generator=generator)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    values = torch.randint(-(10**9), 10**9, (int(offsets[-1]),), generator=generator)
    return values, offsets, torch.randn(64, 8, generator=generator)


def _block_bags(rows: torch.Tensor, offsets: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of each bag that fall in ``[lo, hi)``, as the bags a shard receives."""
    bag = torch.repeat_interleave(torch.arange(offsets.numel() - 1), torch.diff(offsets))
    mine = (rows >= lo) & (rows < hi)
    lengths = torch.bincount(bag[mine], minlength=offsets.numel() - 1)
    return rows[mine], torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])


@pytest.mark.parametrize("optimizer", list(OptimizerType))
def test_row_blocks_look_up_train_and_save_as_the_whole_table(optimizer: OptimizerType, tmp_path: Path) -> None:
    config = _config(optimizer)
    whole = FixedTable(config, seed=3)
    shards = [RowShardTable(config, lo, hi - lo, seed=3) for lo, hi in BLOCKS]
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        values, offsets, grad = _batch(generator)
        rows = torch.from_numpy(whole.prepare(values, offsets).rows)
        parts = [_block_bags(rows, offsets, lo, hi) for lo, hi in BLOCKS]
        # the shards' partial sums add up to the whole table's pooled rows
        pooled = sum(shard.lookup(*part) for shard, part in zip(shards, parts))
        torch.testing.assert_close(pooled, whole.lookup(values, offsets), rtol=1e-6, atol=1e-6)
        whole.apply_gradients(values, offsets, grad)
        for shard, part in zip(shards, parts):
            shard.apply_gradients(*part, grad)
    np.testing.assert_array_equal(np.concatenate([s.weights for s in shards]), whole.weights)
    np.testing.assert_array_equal(np.concatenate([s.state for s in shards]), whole.state)
    # saved block by block (the first block first), they are the whole table's checkpoint
    for shard in shards:
        shard.save(tmp_path)
    restored = FixedTable(config, seed=9)
    restored.load(tmp_path)
    np.testing.assert_array_equal(restored.weights, whole.weights)
    np.testing.assert_array_equal(restored.state, whole.state)
    # and each block loads back its own rows from the whole table's checkpoint
    (tmp_path / "whole").mkdir()
    whole.save(tmp_path / "whole")
    for shard, (lo, hi) in zip(shards, BLOCKS):
        fresh = RowShardTable(config, lo, hi - lo, seed=9)
        fresh.load(tmp_path / "whole")
        np.testing.assert_array_equal(fresh.weights, whole.weights[lo:hi])


def test_a_row_shard_refuses_rows_outside_its_block_and_tables_it_cannot_hold() -> None:
    config = _config(OptimizerType.SGD)
    with pytest.raises(ValueError, match=r"rows \[900, 1100\) are not inside \[0, 1000\)"):
        RowShardTable(config, 900, 200)
    with pytest.raises(ValueError, match="fixed in-RAM tables only"):
        RowShardTable(EmbeddingTableConfig("t", 10, 4, ("f",), tiered=TieredConfig(cache_bytes=1000)), 0, 5)
