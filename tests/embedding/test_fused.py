"""Table groups (terarec.embedding.fused): bit-identical to running the tables one by one."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from terarec.embedding import (
    DataType,
    EmbeddingCollection,
    EmbeddingTableConfig,
    FixedTable,
    InitConfig,
    InitType,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
)
from terarec.embedding.fused import TableGroup, group_tables
from terarec.sparse import JaggedTensor
from tests.embedding import embedding_reference as ref
from tests.helpers import numba_threads

B = 48
FEATURES = ("a", "b", "c", "d")
ROWS = (1, 7, 300, 5000)  # one table with a single row: every ID collides


def _configs(
    optimizer: OptimizerType, pooling: PoolingType, dim: int = 6, dtype: DataType = DataType.FP32
) -> list[EmbeddingTableConfig]:
    opt = OptimizerConfig(optimizer, learning_rate=0.05, eps=1e-6)
    init = InitConfig(InitType.NORMAL, 0.1)
    return [
        EmbeddingTableConfig(
            f"t_{f}", rows, dim, (f,), pooling=pooling, optimizer=opt, init=init, weights_dtype=dtype, state_dtype=dtype
        )
        for f, rows in zip(FEATURES, ROWS)
    ]


def _sparse(seed: int) -> dict[str, JaggedTensor]:
    """Random bags with empty bags, one huge bag and many repeated IDs (int32 and int64 IDs)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(FEATURES):
        ids, offsets = ref.random_jagged(rng, B, "int64" if i % 2 else "int32", num_distinct=30)
        out[name] = JaggedTensor(torch.from_numpy(ids), torch.from_numpy(offsets))
    out["d"] = JaggedTensor(torch.zeros(0, dtype=torch.int64), torch.zeros(B + 1, dtype=torch.int64))  # all empty
    return out


def _train_fused(ec: EmbeddingCollection, steps: int) -> list[torch.Tensor]:
    outputs = []
    for step in range(steps):
        prepared = ec.prepare(_sparse(step))
        pooled = ec.lookup(prepared)
        outputs.append(pooled.values.detach().clone())
        grad = torch.from_numpy(np.random.default_rng(100 + step).standard_normal(pooled.values.shape, dtype=np.float32))
        ec.apply_gradients(prepared, grad)
    return outputs


def _train_alone(tables: list[FixedTable], steps: int) -> list[torch.Tensor]:
    outputs = []
    for step in range(steps):
        sparse = _sparse(step)
        pooled = [t.lookup(sparse[f].values, sparse[f].offsets) for t, f in zip(tables, FEATURES)]
        outputs.append(torch.cat(pooled, dim=1))
        grad = torch.from_numpy(np.random.default_rng(100 + step).standard_normal(outputs[-1].shape, dtype=np.float32))
        dim = tables[0].embedding_dim
        for i, (table, f) in enumerate(zip(tables, FEATURES)):
            block = grad[:, i * dim : (i + 1) * dim].contiguous()
            table.apply_gradients(sparse[f].values, sparse[f].offsets, block)
    return outputs


@pytest.mark.parametrize("dtype", list(DataType))
@pytest.mark.parametrize("pooling", list(PoolingType))
@pytest.mark.parametrize("optimizer", list(OptimizerType))
def test_group_is_bit_identical_to_tables_alone(optimizer: OptimizerType, pooling: PoolingType, dtype: DataType) -> None:
    configs = _configs(optimizer, pooling, dtype=dtype)
    ec = EmbeddingCollection(configs, seed=3)
    assert len(ec._groups) == 1 and not ec._alone  # every table in one group
    tables = [FixedTable(c, seed=3) for c in configs]
    for fused, alone in zip(_train_fused(ec, 4), _train_alone(tables, 4)):
        assert torch.equal(fused, alone)
    for table in tables:
        twin = ec.tables[table.config.name]
        assert twin.step == table.step == 4
        assert np.array_equal(twin.weights, table.weights) and np.array_equal(twin.state, table.state)


def test_prepared_group_matches_table_prepare() -> None:
    configs = _configs(OptimizerType.SGD, PoolingType.SUM)
    ec = EmbeddingCollection(configs)
    sparse = _sparse(7)
    prepared = ec.prepare(sparse).groups[0]
    for i, (name, table) in enumerate(ec.tables.items()):
        feature = table.config.feature_names[0]
        expected = table.prepare(sparse[feature].values, sparse[feature].offsets)
        got = prepared.table_ids(i)
        for field in ("rows", "offsets", "unique_rows", "occurrence_offsets", "occurrences", "bag_of"):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=f"{name}.{field}")
    # Chunks cover every table's distinct rows once, in order.
    starts = prepared.chunk_start
    assert starts.tolist() == sorted(starts.tolist()) and (np.diff(prepared.chunk_table) >= 0).all()


def _train_threads(optimizer: OptimizerType, pooling: PoolingType, threads: int) -> EmbeddingCollection:
    with numba_threads(threads):
        ec = EmbeddingCollection(_configs(optimizer, pooling, dim=16), seed=9)
        _train_fused(ec, 3)
        return ec


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("pooling", list(PoolingType))
@pytest.mark.parametrize("optimizer", list(OptimizerType))
def test_group_thread_count_does_not_change_results(optimizer: OptimizerType, pooling: PoolingType) -> None:
    one, two = _train_threads(optimizer, pooling, 1), _train_threads(optimizer, pooling, 2)
    for name in one.tables:
        assert np.array_equal(one.tables[name].weights, two.tables[name].weights)
        assert np.array_equal(one.tables[name].state, two.tables[name].state)


def test_mixed_collection_groups_and_alone() -> None:
    """Groups by (dim, pooling, optimizer); shared tables run alone; output columns interleave."""
    opt = OptimizerConfig(OptimizerType.ADAGRAD, learning_rate=0.1)
    configs = [
        EmbeddingTableConfig("t_a", 50, 4, ("a",), optimizer=opt),
        EmbeddingTableConfig("t_b", 50, 8, ("b",), optimizer=opt),
        EmbeddingTableConfig("t_shared", 50, 4, ("c", "d"), optimizer=opt),
        EmbeddingTableConfig("t_e", 50, 4, ("e",), pooling=PoolingType.MEAN, optimizer=opt),
        EmbeddingTableConfig("t_f", 50, 4, ("f",), optimizer=opt),
    ]
    groups, alone = group_tables([FixedTable(c) for c in configs])
    assert [g.feature_names for g in groups] == [("a", "f"), ("b",), ("e",)]
    assert [(t.config.name, column) for t, column in alone] == [("t_shared", 12)]
    ec, twin = EmbeddingCollection(configs, seed=1), EmbeddingCollection(configs, seed=1)
    rng = np.random.default_rng(0)
    for step in range(3):
        sparse = {}
        for f in "abcdef":
            lengths = torch.from_numpy(rng.integers(0, 4, size=B))
            sparse[f] = JaggedTensor.from_lengths(torch.from_numpy(rng.integers(0, 80, int(lengths.sum()))), lengths)
        prepared = ec.prepare(sparse)
        pooled = ec.lookup(prepared)
        grad = torch.randn(pooled.values.shape, generator=torch.Generator().manual_seed(step))
        views, start = pooled.to_dict(), 0
        for name, table in twin.tables.items():  # the twin runs every table alone
            k, dim = len(table.config.feature_names), table.embedding_dim
            for i, f in enumerate(table.config.feature_names):
                expected = table.lookup(sparse[f].values, sparse[f].offsets)
                assert torch.equal(views[f].detach(), expected)
            values = torch.cat([sparse[f].values for f in table.config.feature_names])
            offsets = torch.cat(
                [sparse[f].offsets[:-1] + sum(sparse[g].values.numel() for g in table.config.feature_names[:i])
                 for i, f in enumerate(table.config.feature_names)] + [torch.tensor([values.numel()])]
            )  # fmt: skip
            block = grad[:, start : start + k * dim].reshape(B, k, dim).transpose(0, 1).reshape(k * B, dim)
            table.apply_gradients(values, offsets, block.contiguous())
            start += k * dim
        ec.apply_gradients(prepared, grad)
    for name in ec.tables:
        assert np.array_equal(ec.tables[name].weights, twin.tables[name].weights), name
        assert np.array_equal(ec.tables[name].state, twin.tables[name].state), name


def test_group_errors() -> None:
    configs = _configs(OptimizerType.SGD, PoolingType.SUM)
    ec = EmbeddingCollection(configs)
    sparse = _sparse(0)
    sparse["b"] = JaggedTensor(torch.tensor([1, 2, 3]), torch.tensor([0, 2, 1] + [3] * (B - 2)))
    with pytest.raises(ValueError, match="'b'.*non-decreasing"):
        ec.prepare(sparse)
    other = EmbeddingCollection([c for c in configs[:3]] + [EmbeddingTableConfig("t_d", 9, 6, ("d",))])
    prepared = other.prepare(_sparse(0))
    with pytest.raises(ValueError, match="tables|group"):
        ec.lookup(prepared)
    with pytest.raises(ValueError, match="cannot run as one group"):
        TableGroup([FixedTable(configs[0]), FixedTable(EmbeddingTableConfig("x", 5, 3, ("x",)))], [0, 6])


def test_group_sees_loaded_weights(tmp_path) -> None:
    """load copies into the tables' arrays in place, so the group's typed lists stay valid."""
    configs = _configs(OptimizerType.ROWWISE_ADAGRAD, PoolingType.SUM)
    trained = EmbeddingCollection(configs, seed=1)
    _train_fused(trained, 2)
    trained.save(tmp_path / "ckpt")
    restored = EmbeddingCollection(configs, seed=2)
    restored.load(tmp_path / "ckpt")
    prepared = _sparse(5)
    assert torch.equal(trained.lookup(trained.prepare(prepared)).values, restored.lookup(restored.prepare(prepared)).values)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_prepare_equals_serial(threads: int) -> None:
    # Tables of very different sizes, one of them empty in this batch: the threads get
    # unequal shares and the joined result must still be the serial one, array for array.
    configs = [EmbeddingTableConfig(f"t{i}", rows, 4, (f"t{i}",)) for i, rows in enumerate((50, 7, 3000, 1, 64))]
    ec = EmbeddingCollection(configs)
    rng = np.random.default_rng(5)
    sparse = {}
    for i, bag in enumerate((3, 1, 40, 0, 2)):
        ids = torch.from_numpy(rng.integers(0, 10**6, size=8 * bag))
        sparse[f"t{i}"] = JaggedTensor(ids, torch.arange(9) * bag)
    serial = ec.prepare(sparse).groups[0]
    with numba_threads(min(threads, numba.config.NUMBA_NUM_THREADS)):
        parallel = ec.prepare(sparse, parallel=True).groups[0]
    for field in ("rows", "value_offsets", "offsets", "unique_rows", "unique_offsets", "occurrence_offsets",
                  "occurrences", "bag_of", "chunk_table", "chunk_start"):  # fmt: skip
        np.testing.assert_array_equal(getattr(parallel, field), getattr(serial, field), err_msg=field)
