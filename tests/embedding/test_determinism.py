"""Same ops, any numba thread count: bit-identical weights and state."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from terarec.embedding import (
    EmbeddingTableConfig,
    FixedTable,
    InitConfig,
    InitType,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
)
from tests.helpers import numba_threads


def _train(optimizer: OptimizerType, pooling: PoolingType, threads: int) -> FixedTable:
    with numba_threads(threads):
        config = EmbeddingTableConfig(
            "t", 500, 16, ("f",), pooling=pooling,
            optimizer=OptimizerConfig(optimizer, learning_rate=0.05), init=InitConfig(InitType.NORMAL, 0.1),
        )  # fmt: skip
        table = FixedTable(config, seed=9)
        rng = np.random.default_rng(0)
        for _ in range(3):
            lengths = rng.integers(0, 20, size=256)
            values = torch.from_numpy(rng.zipf(1.3, size=int(lengths.sum())).astype(np.int64))
            offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
            grad = torch.from_numpy(rng.standard_normal((256, 16)).astype(np.float32))
            table.lookup(values, offsets)
            table.apply_gradients(values, offsets, grad)
        return table


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("pooling", list(PoolingType))
@pytest.mark.parametrize("optimizer", list(OptimizerType))
def test_thread_count_does_not_change_results(optimizer: OptimizerType, pooling: PoolingType) -> None:
    one, two = _train(optimizer, pooling, 1), _train(optimizer, pooling, 2)
    assert np.array_equal(one.weights, two.weights)
    assert np.array_equal(one.state, two.state)
