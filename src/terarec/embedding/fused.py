"""Table-batched execution: several fixed tables run as one, like FBGEMM's table-batched
embeddings, while each table still owns its rows, optimizer state and ``step``.

:class:`EmbeddingCollection` groups the tables that can run together with
:func:`group_tables` and runs each :class:`TableGroup` with one numba call per phase
(:mod:`terarec.embedding._fused_kernels`) instead of one per table and phase; the other tables
keep the per-table path. Results are bit-identical to the per-table path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from terarec.embedding import _fused_kernels, _hashing
from terarec.embedding.config import (
    DataType,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
)
from terarec.embedding.row_mapping import HashedRowMapper
from terarec.embedding.storage import RamRowStorage
from terarec.embedding.table import FixedTable
from terarec.embedding.types import EmbeddingTable, PreparedIds
from terarec.sparse import JaggedTensor

__all__ = ["PreparedGroup", "TableGroup", "group_tables"]

_UPDATE = {
    OptimizerType.SGD: _fused_kernels.group_sgd_update,
    OptimizerType.ADAGRAD: _fused_kernels.group_adagrad_update,
    OptimizerType.ROWWISE_ADAGRAD: _fused_kernels.group_rowwise_adagrad_update,
    OptimizerType.ADAM: _fused_kernels.group_adam_update,
}

GroupSignature = tuple[int, PoolingType, OptimizerConfig, DataType, DataType]


@dataclass(frozen=True)
class PreparedGroup:
    """The IDs of one batch for every table of a :class:`TableGroup`, mapped to rows and
    de-duplicated, as concatenated arrays with per-table CSR boundaries (``T`` tables, ``N``
    IDs and ``U`` distinct (table, row) pairs over all of them).

    Attributes:
        key (tuple[tuple[str, int], ...]): ``(name, num_embeddings)`` per table, checked
            against the group that runs it.

    Shape:
        - rows: :math:`(N)` row of each ID in its table, tables one after another
        - value_offsets: :math:`(T + 1)` where each table's IDs start in ``rows``
        - offsets: :math:`(T, B + 1)` each table's bag boundaries, local to its IDs
        - unique_rows: :math:`(U)` each table's distinct rows, ascending
        - unique_offsets: :math:`(T + 1)` where each table's distinct rows start
        - occurrence_offsets: :math:`(U + 1)` CSR boundaries into ``occurrences``
        - occurrences: :math:`(N)` positions in ``rows``, grouped by (table, row)
        - bag_of: :math:`(N)` the bag of each position, local to its table
        - chunk_table, chunk_start: :math:`(C)` the update's parallel work items
    """

    key: tuple[tuple[str, int], ...]
    rows: np.ndarray
    value_offsets: np.ndarray
    offsets: np.ndarray
    unique_rows: np.ndarray
    unique_offsets: np.ndarray
    occurrence_offsets: np.ndarray
    occurrences: np.ndarray
    bag_of: np.ndarray
    chunk_table: np.ndarray
    chunk_start: np.ndarray

    def table_ids(self, index: int) -> PreparedIds:
        """Table ``index``'s share, as :meth:`FixedTable.prepare` would return it (copies)."""
        lo, hi = int(self.value_offsets[index]), int(self.value_offsets[index + 1])
        ulo, uhi = int(self.unique_offsets[index]), int(self.unique_offsets[index + 1])
        return PreparedIds(
            rows=self.rows[lo:hi].copy(),
            offsets=self.offsets[index].copy(),
            unique_rows=self.unique_rows[ulo:uhi].copy(),
            occurrence_offsets=self.occurrence_offsets[ulo : uhi + 1] - lo,
            occurrences=self.occurrences[lo:hi] - lo,
            bag_of=self.bag_of[lo:hi].copy(),
        )


def group_signature(table: EmbeddingTable) -> GroupSignature | None:
    """What tables must share to run in one group, or ``None`` if ``table`` cannot join one:
    only a :class:`FixedTable` with hashed rows in RAM, read by one feature."""
    if type(table) is not FixedTable or len(table.config.feature_names) != 1:
        return None
    if type(table._storage) is not RamRowStorage or type(table._mapper) is not HashedRowMapper:
        return None
    config = table.config
    return (config.embedding_dim, config.pooling, config.optimizer, config.weights_dtype, config.state_dtype)


class TableGroup:
    """Fixed tables of one embedding dim, pooling, optimizer config and storage dtypes, run as one.

    Each phase is one numba call for all ``T`` tables: :meth:`prepare` hashes and
    de-duplicates every table's IDs (serial by default, so it may run on a background thread),
    :meth:`lookup` pools every (table, bag) pair straight into the collection's
    :math:`(B, \\sum D)` output, and :meth:`apply_gradients` updates the distinct rows of all
    tables in load-balanced chunks, reading the gradient straight from :math:`(B, \\sum D)`.
    The tables keep their own arrays (the group holds typed lists of them, built once, and
    :meth:`FixedTable.load` copies into them in place) and their ``step`` counts.

    Args:
        tables (Sequence[FixedTable]): tables sharing one :func:`group_signature`.
        columns (Sequence[int]): first output column of each table's block.

    Attributes:
        tables (tuple[FixedTable, ...]): as given.
        feature_names (tuple[str, ...]): the feature of each table.

    Raises:
        ValueError: if the tables cannot run together.

    Example::

        >>> import torch
        >>> from terarec.embedding import EmbeddingTableConfig
        >>> # feature "a": bag 0: [1, 1]  bag 1: []     feature "b": bag 0: [5]  bag 1: [6, 7]
        >>> tables = [FixedTable(EmbeddingTableConfig(n, 50, 4, (n,))) for n in ("a", "b")]
        >>> group = TableGroup(tables, columns=[0, 4])
        >>> prepared = group.prepare({
        ...     "a": JaggedTensor(torch.tensor([1, 1]), torch.tensor([0, 2, 2])),
        ...     "b": JaggedTensor(torch.tensor([5, 6, 7]), torch.tensor([0, 1, 3])),
        ... })
        >>> prepared.unique_offsets.tolist()  # table a has 1 distinct row, table b 3
        [0, 1, 4]
        >>> out = np.zeros((2, 8), dtype=np.float32)
        >>> group.lookup(prepared, out)
        >>> bool((out[1, :4] == 0).all()), bool((out[0, :4] == 2 * tables[0].weights[prepared.rows[0]]).all())
        (True, True)
        >>> group.apply_gradients(prepared, np.ones((2, 8), dtype=np.float32))
        >>> tables[0].step, tables[1].step
        (1, 1)
    """

    def __init__(self, tables: Sequence[FixedTable], columns: Sequence[int]) -> None:
        self.tables = tuple(tables)
        signatures = {group_signature(table) for table in self.tables}
        if not self.tables or len(signatures) != 1 or None in signatures:
            raise ValueError(f"tables {[t.config.name for t in self.tables]} cannot run as one group")
        if len(columns) != len(self.tables):
            raise ValueError(f"need one column per table, got {len(columns)} for {len(self.tables)} tables")
        config = self.tables[0].config
        self.feature_names = tuple(table.config.feature_names[0] for table in self.tables)
        self.key = tuple((table.config.name, table.num_embeddings) for table in self.tables)
        self._columns = np.asarray(columns, dtype=np.int64)
        self._num_embeddings = np.array([table.num_embeddings for table in self.tables], dtype=np.int64)
        self._is_mean = config.pooling is PoolingType.MEAN
        self._optimizer = config.optimizer
        self._update = _UPDATE[config.optimizer.type]
        self._rates = np.full(len(self.tables), float(config.optimizer.learning_rate))
        # Rounding seeds cost ~1.4 us a table a step; float32 kernels ignore them.
        self._rounds = DataType.BF16 in (config.weights_dtype, config.state_dtype)
        self._unused_seeds = np.zeros(len(self.tables), dtype=np.uint64)
        # Built once: a typed List per call would cost more than the fusion saves.
        self._weights = numba.typed.List([table._storage.weights for table in self.tables])
        self._states = numba.typed.List([table._storage.state for table in self.tables])

    def prepare(self, sparse: Mapping[str, JaggedTensor], parallel: bool = False) -> PreparedGroup:
        """Maps and de-duplicates the IDs of every table's feature. The caller (the collection)
        has checked that each feature is a :class:`~terarec.sparse.JaggedTensor` of ``B`` bags.
        ``parallel`` spreads the tables over numba's threads, with the same result; leave it
        off on a thread that runs beside the lookup and update kernels.

        Raises:
            ValueError: if a feature's offsets decrease.
        """
        features = [sparse[name] for name in self.feature_names]
        offsets = np.stack([jagged.offsets.numpy() for jagged in features])
        if offsets.shape[1] > 1:
            bad = (offsets[:, 1:] < offsets[:, :-1]).any(axis=1)
            if bad.any():
                name = self.feature_names[int(np.argmax(bad))]
                raise ValueError(f"sparse feature {name!r}: offsets must be non-decreasing")
        values = np.concatenate([jagged.values.numpy() for jagged in features])
        value_offsets = np.zeros(len(features) + 1, dtype=np.int64)
        np.cumsum(offsets[:, -1], out=value_offsets[1:])
        n = values.shape[0]
        rows, occurrences, scratch, unique_rows, bag_of, chunk_table, chunk_start = np.empty((7, n), dtype=np.int64)
        occurrence_offsets = np.empty(n + len(features) + 1, dtype=np.int64)
        unique_offsets = np.empty(len(features) + 1, dtype=np.int64)
        arrays = (
            values, value_offsets, offsets, self._num_embeddings, rows, occurrences, scratch,
            unique_rows, unique_offsets, occurrence_offsets, bag_of, chunk_table, chunk_start,
        )  # fmt: skip
        if parallel:
            chunks = _fused_kernels.prepare_group_parallel(*arrays, min(numba.get_num_threads(), len(features)))
        else:
            chunks = _fused_kernels.prepare_group(*arrays)
        u = int(unique_offsets[-1])
        return PreparedGroup(
            self.key, rows, value_offsets, offsets, unique_rows[:u], unique_offsets,
            occurrence_offsets[: u + 1], occurrences, bag_of, chunk_table[:chunks], chunk_start[:chunks],
        )  # fmt: skip

    def _check(self, prepared: PreparedGroup) -> None:
        if not isinstance(prepared, PreparedGroup) or prepared.key != self.key:
            raise ValueError(f"prepared IDs are not for the table group {[name for name, _ in self.key]}")

    def lookup(self, prepared: PreparedGroup, out: np.ndarray) -> None:
        """Writes each table's pooled bags into its column block of ``out``,
        :math:`(B, \\sum D)` C-contiguous ``float32`` (checked by the caller)."""
        self._check(prepared)
        _fused_kernels.group_lookup(
            self._weights, prepared.rows, prepared.value_offsets, prepared.offsets, self._columns, self._is_mean, out
        )

    def apply_gradients(self, prepared: PreparedGroup, grad: np.ndarray) -> None:
        """Applies the fused optimizer of every table to its column block of ``grad``,
        :math:`(B, \\sum D)` C-contiguous ``float32`` (checked by the caller)."""
        self._check(prepared)
        opt = self._optimizer
        for table in self.tables:
            table.step += 1
        rates = self._rates
        seeds = self._unused_seeds
        if self._rounds:
            seeds = np.array([_hashing.step_rounding_seed(t._table_seed, t.step) for t in self.tables], dtype=np.uint64)
        if opt.type is OptimizerType.ADAM:  # each table's own bias correction, as FixedTable
            lr = float(opt.learning_rate)
            rates = np.array(
                [lr * math.sqrt(1.0 - opt.beta2**t.step) / (1.0 - opt.beta1**t.step) for t in self.tables]
            )
        self._update(
            self._weights, self._states, prepared.chunk_table, prepared.chunk_start,
            prepared.unique_offsets, prepared.unique_rows, prepared.occurrence_offsets, prepared.occurrences,
            prepared.bag_of, grad, self._columns, prepared.offsets, self._is_mean, seeds, rates,
            float(opt.eps), float(opt.beta1), float(opt.beta2),
        )  # fmt: skip

    def __repr__(self) -> str:
        dim, pooling, opt, _, _ = group_signature(self.tables[0])
        return (
            f"TableGroup(tables={[name for name, _ in self.key]}, embedding_dim={dim}, "
            f"pooling={pooling.value}, optimizer={opt.type.value})"
        )


def group_tables(tables: Sequence[EmbeddingTable]) -> tuple[list[TableGroup], list[tuple[EmbeddingTable, int]]]:
    """Splits ``tables`` (in output order) into groups that run as one and the tables that
    run alone, each of the latter with its first output column.

    Example::

        >>> from terarec.embedding import EmbeddingTableConfig
        >>> configs = [EmbeddingTableConfig("a", 10, 4, ("a",)), EmbeddingTableConfig("b", 10, 8, ("b",)),
        ...            EmbeddingTableConfig("c", 10, 4, ("c",)), EmbeddingTableConfig("d", 10, 4, ("d", "e"))]
        >>> groups, alone = group_tables([FixedTable(c) for c in configs])
        >>> [g.feature_names for g in groups], [(t.config.name, column) for t, column in alone]
        ([('a', 'c'), ('b',)], [('d', 16)])
    """
    buckets: dict[GroupSignature, tuple[list[FixedTable], list[int]]] = {}
    alone = []
    column = 0
    for table in tables:
        signature = group_signature(table)
        if signature is None:
            alone.append((table, column))
        else:
            members, columns = buckets.setdefault(signature, ([], []))
            members.append(table)
            columns.append(column)
        column += len(table.config.feature_names) * table.embedding_dim
    return [TableGroup(members, columns) for members, columns in buckets.values()], alone
