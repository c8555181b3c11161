"""Deep Hash Embeddings: the hash encoding, the decoder, pooling, and the collection of tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terarec.embedding import (
    DeepHashCollection,
    DeepHashConfig,
    DeepHashEmbedding,
    DeepHashTableConfig,
    HashTransform,
    PoolingType,
)
from terarec.errors import ConfigError
from terarec.sparse import JaggedTensor

SMALL = DeepHashConfig(num_hashes=32, buckets=1000, transform=HashTransform.UNIFORM, hidden_dims=(16, 8))


def _table(features: tuple[str, ...] = ("f",), dim: int = 4, seed: int = 0, **settings: object) -> DeepHashEmbedding:
    torch.manual_seed(0)
    config = DeepHashTableConfig("t", dim, features, deep_hash=DeepHashConfig(**{**SMALL.__dict__, **settings}))
    return DeepHashEmbedding(config, seed)


def _bags(*bags: list[int]) -> JaggedTensor:
    return JaggedTensor.from_lengths(
        torch.tensor([i for bag in bags for i in bag], dtype=torch.int64), torch.tensor([len(b) for b in bags])
    )


def test_uniform_codes_are_the_buckets_of_independent_hashes_spread_over_minus_one_one() -> None:
    table = _table(num_hashes=64, buckets=11)
    codes = table.encode(torch.arange(20_000, dtype=torch.int64)).numpy()
    assert codes.dtype == np.float32 and codes.shape == (20_000, 64)
    levels = np.unique(codes)
    np.testing.assert_allclose(levels, np.linspace(-1, 1, 11), atol=1e-6)  # exactly M values
    counts = np.array([(codes == level).mean() for level in levels])
    np.testing.assert_allclose(counts, 1 / 11, atol=0.005)  # each bucket equally likely
    # hash functions are independent of each other: columns do not correlate
    correlation = np.corrcoef(codes[:, :8].T)
    assert np.abs(correlation - np.eye(8)).max() < 0.05


def test_gaussian_codes_are_standard_normal() -> None:
    codes = _table(num_hashes=64, transform=HashTransform.GAUSSIAN).encode(torch.arange(20_000)).numpy()
    assert abs(codes.mean()) < 0.01 and abs(codes.std() - 1) < 0.01
    assert abs((codes**4).mean() - 3) < 0.1  # the fourth moment of a normal
    assert np.isfinite(codes).all()


def test_codes_depend_on_the_id_and_the_seed_only() -> None:
    ids = torch.tensor([5, -1, 2**62, 5], dtype=torch.int64)
    first, again = _table().encode(ids), _table().encode(ids)
    assert torch.equal(first, again) and torch.equal(first[0], first[3])
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    assert not torch.equal(_table(seed=1).encode(ids), first)
    renamed = DeepHashEmbedding(DeepHashTableConfig("other", 4, ("f",), deep_hash=SMALL))
    assert not torch.equal(renamed.encode(ids), first), "each table has its own hash functions"


@pytest.mark.parametrize("pooling", [PoolingType.SUM, PoolingType.MEAN])
def test_bags_pool_the_decoded_codes_of_their_ids(pooling: PoolingType) -> None:
    torch.manual_seed(0)
    table = DeepHashEmbedding(DeepHashTableConfig("t", 4, ("a", "b"), pooling, SMALL)).eval()
    a, b = _bags([1, 2, 1], [], [3]), _bags([2], [4, 5], [])
    out = table({"a": a, "b": b})
    assert out.shape == (3, 8)

    def vector(i: int) -> torch.Tensor:
        return table.decoder(table.encode(torch.tensor([i])))[0]

    def pooled(bag: list[int]) -> torch.Tensor:
        if not bag:
            return torch.zeros(4)
        total = sum(vector(i) for i in bag)
        return total / len(bag) if pooling is PoolingType.MEAN else total

    expected = torch.stack(
        [torch.cat([pooled(x), pooled(y)]) for x, y in zip([[1, 2, 1], [], [3]], [[2], [4, 5], []])]
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_decoder_parameter_and_tiny_batches_train() -> None:
    table = _table()
    table({"f": _bags([1, 2], [3])}).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in table.parameters())
    # one distinct ID (batch norm cannot estimate a variance) and no ID at all still train
    for bags in (_bags([7], [7]), _bags([], [])):
        table.zero_grad()
        out = table({"f": bags})
        out.sum().backward()
        assert out.shape == (2, 4) and table.training
    assert torch.equal(table({"f": _bags([], [])}), torch.zeros(2, 4))


def test_parameters_and_flops_are_counted_as_built() -> None:
    for batch_norm in (True, False):
        table = _table(batch_norm=batch_norm)
        assert table.config.num_parameters == sum(p.numel() for p in table.parameters())
    assert SMALL.flops_per_id(4) == 6 * (32 * 16 + 16 * 8 + 8 * 4)


def test_collection_concatenates_tables_in_order_and_names_missing_features() -> None:
    torch.manual_seed(0)
    tables = DeepHashCollection(
        [DeepHashTableConfig("x", 3, ("b", "c"), deep_hash=SMALL), DeepHashTableConfig("y", 2, ("a",), deep_hash=SMALL)]
    )
    assert tables.feature_names == ("b", "c", "a") and tables.embedding_dims == (3, 3, 2)
    bags = {"a": _bags([1], [2]), "b": _bags([3], []), "c": _bags([], [4])}
    out = tables(bags)
    assert out.shape == (2, 8)
    torch.testing.assert_close(out[:, 6:], tables.tables["y"]({"a": bags["a"]}))
    with pytest.raises(ValueError, match=r"\['a'\] are missing"):
        tables({"b": bags["b"], "c": bags["c"]})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_hashes": 0}, "num_hashes must be >= 1"),
        ({"num_hashes": 7, "transform": HashTransform.GAUSSIAN}, "even for the gaussian"),
        ({"buckets": 1}, "buckets must be in"),
        ({"hidden_dims": (8, 0)}, "hidden_dims must all be >= 1"),
    ],
)
def test_bad_settings_name_the_key(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeepHashConfig(**settings)  # type: ignore[arg-type]
