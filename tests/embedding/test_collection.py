"""EmbeddingCollection: feature → table mapping, shared tables, the autograd bridge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.embedding import (
    EmbeddingCollection,
    EmbeddingTableConfig,
    FixedTable,
    InitConfig,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
)
from terarec.sparse import JaggedTensor

B = 6


def _configs(optimizer: OptimizerType = OptimizerType.ADAGRAD) -> list[EmbeddingTableConfig]:
    opt = OptimizerConfig(optimizer, learning_rate=0.1, eps=1e-6)
    return [
        EmbeddingTableConfig("t_user", 40, 4, ("user",), optimizer=opt, init=InitConfig(scale=0.2)),
        EmbeddingTableConfig(
            "t_item", 30, 4, ("item", "seen"), pooling=PoolingType.MEAN, optimizer=opt, init=InitConfig(scale=0.2)
        ),
    ]


def _sparse(seed: int) -> dict[str, JaggedTensor]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("user", "item", "seen", "unused"):
        lengths = torch.from_numpy(rng.integers(0, 4, size=B))
        values = torch.from_numpy(rng.integers(0, 25, size=int(lengths.sum())))  # repeats and collisions
        out[name] = JaggedTensor.from_lengths(values, lengths)
    return out


def test_feature_order_and_dims() -> None:
    ec = EmbeddingCollection(_configs())
    assert ec.feature_names == ("user", "item", "seen")
    assert ec.embedding_dims == (4, 4, 4)
    assert set(ec.tables) == {"t_user", "t_item"}


def test_config_errors() -> None:
    a, b = _configs()
    with pytest.raises(ValueError, match="duplicate table name"):
        EmbeddingCollection([a, a])
    with pytest.raises(ValueError, match="'user'"):
        EmbeddingCollection([a, EmbeddingTableConfig("t2", 10, 4, ("user",))])
    with pytest.raises(ValueError, match="'item'"):
        EmbeddingCollection([EmbeddingTableConfig("t2", 10, 4, ("item", "item"))])


def test_a_collection_without_tables_pools_nothing_for_each_bag() -> None:
    # every feature embedded elsewhere (Deep Hash tables): the pooled leaf is (B, 0)
    empty = EmbeddingCollection([])
    prepared = empty.prepare({"user": JaggedTensor(torch.tensor([1, 2, 3]), torch.tensor([0, 1, 3]))})
    pooled = empty.lookup(prepared)
    assert pooled.values.shape == (2, 0) and pooled.values.requires_grad
    empty.apply_gradients(prepared, torch.zeros(2, 0))


def test_prepare_errors() -> None:
    ec = EmbeddingCollection(_configs())
    sparse = _sparse(0)
    del sparse["seen"]
    with pytest.raises(ValueError, match="'seen'"):
        ec.prepare(sparse)
    sparse = _sparse(0)
    sparse["item"] = JaggedTensor(torch.tensor([1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="'item'"):
        ec.prepare(sparse)


def test_lookup_matches_tables_and_views() -> None:
    ec = EmbeddingCollection(_configs())
    sparse = _sparse(0)
    pooled = ec.lookup(ec.prepare(sparse))
    assert pooled.values.shape == (B, 12) and pooled.values.is_leaf and pooled.values.requires_grad
    views = pooled.to_dict()
    assert list(views) == ["user", "item", "seen"]
    for feature, table in (("user", "t_user"), ("item", "t_item"), ("seen", "t_item")):
        expected = ec.tables[table].lookup(sparse[feature].values, sparse[feature].offsets)
        assert torch.equal(views[feature].detach(), expected)
    stacked = pooled.stacked()
    assert stacked.shape == (B, 3, 4) and stacked._base is pooled.values
    assert torch.equal(stacked[:, 1].detach(), views["item"].detach())


def test_stacked_refuses_mixed_dims() -> None:
    ec = EmbeddingCollection([EmbeddingTableConfig("a", 10, 4, ("x",)), EmbeddingTableConfig("b", 10, 2, ("y",))])
    sparse = {n: JaggedTensor(torch.tensor([1]), torch.tensor([0, 1])) for n in ("x", "y")}
    with pytest.raises(ValueError, match="embedding_dim"):
        ec.lookup(ec.prepare(sparse)).stacked()


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_training_matches_torch_reference() -> None:
    """A shared table gets all its features' gradients in one Adagrad step, like one
    nn.EmbeddingBag read twice and stepped once by torch.optim.Adagrad."""
    configs = _configs(OptimizerType.ADAGRAD)
    ec = EmbeddingCollection(configs, seed=5)
    bags = {
        "t_user": torch.nn.EmbeddingBag(40, 4, mode="sum", sparse=True, include_last_offset=True),
        "t_item": torch.nn.EmbeddingBag(30, 4, mode="mean", sparse=True, include_last_offset=True),
    }
    for name, bag in bags.items():
        with torch.no_grad():
            bag.weight.copy_(torch.tensor(ec.tables[name].weights))
    optimizer = torch.optim.Adagrad([b.weight for b in bags.values()], lr=0.1, eps=1e-6)
    mix = torch.randn(12, 1, generator=torch.Generator().manual_seed(0))
    for step in range(4):
        sparse = _sparse(step)
        prepared = ec.prepare(sparse)
        pooled = ec.lookup(prepared)
        loss = torch.tanh(pooled.stacked().reshape(B, 12) @ mix).sum()
        loss.backward()
        ec.apply_gradients(prepared, pooled.values.grad)

        optimizer.zero_grad()
        parts = []
        for feature, table in (("user", "t_user"), ("item", "t_item"), ("seen", "t_item")):
            rows = torch.from_numpy(ec.tables[table].prepare(sparse[feature].values, sparse[feature].offsets).rows)
            parts.append(bags[table](rows, sparse[feature].offsets))
        reference = torch.cat(parts, dim=1)
        torch.testing.assert_close(reference.detach(), pooled.values.detach(), rtol=1e-6, atol=1e-7)
        torch.tanh(reference @ mix).sum().backward()
        optimizer.step()
        for name, bag in bags.items():
            torch.testing.assert_close(torch.tensor(ec.tables[name].weights), bag.weight.detach(), rtol=1e-6, atol=1e-7)


def test_apply_gradients_errors() -> None:
    ec = EmbeddingCollection(_configs())
    prepared = ec.prepare(_sparse(0))
    with pytest.raises(ValueError, match="grad"):
        ec.apply_gradients(prepared, torch.zeros(B, 8))
    with pytest.raises(TypeError, match="grad"):
        ec.apply_gradients(prepared, torch.zeros(B, 12, dtype=torch.float64))
    other = EmbeddingCollection([EmbeddingTableConfig("x", 10, 4, ("user",))])
    with pytest.raises(ValueError, match="tables"):
        other.lookup(prepared)


def test_save_load_and_memory(tmp_path: Path) -> None:
    ec = EmbeddingCollection(_configs(), seed=1)
    prepared = ec.prepare(_sparse(0))
    ec.apply_gradients(prepared, torch.ones(B, 12))
    ec.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "t_item" / "weights.npy").is_file()
    restored = EmbeddingCollection(_configs(), seed=2)
    restored.load(tmp_path / "ckpt")
    for name in ec.tables:
        np.testing.assert_array_equal(restored.tables[name].weights, ec.tables[name].weights)
        np.testing.assert_array_equal(restored.tables[name].state, ec.tables[name].state)
    with pytest.raises(ValueError, match="t_user"):
        EmbeddingCollection(_configs()[1:]).load(tmp_path / "ckpt")
    assert ec.memory_estimate() == EmbeddingCollection.estimate_memory(_configs())
    user = ec.tables["t_user"]
    held = user.weights.nbytes + user.state.nbytes  # measured on the arrays, not from a formula
    assert ec.memory_estimate()["t_user"].ram_bytes == held
    text = repr(ec)
    assert "t_user" in text and "40 x 4" in text and "adagrad" in text and f"{held} bytes" in text


def test_from_tables() -> None:
    tables = [FixedTable(c) for c in _configs()]
    ec = EmbeddingCollection.from_tables(tables)
    assert ec.tables["t_item"] is tables[1] and ec.feature_names == ("user", "item", "seen")


def test_prepare_on_a_background_thread_while_training() -> None:
    """prepare reads no weights: batch n + 1 is prepared while batch n trains."""
    from concurrent.futures import ThreadPoolExecutor

    ec, serial = EmbeddingCollection(_configs()), EmbeddingCollection(_configs())
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(ec.prepare, _sparse(0))
        for step in range(6):
            prepared = future.result()
            future = pool.submit(ec.prepare, _sparse(step + 1))
            pooled = ec.lookup(prepared)
            ec.apply_gradients(prepared, torch.ones_like(pooled.values))
            reference = serial.prepare(_sparse(step))
            serial.apply_gradients(reference, torch.ones(B, 12))
    for name in ec.tables:
        np.testing.assert_array_equal(ec.tables[name].weights, serial.tables[name].weights)
