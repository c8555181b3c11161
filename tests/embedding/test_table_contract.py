"""The EmbeddingTable contract, run against every table kind.

A new kind joins by adding its name to ``TABLE_KINDS`` and a branch to ``_build``; every test
below then runs on it. Tiered kinds get a cache of a few rows, so every test also exercises
constant eviction and write-back. ``_bf16`` kinds store weights and optimizer state in
bfloat16; known answers then hold to bfloat16's precision (:func:`_rtol`). ``column_shard``
kinds are the first half of the columns of a table twice as wide (a column-wise shard, saved
as its whole table); they refuse row-wise Adagrad, so tests that leave the optimizer at its
default give them element-wise Adagrad, and a test that asks for row-wise Adagrad skips them.
Row-wise shards take rows rather than IDs and are tested against whole tables in
``tests/embedding/test_shards.py``.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.embedding import (
    DataType,
    DynamicConfig,
    DynamicTable,
    EmbeddingTable,
    EmbeddingTableConfig,
    FixedTable,
    InitConfig,
    InitType,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
    TieredConfig,
)
from terarec.embedding.shards import ColumnShardTable

TABLE_KINDS = [
    "fixed", "fixed_tiered", "fixed_bf16", "fixed_tiered_bf16", "dynamic", "dynamic_tiered", "dynamic_bf16",
    "dynamic_tiered_bf16", "column_shard", "column_shard_bf16",
]  # fmt: skip
MakeTable = Callable[..., EmbeddingTable]
CACHE_ROWS = 120  # of 1000 rows


def _build(kind: str, config: EmbeddingTableConfig, seed: int, directory: Path) -> EmbeddingTable:
    if kind.endswith("_bf16"):
        config = replace(config, weights_dtype=DataType.BF16, state_dtype=DataType.BF16)
    if "_tiered" in kind:
        config = replace(config, tiered=TieredConfig(cache_bytes=CACHE_ROWS * config.row_bytes))
    if kind.startswith("dynamic"):
        return DynamicTable(replace(config, dynamic=DynamicConfig(sketch_width=1024)), seed, directory)
    if kind.startswith("fixed"):
        return FixedTable(config, seed, directory)
    if kind.startswith("column_shard"):
        if config.optimizer.type is OptimizerType.ROWWISE_ADAGRAD:
            config = replace(config, optimizer=replace(config.optimizer, type=OptimizerType.ADAGRAD))
        whole = replace(config, embedding_dim=2 * config.embedding_dim)
        return ColumnShardTable(whole, first_column=0, num_columns=config.embedding_dim, seed=seed)
    raise NotImplementedError(kind)


@pytest.fixture(params=TABLE_KINDS)
def make_table(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MakeTable:
    """``make_table(config, seed=0)`` builds a table of the parametrized kind."""
    asked = getattr(request.node, "callspec", None)
    optimizer = asked.params.get("optimizer") if asked is not None else None
    if request.param.startswith("column_shard") and optimizer is OptimizerType.ROWWISE_ADAGRAD:
        pytest.skip("column-wise shards refuse row-wise Adagrad: one state value per row cannot be split")
    return lambda config, seed=0: _build(request.param, config, seed, tmp_path_factory.mktemp("tables"))


def _config(optimizer: OptimizerType = OptimizerType.ROWWISE_ADAGRAD, **kwargs) -> EmbeddingTableConfig:
    defaults = dict(name="t", num_embeddings=1000, embedding_dim=8, feature_names=("f",))
    return EmbeddingTableConfig(**{**defaults, **kwargs}, optimizer=OptimizerConfig(optimizer, learning_rate=0.1))


def _rtol(table: EmbeddingTable) -> float:
    """Relative tolerance of a value the table computed and stored: float32's, or bfloat16's
    half step (2^-8) when it stores bfloat16."""
    return 2**-8 if table.config.weights_dtype is DataType.BF16 else 1.3e-6


def _jagged(values: list[int], offsets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(values, dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64)


# bag 0: [1, 2, 1]   bag 1: []   bag 2: [2**62]   bag 3: [-3, 1]
VALUES, OFFSETS = _jagged([1, 2, 1, 2**62, -3, 1], [0, 3, 3, 4, 6])


@pytest.mark.parametrize("pooling", list(PoolingType))
def test_lookup_shape_and_dtype(make_table: MakeTable, pooling: PoolingType) -> None:
    table = make_table(_config(pooling=pooling))
    out = table.lookup(VALUES, OFFSETS)
    assert out.shape == (4, 8) and out.dtype == torch.float32
    assert (out[1] == 0).all()
    assert table.lookup(*_jagged([], [0])).shape == (0, 8)
    assert (table.lookup(*_jagged([], [0, 0, 0])) == 0).all()


@pytest.mark.parametrize("pooling", list(PoolingType))
def test_lookup_known_answer(make_table: MakeTable, pooling: PoolingType) -> None:
    table = make_table(_config(pooling=pooling))
    row = dict(zip([1, 2, 2**62, -3], table.prepare(*_jagged([1, 2, 2**62, -3], [0, 4])).rows.tolist()))
    w = torch.tensor(table.weights)
    expected = torch.stack(
        [w[row[1]] + w[row[2]] + w[row[1]], torch.zeros(8), w[row[2**62]], w[row[-3]] + w[row[1]]]
    )
    if pooling is PoolingType.MEAN:
        expected /= torch.tensor([3.0, 1.0, 1.0, 2.0])[:, None]
    torch.testing.assert_close(table.lookup(VALUES, OFFSETS), expected, rtol=1e-6, atol=1e-7)
    prepared = table.prepare(VALUES, OFFSETS)
    assert torch.equal(table.lookup_prepared(prepared), table.lookup(VALUES, OFFSETS))


def test_sgd_update_known_answer(make_table: MakeTable) -> None:
    table = make_table(_config(OptimizerType.SGD, init=InitConfig(InitType.ZEROS)))
    values, offsets = _jagged([10, 20, 10], [0, 1, 3])  # bag 0: [10]   bag 1: [20, 10]
    assert len(table.prepare(values, offsets).unique_rows) == 2  # no collision between 10 and 20
    grad = torch.tensor([[1.0] * 8, [2.0] * 8])
    table.apply_gradients(values, offsets, grad)
    # row(10) got 1 + 2, row(20) got 2; lr = 0.1
    expected = -0.1 * torch.tensor([[3.0] * 8, [2.0] * 8])
    torch.testing.assert_close(table.lookup(*_jagged([10, 20], [0, 1, 2])), expected, rtol=_rtol(table), atol=1e-5)


@pytest.mark.parametrize("optimizer", list(OptimizerType))
def test_apply_gradients_changes_only_touched_rows(make_table: MakeTable, optimizer: OptimizerType) -> None:
    table = make_table(_config(optimizer))
    before_w, before_s = np.array(table.weights), np.array(table.state)
    prepared = table.prepare(VALUES, OFFSETS)
    table.apply_gradients_prepared(prepared, torch.ones(4, 8))
    touched = np.zeros(1000, dtype=bool)
    touched[prepared.unique_rows] = True
    changed_w = (table.weights != before_w).any(axis=1)
    np.testing.assert_array_equal(changed_w, touched)
    if table.state.shape[1]:
        np.testing.assert_array_equal((table.state != before_s).any(axis=1), touched)


@pytest.mark.parametrize("optimizer", list(OptimizerType))
def test_save_load_round_trip(make_table: MakeTable, optimizer: OptimizerType, tmp_path: Path) -> None:
    table = make_table(_config(optimizer), seed=1)
    for _ in range(3):
        table.apply_gradients(VALUES, OFFSETS, torch.randn(4, 8, generator=torch.Generator().manual_seed(0)))
    table.save(tmp_path)
    restored = make_table(_config(optimizer), seed=1)
    restored.apply_gradients(VALUES, OFFSETS, torch.full((4, 8), 5.0))  # rows that differ before load
    restored.load(tmp_path)
    np.testing.assert_array_equal(restored.weights, table.weights)
    np.testing.assert_array_equal(restored.state, table.state)
    # Training on continues identically (Adam's step count is restored too).
    for t in (table, restored):
        t.apply_gradients(VALUES, OFFSETS, torch.ones(4, 8))
    np.testing.assert_array_equal(restored.weights, table.weights)


def test_load_refuses_mismatches(make_table: MakeTable, tmp_path: Path) -> None:
    table = make_table(_config())
    table.save(tmp_path)
    with pytest.raises(ValueError, match="embedding_dim"):
        make_table(_config(embedding_dim=4)).load(tmp_path)
    with pytest.raises(ValueError, match="optimizer"):
        make_table(_config(OptimizerType.ADAM)).load(tmp_path)
    if (tmp_path / "weights.npy").exists():  # rows held in RAM
        stored = np.load(tmp_path / "weights.npy").dtype  # float32, or uint16 holding bfloat16
        np.save(tmp_path / "weights.npy", np.zeros((1000, 8), dtype=np.float64))
        with pytest.raises(ValueError, match=f"expected a {stored} array"):
            table.load(tmp_path)
        np.save(tmp_path / "weights.npy", np.array([object()]), allow_pickle=True)
        with pytest.raises(ValueError):
            table.load(tmp_path)
    with pytest.raises(ValueError, match="table.json"):
        table.load(tmp_path / "missing")


@pytest.mark.parametrize("optimizer", list(OptimizerType))
def test_memory_estimate_equals_allocated_bytes(make_table: MakeTable, optimizer: OptimizerType) -> None:
    config = _config(optimizer, num_embeddings=20_000, embedding_dim=16)
    tracemalloc.start()
    try:
        table = make_table(config)
        allocated = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    estimate = table.memory_estimate()
    assert estimate == table.config.memory_estimate()
    assert abs(allocated - estimate.ram_bytes) < 64 * 1024


def test_bad_input_errors(make_table: MakeTable) -> None:
    table = make_table(_config())
    with pytest.raises(TypeError, match="values"):
        table.lookup(VALUES.to(torch.int32), OFFSETS)
    with pytest.raises(TypeError, match="offsets"):
        table.lookup(VALUES, OFFSETS.tolist())
    with pytest.raises(ValueError, match="values"):
        table.lookup(VALUES.view(2, 3), OFFSETS)
    with pytest.raises(ValueError, match="offsets"):
        table.lookup(VALUES, torch.tensor([1, 3, 6]))
    with pytest.raises(ValueError, match="offsets"):
        table.lookup(VALUES, torch.tensor([0, 3, 5]))
    with pytest.raises(ValueError, match="non-decreasing"):
        table.lookup(VALUES, torch.tensor([0, 4, 3, 6]))
    with pytest.raises(ValueError, match="offsets"):
        table.lookup(VALUES, torch.tensor([], dtype=torch.int64))
    with pytest.raises(ValueError, match="grad_pooled"):
        table.apply_gradients(VALUES, OFFSETS, torch.ones(3, 8))
    with pytest.raises(TypeError, match="grad_pooled"):
        table.apply_gradients(VALUES, OFFSETS, torch.ones(4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        table.apply_gradients(VALUES, OFFSETS, torch.ones(8, 4).t())
    if not isinstance(table, DynamicTable):  # its rows fill from 0: they fit any table
        bigger = make_table(_config(num_embeddings=10**6))
        with pytest.raises(ValueError, match="outside"):
            table.lookup_prepared(bigger.prepare(*_jagged([2**40 + i for i in range(50)], [0, 50])))
    with pytest.raises(ValueError, match="training"):
        table.eval()
        table.apply_gradients(VALUES, OFFSETS, torch.ones(4, 8))
