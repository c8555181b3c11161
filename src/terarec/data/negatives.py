"""Batches of events followed by uniformly sampled negative items, for retrieval training.

A two-tower model trained on in-batch negatives only sees an item as a negative in proportion
to its popularity, so the tail of the catalogue is rarely pushed away from users. Mixing in
items drawn uniformly from the catalogue (Yang et al., "Mixed Negative Sampling for Learning
Two-tower Neural Networks in Recommendations", WWW 2020) covers it. The sampled items travel in
the same batch as the events, as extra rows whose user features are empty bags, so they are
looked up and trained by the same tables as the events' items.
"""

from __future__ import annotations

import numpy as np
import torch

from terarec.data.loader import BatchLoader
from terarec.data.types import Batch, ColumnarData
from terarec.sparse import JaggedTensor

__all__ = ["NegativeSamplingLoader", "concat_batches"]

# Keeps the negatives' random stream apart from the loader's permutation stream of the same seed.
_NEGATIVES_STREAM = 0x6E6567


def _concat_jagged(first: JaggedTensor, second: JaggedTensor) -> JaggedTensor:
    values = torch.cat([first.values, second.values])
    offsets = torch.cat([first.offsets, second.offsets[1:] + first.offsets[-1]])
    weights = None
    if first.weights is not None or second.weights is not None:
        weights = torch.cat([
            part.weights if part.weights is not None else torch.ones(part.values.shape[0], dtype=torch.float32)
            for part in (first, second)
        ])
    return JaggedTensor(values, offsets, weights)


def concat_batches(first: Batch, second: Batch) -> Batch:
    """The rows of ``first`` then those of ``second`` (same features; neither grouped).

    Example::

        >>> one = Batch(torch.ones(1), torch.zeros(1, 0), {"item": JaggedTensor(torch.tensor([7]), torch.tensor([0, 1]))})
        >>> two = Batch(torch.zeros(2), torch.zeros(2, 0), {"item": JaggedTensor(torch.tensor([8, 9]), torch.tensor([0, 1, 2]))})
        >>> both = concat_batches(one, two)
        >>> both.labels.tolist(), both.sparse["item"].offsets.tolist()
        ([1.0, 0.0, 0.0], [0, 1, 2, 3])
    """
    if first.groups is not None or second.groups is not None:
        raise ValueError("concat_batches: grouped batches cannot be concatenated")
    if first.sparse.keys() != second.sparse.keys():
        raise ValueError(f"concat_batches: features differ: {sorted(first.sparse)} vs {sorted(second.sparse)}")
    sparse = {name: _concat_jagged(first.sparse[name], second.sparse[name]) for name in first.sparse}
    return Batch(torch.cat([first.labels, second.labels]), torch.cat([first.dense, second.dense]), sparse)


class NegativeSamplingLoader(BatchLoader):
    """A :class:`~terarec.data.BatchLoader` whose every batch ends in ``num_negatives`` rows
    drawn uniformly, with replacement, from ``negatives`` (an item catalogue), labelled ``0``.

    The draw of batch ``b`` of epoch ``e`` on rank ``r`` depends only on ``seed``, ``e``, ``b``
    and ``r``, so a resumed run samples what an uninterrupted one would. Other arguments as
    :class:`~terarec.data.BatchLoader`.

    Args:
        negatives (ColumnarData): the rows to sample from, with the features of ``data``.
        num_negatives (int): rows appended to each batch.

    Shape:
        - a batch's labels: :math:`(B + M)`, ``M = num_negatives``, the sampled rows last

    Example::

        >>> from terarec.data import JaggedColumn, Schema
        >>> schema = Schema("y", (), ("item",))
        >>> def table(ids):
        ...     n = len(ids)
        ...     return ColumnarData(schema, np.ones(n, np.float32), np.zeros((n, 0), np.float32),
        ...                         {"item": JaggedColumn(np.array(ids, np.int64), np.arange(n + 1))})
        >>> loader = NegativeSamplingLoader(table([1, 2, 3]), 2, negatives=table([10, 11, 12, 13]),
        ...                                 num_negatives=3, shuffle=False)
        >>> batch = next(iter(loader.iterate(epoch=0)))
        >>> batch.labels.tolist(), batch.sparse["item"].values[:2].tolist()
        ([1.0, 1.0, 0.0, 0.0, 0.0], [1, 2])
        >>> bool((batch.sparse["item"].values[2:] >= 10).all())
        True
    """

    def __init__(self, data: ColumnarData, batch_size: int, *, negatives: ColumnarData, num_negatives: int,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1, prefetch: int = 2) -> None:
        super().__init__(data, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size, prefetch=prefetch)
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
            raise ValueError(f"NegativeSamplingLoader: num_negatives must be an integer >= 1, got {num_negatives!r}")
        if negatives.num_rows == 0:
            raise ValueError("NegativeSamplingLoader: negatives has no rows to sample")
        if negatives.schema != data.schema:
            raise ValueError(f"NegativeSamplingLoader: negatives' schema {negatives.schema} is not the data's {data.schema}")
        self.num_negatives = num_negatives
        self._negatives = BatchLoader(negatives, batch_size=1, shuffle=False, prefetch=0)

    def load_batch(self, epoch: int, order: np.ndarray, batch: int) -> Batch:
        events = super().load_batch(epoch, order, batch)
        rng = np.random.default_rng([self.seed, epoch, batch, self.rank, _NEGATIVES_STREAM])
        rows = rng.integers(0, self._negatives.data.num_rows, self.num_negatives, dtype=np.int64)
        sampled = self._negatives.make_batch(rows)
        sampled.labels.zero_()
        return concat_batches(events, sampled)
