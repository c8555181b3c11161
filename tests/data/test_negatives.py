"""Uniformly sampled negatives: appended after the events, labelled 0, drawn from the catalogue
by a stream that depends only on seed, epoch, batch and rank (so resume samples the same)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terarec.data import Batch, BatchLoader, ColumnarData, JaggedColumn, NegativeSamplingLoader, Schema, concat_batches
from terarec.sparse import JaggedTensor

SCHEMA = Schema("y", (), ("user", "item"))


def _table(users: list[list[int]], items: list[int]) -> ColumnarData:
    lengths = [len(u) for u in users]
    user_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    user_values = np.array([i for u in users for i in u], np.int64)
    n = len(items)
    return ColumnarData(SCHEMA, np.ones(n, np.float32), np.zeros((n, 0), np.float32), {
        "user": JaggedColumn(user_values, user_offsets),
        "item": JaggedColumn(np.array(items, np.int64), np.arange(n + 1, dtype=np.int64)),
    })


EVENTS = _table([[u] for u in range(10)], list(range(100, 110)))
CATALOGUE = _table([[] for _ in range(50)], list(range(1000, 1050)))


def _loader(**options: object) -> NegativeSamplingLoader:
    settings = {"shuffle": True, "seed": 3, "prefetch": 0, **options}
    return NegativeSamplingLoader(EVENTS, 4, negatives=CATALOGUE, num_negatives=6, **settings)  # type: ignore[arg-type]


def test_each_batch_is_its_events_then_the_sampled_items() -> None:
    loader = _loader()
    plain = [b.sparse["item"].values.tolist() for b in BatchLoader(EVENTS, 4, seed=3, prefetch=0).iterate(0)]
    batches = list(loader.iterate(epoch=0))
    assert [b.batch_size for b in batches] == [10, 10, 8]
    for batch, events in zip(batches, plain):
        items = batch.sparse["item"].values.tolist()
        assert items[:len(events)] == events
        assert all(1000 <= i < 1050 for i in items[len(events):])
        assert batch.labels.tolist() == [1.0] * len(events) + [0.0] * 6
        users = batch.sparse["user"]
        assert users.offsets[len(events):].tolist() == [len(events)] * 7  # sampled rows: empty user bags


def test_the_draw_depends_on_seed_epoch_batch_and_rank_only() -> None:
    def draws(loader: NegativeSamplingLoader, epoch: int, start: int = 0) -> list[list[int]]:
        return [b.sparse["item"].values[-6:].tolist() for b in loader.iterate(epoch, start)]

    first = draws(_loader(), 0)
    assert draws(_loader(), 0) == first
    assert draws(_loader(), 0, start=1) == first[1:]  # a resumed run samples what a straight one would
    assert draws(_loader(prefetch=2), 0) == first
    assert draws(_loader(), 1) != first
    assert draws(_loader(seed=4), 0) != first
    assert first[0] != first[1]
    rank0 = draws(_loader(world_size=2, rank=0), 0)
    rank1 = draws(_loader(world_size=2, rank=1), 0)
    assert rank0 != rank1


def test_sampling_covers_the_catalogue_uniformly() -> None:
    loader = NegativeSamplingLoader(EVENTS, 10, negatives=CATALOGUE, num_negatives=1000, prefetch=0)
    counts = np.bincount(loader.load_batch(0, loader.order(0), 0).sparse["item"].values[10:].numpy() - 1000, minlength=50)
    assert counts.min() > 0 and counts.sum() == 1000
    # 1000 draws over 50 items: a chi-square of 49 degrees of freedom, far inside its 99.9% bound (85.4)
    assert ((counts - 20.0) ** 2 / 20.0).sum() < 85.4


def test_concat_batches_keeps_weights_and_refuses_mismatches() -> None:
    one = Batch(torch.ones(1), torch.zeros(1, 0), {"f": JaggedTensor(torch.tensor([1, 2]), torch.tensor([0, 2]), torch.tensor([0.5, 2.0]))})
    two = Batch(torch.zeros(1), torch.zeros(1, 0), {"f": JaggedTensor(torch.tensor([3]), torch.tensor([0, 1]))})
    both = concat_batches(one, two)
    assert both.sparse["f"].values.tolist() == [1, 2, 3] and both.sparse["f"].offsets.tolist() == [0, 2, 3]
    assert both.sparse["f"].weights.tolist() == [0.5, 2.0, 1.0]
    other = Batch(torch.zeros(1), torch.zeros(1, 0), {"g": JaggedTensor(torch.tensor([3]), torch.tensor([0, 1]))})
    with pytest.raises(ValueError, match="features differ"):
        concat_batches(one, other)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="num_negatives must be an integer >= 1"):
        NegativeSamplingLoader(EVENTS, 4, negatives=CATALOGUE, num_negatives=0)
    with pytest.raises(ValueError, match="no rows to sample"):
        NegativeSamplingLoader(EVENTS, 4, negatives=CATALOGUE.slice_rows(0, 0), num_negatives=2)
    other = ColumnarData(Schema("y", (), ("item",)), np.ones(1, np.float32), np.zeros((1, 0), np.float32),
                         {"item": JaggedColumn(np.array([1]), np.array([0, 1]))})
    with pytest.raises(ValueError, match="schema"):
        NegativeSamplingLoader(EVENTS, 4, negatives=other, num_negatives=2)
