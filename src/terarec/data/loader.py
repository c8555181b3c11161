"""A deterministic, rank-sharded batch loader with background prefetch.

The order of examples depends only on ``seed``, the epoch and ``world_size``: epoch ``e``
visits rows in the order ``np.random.default_rng([seed, e]).permutation(R)`` (or ``0..R-1``
without shuffling); global batch ``b`` covers positions
``[b * batch_size * world_size, (b + 1) * batch_size * world_size)`` of that order and rank
``r`` takes the ``r``-th slice of ``batch_size`` of it. So a run resumed at batch ``k``
(``iterate(epoch, start_batch=k)``) sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from terarec._background import iterate_in_background
from terarec.data import _kernels
from terarec.data.types import Batch, ColumnarData, JaggedColumn
from terarec.sparse import JaggedTensor

__all__ = ["BatchLoader", "gather_jagged"]


def gather_jagged(column: JaggedColumn, rows: np.ndarray) -> JaggedColumn:
    """The bags ``rows`` of a jagged column, in that order, into freshly allocated arrays.

    Args:
        column (JaggedColumn): the source column (in RAM or memory-mapped).
        rows (np.ndarray): ``int64`` row indices, each in ``[0, R)``.

    Shape:
        - rows: :math:`(B)`
        - output: ``offsets`` :math:`(B + 1)`

    Example::

        >>> # bag 0: [5, 6]   bag 1: []   bag 2: [7]
        >>> col = JaggedColumn(np.array([5, 6, 7]), np.array([0, 2, 2, 3]))
        >>> out = gather_jagged(col, np.array([2, 0, 1]))
        >>> out.values.tolist(), out.offsets.tolist()
        ([7, 5, 6], [0, 1, 3, 3])
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    offsets = np.empty(rows.shape[0] + 1, dtype=np.int64)
    _kernels.gather_lengths(column.offsets, rows, offsets)
    values = np.empty(int(offsets[-1]), dtype=np.int64)
    _kernels.gather_values(column.values, column.offsets, rows, offsets, values)
    weights = None
    if column.weights is not None:
        weights = np.empty(int(offsets[-1]), dtype=np.float32)
        _kernels.gather_values(column.weights, column.offsets, rows, offsets, weights)
    return JaggedColumn(values, offsets, weights)


class BatchLoader:
    """Iterates over a :class:`ColumnarData` in :class:`Batch` es, one rank's share of each.

    A background thread gathers up to ``prefetch`` batches ahead (rows are copied into new
    arrays with a numba kernel, which releases the GIL), so loading overlaps training.
    The ordering rules are in the module docstring. The last, partial global batch is kept
    unless ``drop_last``; on it, rank ``r`` still takes positions ``[r * B, (r + 1) * B)``,
    so some ranks may get fewer rows (or none) there.

    Args:
        data (ColumnarData): the dataset, in RAM or memory-mapped.
        batch_size (int): examples per batch per rank (``B``).
        shuffle (bool, optional): a new permutation each epoch. Default: ``True``
        seed (int, optional): the permutations' seed. Default: ``0``
        drop_last (bool, optional): drop the last partial global batch. Default: ``False``
        rank (int, optional): this process's rank. Default: ``0``
        world_size (int, optional): number of ranks. Default: ``1``
        prefetch (int, optional): batches prepared ahead; ``0`` prepares them in the caller.
            Default: ``2``

    Attributes:
        num_batches (int): batches per epoch (the same on every rank).

    Example::

        >>> from terarec.data import SyntheticConfig, generate_synthetic
        >>> data = generate_synthetic(SyntheticConfig(num_examples=10, num_eval_examples=1, num_sparse=2)).train
        >>> loader = BatchLoader(data, batch_size=4, shuffle=False)
        >>> loader.num_batches, [b.batch_size for b in loader.iterate(epoch=0)]
        (3, [4, 4, 2])
        >>> batch = next(iter(loader.iterate(epoch=0, start_batch=2)))
        >>> batch.dense.shape, batch.sparse["C1"].offsets.tolist()
        (torch.Size([2, 13]), [0, 1, 2])
    """

    def __init__(self, data: ColumnarData, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, prefetch: int = 2) -> None:
        for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1),
                                 ("prefetch", prefetch, 0), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"BatchLoader: {name} must be an integer >= {low}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"BatchLoader: rank must be in [0, world_size={world_size}), got {rank!r}")
        self.data = data
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size, self.prefetch = rank, world_size, prefetch
        global_batch = batch_size * world_size
        rows = data.num_rows
        self.num_batches = rows // global_batch if drop_last else -(-rows // global_batch)

    def order(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch`` (all ranks), ``int64`` of shape :math:`(R)`."""
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.data.num_rows).astype(np.int64)
        return np.arange(self.data.num_rows, dtype=np.int64)

    def rows_of(self, order: np.ndarray, batch: int) -> np.ndarray:
        """This rank's rows of global batch ``batch``, given the epoch's ``order``."""
        start = (batch * self.world_size + self.rank) * self.batch_size
        return order[start:start + self.batch_size]

    def make_batch(self, rows: np.ndarray) -> Batch:
        """Gathers ``rows`` into a :class:`Batch` of new tensors."""
        data = self.data
        sparse = {}
        for name in data.schema.sparse_features:
            col = gather_jagged(data.sparse[name], rows)
            weights = None if col.weights is None else torch.from_numpy(col.weights)
            sparse[name] = JaggedTensor(torch.from_numpy(col.values), torch.from_numpy(col.offsets), weights)
        # Float inputs go into torch-allocated (64-byte aligned) buffers, so the dense network's
        # MKL kernels see the same alignment every run (Intel documents alignment-dependent
        # rounding without CNR mode). A precaution: a resume mismatch once blamed on this was
        # caused by LLVM reassociation in the embedding kernels (see embedding/_compile_flags.py).
        labels = torch.empty(rows.shape[0], dtype=torch.float32)
        dense = torch.empty((rows.shape[0], data.dense.shape[1]), dtype=torch.float32)
        np.take(data.labels, rows, out=labels.numpy())
        np.take(data.dense, rows, axis=0, out=dense.numpy())
        return Batch(labels, dense, sparse)

    def load_batch(self, epoch: int, order: np.ndarray, batch: int) -> Batch:
        """This rank's batch ``batch`` of ``epoch``, whose row order is ``order``."""
        return self.make_batch(self.rows_of(order, batch))

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Yields this rank's batches ``start_batch, ..., num_batches - 1`` of ``epoch``.

        Stopping early (``break``, or dropping the generator) stops the background thread;
        an exception raised while preparing a batch is re-raised here.

        Args:
            epoch (int): the epoch, which picks the permutation.
            start_batch (int, optional): the first batch, to resume mid-epoch. Default: ``0``
        """
        if isinstance(start_batch, bool) or not isinstance(start_batch, int) or not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"BatchLoader.iterate: start_batch must be in [0, {self.num_batches}], got {start_batch!r}")
        order = self.order(epoch)
        batches = range(start_batch, self.num_batches)
        if self.prefetch == 0:
            for b in batches:
                yield self.load_batch(epoch, order, b)
            return
        yield from iterate_in_background(
            (self.load_batch(epoch, order, b) for b in batches), self.prefetch, "terarec-batch-prefetch"
        )
