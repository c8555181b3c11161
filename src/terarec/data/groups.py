"""Grouped data for learning to rank: rows of one query together, batches of whole queries.

With ``data.group_col``, each row belongs to a query (a search, a user's session, a page): the
rows a ranking loss compares. :func:`group_rows` takes the group column out of the features
and reorders the rows so that each group's rows are contiguous (groups in order of first
appearance, rows in file order within a group); splits then cut between groups
(:func:`group_boundary`), and :class:`GroupedBatchLoader` packs whole groups into batches.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from terarec.data.loader import BatchLoader, gather_jagged
from terarec.data.types import Batch, ColumnarData, Schema
from terarec.errors import DataError

__all__ = ["GroupedBatchLoader", "group_boundary", "group_rows", "take_rows"]


def take_rows(data: ColumnarData, rows: np.ndarray) -> ColumnarData:
    """Rows ``rows`` of ``data``, in that order, into RAM."""
    sparse = {name: gather_jagged(column, rows) for name, column in data.sparse.items()}
    groups = None if data.groups is None else np.asarray(data.groups)[rows]
    return ColumnarData(data.schema, np.asarray(data.labels)[rows], np.asarray(data.dense)[rows], sparse,
                        data.skipped_rows, data.source, groups)


def group_rows(data: ColumnarData, column: str) -> ColumnarData:
    """``data`` grouped by its sparse feature ``column``: the column becomes ``groups`` (and leaves
    the features), and rows are reordered so that each group's rows are contiguous.

    Raises:
        DataError: when ``column`` is not a feature of one value per row.

    Example::

        >>> from terarec.data import JaggedColumn
        >>> ids = JaggedColumn(np.array([7, 8, 7]), np.arange(4))
        >>> items = JaggedColumn(np.array([1, 2, 3]), np.arange(4))
        >>> data = ColumnarData(Schema("y", (), ("q", "item")), np.array([2.0, 0.0, 1.0], np.float32),
        ...                     np.zeros((3, 0), np.float32), {"q": ids, "item": items})
        >>> grouped = group_rows(data, "q")
        >>> grouped.groups.tolist(), grouped.labels.tolist(), grouped.schema.sparse_features
        ([7, 7, 8], [2.0, 1.0, 0.0], ('item',))
    """
    if column not in data.sparse:
        raise DataError(f"{data.source}: data.group_col {column!r} is not a column of the data "
                        f"(sparse columns: {', '.join(data.schema.sparse_features)})")
    ids = data.sparse[column]
    lengths = np.diff(np.asarray(ids.offsets))
    if (lengths != 1).any():
        row = int(np.flatnonzero(lengths != 1)[0])
        raise DataError(f"{data.source}: row {row + 1}: data.group_col {column!r} must hold one value per row, got {lengths[row]}")
    groups = np.asarray(ids.values, np.int64)
    _, first_row, group_index = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first_row[group_index], kind="stable")
    schema = Schema(data.schema.label, data.schema.dense_features,
                    tuple(name for name in data.schema.sparse_features if name != column))
    kept = {name: col for name, col in data.sparse.items() if name != column}
    return take_rows(replace(data, schema=schema, sparse=kept, groups=groups), order)


def group_boundary(groups: np.ndarray, row: int) -> int:
    """The first row at or after ``row`` where a group starts (``len(groups)`` when none does).

    Example::

        >>> group_boundary(np.array([1, 1, 2, 2, 2, 3]), 3), group_boundary(np.array([1, 1, 2]), 3)
        (5, 3)
    """
    if row <= 0:
        return 0
    starts = np.flatnonzero(groups[1:] != groups[:-1]) + 1
    position = int(np.searchsorted(starts, row))
    return int(starts[position]) if position < len(starts) else len(groups)


class GroupedBatchLoader(BatchLoader):
    """Batches of whole groups: consecutive groups packed into batches of at most ``batch_size``
    rows, fixed for the run; an epoch visits the batches in a seeded random order (or in order
    without shuffling). Each batch carries its rows' ``groups`` (``0 .. G - 1``).

    Arguments as :class:`~terarec.data.BatchLoader`, with one rank: ``order(epoch)`` is the
    order of the batches, and ``rows_of`` a batch's rows.

    Raises:
        DataError: when a group has more rows than ``batch_size``, naming it.

    Example::

        >>> from terarec.data import JaggedColumn
        >>> data = ColumnarData(Schema("y", (), ("item",)), np.zeros(5, np.float32), np.zeros((5, 0), np.float32),
        ...                     {"item": JaggedColumn(np.arange(5), np.arange(6))}, groups=np.array([4, 4, 5, 6, 6]))
        >>> loader = GroupedBatchLoader(data, batch_size=3, shuffle=False)
        >>> [(b.batch_size, b.groups.tolist()) for b in loader.iterate(epoch=0)]
        [(3, [0, 0, 1]), (2, [0, 0])]
    """

    def __init__(self, data: ColumnarData, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, prefetch: int = 2) -> None:
        super().__init__(data, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                         world_size=world_size, prefetch=prefetch)
        if data.groups is None:
            raise ValueError("GroupedBatchLoader needs data with groups (data.group_col)")
        if world_size != 1:
            raise ValueError("GroupedBatchLoader runs on one rank")
        groups = np.asarray(data.groups)
        starts = np.concatenate([[0], np.flatnonzero(groups[1:] != groups[:-1]) + 1, [len(groups)]]).astype(np.int64)
        sizes = np.diff(starts)
        if len(sizes) and sizes.max() > batch_size:
            big = int(np.argmax(sizes))
            raise DataError(f"{data.source}: the group starting at row {starts[big] + 1} has {sizes[big]} rows, "
                            f"more than a batch of {batch_size}; raise train.batch_size (a group is never split)")
        # Greedy packing in row order: a new batch starts where the next group would overflow.
        batch_starts = [0]
        for start, end in zip(starts[:-1], starts[1:]):
            if end - batch_starts[-1] > batch_size:
                batch_starts.append(int(start))
        self._batch_starts = np.array([*batch_starts, len(groups)] if len(groups) else [0], np.int64)
        self.num_batches = len(self._batch_starts) - 1

    def order(self, epoch: int) -> np.ndarray:
        """The order of the batches in ``epoch``."""
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.num_batches).astype(np.int64)
        return np.arange(self.num_batches, dtype=np.int64)

    def rows_of(self, order: np.ndarray, batch: int) -> np.ndarray:
        """The rows of the ``batch``-th batch of ``order``."""
        packed = int(order[batch])
        return np.arange(self._batch_starts[packed], self._batch_starts[packed + 1], dtype=np.int64)

    def make_batch(self, rows: np.ndarray) -> Batch:
        batch = super().make_batch(rows)
        groups = np.asarray(self.data.groups)[rows]
        starts = np.concatenate([[False], groups[1:] != groups[:-1]])
        return replace(batch, groups=torch.from_numpy(np.cumsum(starts).astype(np.int64)))
