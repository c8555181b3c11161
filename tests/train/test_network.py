"""DenseNetwork: the model's input from the row tables, the IDs' weights and the Deep Hash tables."""

from __future__ import annotations

import pytest
import torch

from terarec.embedding import DeepHashCollection, DeepHashConfig, DeepHashTableConfig, HashTransform
from terarec.models import InputSpec, ModelConfig, ModelType, build_model
from terarec.sparse import JaggedTensor
from terarec.train.network import DenseNetwork

SETTINGS = DeepHashConfig(16, transform=HashTransform.UNIFORM, hidden_dims=(8,))


def _network(model_type: ModelType = ModelType.DNN, hashed: bool = False) -> DenseNetwork:
    torch.manual_seed(0)
    names, dims = ("a", "b", "h") if hashed else ("a", "b"), (4, 4, 4) if hashed else (4, 4)
    model = build_model(ModelConfig(type=model_type), InputSpec(1, names, dims))
    tables = DeepHashCollection([DeepHashTableConfig("h", model.layout.table_dim(4), ("h",), deep_hash=SETTINGS)])
    return DenseNetwork(model, tables if hashed else None)


def _bags(ids: list[list[int]], weights: list[list[float]] | None = None) -> JaggedTensor:
    flat = torch.tensor([i for bag in ids for i in bag], dtype=torch.int64)
    jagged = JaggedTensor.from_lengths(flat, torch.tensor([len(bag) for bag in ids]))
    if weights is None:
        return jagged
    return JaggedTensor(jagged.values, jagged.offsets, torch.tensor([w for bag in weights for w in bag]))


def test_weights_scale_the_pooled_row_of_a_one_id_bag_and_its_gradient() -> None:
    network = _network(ModelType.DEEPFM)  # a wide column after each embedding: both are scaled
    pooled = torch.randn(3, 10, requires_grad=True)
    sparse = {"a": _bags([[1], [2], []], [[2.0], [0.5], []]), "b": _bags([[3], [4], [5]])}
    inputs = network.inputs(torch.zeros(3, 1), pooled, sparse)
    expected = pooled.detach().clone()
    expected[0, :5] *= 2.0
    expected[1, :5] *= 0.5
    expected[2, :5] = 0.0  # an empty bag pooled nothing; its weight is irrelevant
    torch.testing.assert_close(inputs.pooled, expected)
    inputs.pooled.sum().backward()
    assert pooled.grad[:, 5:].eq(1).all() and pooled.grad[0, :5].eq(2).all() and pooled.grad[1, :5].eq(0.5).all()


def test_weighted_bags_of_several_ids_are_refused_for_row_tables() -> None:
    sparse = {"a": _bags([[1, 2], [3]], [[2.0, 1.0], [1.0]]), "b": _bags([[3], [4]])}
    with pytest.raises(ValueError, match=r"sparse feature 'a': a bag of 2 IDs carries weights.*'dhe'"):
        _network().inputs(torch.zeros(2, 1), torch.zeros(2, 8), sparse)


def test_deep_hash_embeddings_follow_the_row_tables_and_weigh_every_id() -> None:
    network = _network(hashed=True).eval()
    pooled = torch.randn(2, 8)
    hashed = _bags([[7, 8], [9]], [[2.0, 3.0], [0.5]])
    inputs = network.inputs(torch.zeros(2, 1), pooled, {"a": _bags([[1], [2]]), "b": _bags([[3], [4]]), "h": hashed})
    torch.testing.assert_close(inputs.pooled[:, :8], pooled)
    table = network.deep_hash.tables["h"]

    def vector(i: int) -> torch.Tensor:
        return table.decoder(table.encode(torch.tensor([i])))[0]

    expected = torch.stack([2.0 * vector(7) + 3.0 * vector(8), 0.5 * vector(9)])
    torch.testing.assert_close(inputs.pooled[:, 8:], expected, rtol=1e-5, atol=1e-6)


def test_the_model_must_end_with_the_deep_hash_features() -> None:
    model = build_model(ModelConfig(type=ModelType.DNN), InputSpec(1, ("h", "a"), (4, 4)))
    tables = DeepHashCollection([DeepHashTableConfig("h", 4, ("h",), deep_hash=SETTINGS)])
    with pytest.raises(ValueError, match=r"last features \('a',\) must be the Deep Hash tables' \('h',\)"):
        DenseNetwork(model, tables)
