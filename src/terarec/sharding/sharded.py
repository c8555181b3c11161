"""Embedding tables sharded over ``torch.distributed`` ranks: per table, table-wise, row-wise,
table-row-wise, column-wise or data-parallel, behind the ``prepare`` / ``lookup`` /
``apply_gradients`` interface of an :class:`~terarec.embedding.EmbeddingCollection`.

Each table is cut into pieces, each held by one rank:

- **table-wise**: one piece, the whole table (any kind: fixed, dynamic, tiered);
- **row-wise**: one piece per rank of a contiguous range of rows (a fixed in-RAM table); the
  sender hashes each ID to its row, and the rank holding that row gets it;
- **table-row-wise** (TorchRec's TWRW): row-wise over every rank of one host (ranks
  ``h * local_size ...``), but the partial sums are added up inside the host before they
  leave it (below);
- **column-wise**: one piece per rank of a contiguous range of every row's columns (a fixed
  in-RAM table with an element-wise optimizer); each gets all the table's IDs;
- **data-parallel**: a whole replica on every rank (a small fixed in-RAM table; see
  :mod:`terarec.sharding.replicated`): looked up locally, its row gradients all-reduced.

A step makes three exchanges, each one ``all_to_all`` (TorchRec's pattern): (1) every rank sends
the bags of its local batch to the pieces that read them, and each piece prepares the global
batch, bags of rank 0 first; (2) each piece pools the global batch and returns every rank the
rows of its own examples: whole rows from table-wise pieces, their columns from column-wise
ones, partial sums from row-wise ones, which the receiver adds up (the reduce-scatter); (3) in
backward each rank sends its examples' gradients to every piece of the table, and each piece
applies its fused optimizer once for the global batch, with gradients averaged over ranks as
DDP averages dense ones. Row-wise and table-row-wise pieces pool by sum; the receiver divides
for mean pooling. Pooled rows and gradients may travel in bf16 or fp16.

Table-row-wise tables add one ``all_to_all`` to each direction, between the ranks of a host
(:mod:`terarec.sharding.host_stage`): forward, the host's owners add up their partial sums
before (2), so one pooled row per bag leaves the host, not one per owner; backward, the owner
that served a bag forwards its gradient to the other owners of its host after (3).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from terarec.embedding import (
    EmbeddingCollection,
    EmbeddingTableConfig,
    OptimizerType,
    PooledEmbeddings,
    PoolingType,
    PreparedBatch,
)
from terarec.embedding.collection import load_tables, save_tables
from terarec.embedding.dynamic_table import DynamicTable
from terarec.embedding.row_mapping import HashedRowMapper
from terarec.embedding.shards import ColumnShardTable, RowShardTable
from terarec.embedding.table import FixedTable
from terarec.embedding.types import EmbeddingTable, PreparedIds
from terarec.sharding.config import CommPrecision, ShardingType
from terarec.sharding.host_stage import HostStage
from terarec.sharding.replicated import ReplicatedTables
from terarec.sparse import JaggedTensor

__all__ = [
    "EXECUTED_TYPES",
    "SPLIT_TYPES",
    "ShardedEmbeddingCollection",
    "ShardedPreparedBatch",
    "TableSharding",
    "executable_types",
]

_WIRE_DTYPE = {CommPrecision.FP32: torch.float32, CommPrecision.BF16: torch.bfloat16, CommPrecision.FP16: torch.float16}
EXECUTED_TYPES = (
    ShardingType.TABLE_WISE,
    ShardingType.ROW_WISE,
    ShardingType.TABLE_ROW_WISE,
    ShardingType.COLUMN_WISE,
    ShardingType.DATA_PARALLEL,
)
_ROW_TYPES = (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE)  # pieces are row blocks, prepared with rows
SPLIT_TYPES = (*_ROW_TYPES, ShardingType.COLUMN_WISE)
"""The types that cut a table into one block per rank of its ``ranks`` (the others keep it whole)."""
_TWRW = ShardingType.TABLE_ROW_WISE


def executable_types(table: EmbeddingTableConfig) -> tuple[ShardingType, ...]:
    """The sharding types training runs for ``table``: dynamic and tiered tables only whole
    (their rows move), row-wise Adagrad not column-wise (its state spans the columns).

    Example::

        >>> [t.value for t in executable_types(EmbeddingTableConfig("t", 10, 4, ("f",)))]
        ['table_wise', 'row_wise', 'table_row_wise', 'data_parallel']
    """
    if table.dynamic is not None or table.tiered is not None:
        return (ShardingType.TABLE_WISE,)
    if table.optimizer.type is OptimizerType.ROWWISE_ADAGRAD:
        return tuple(t for t in EXECUTED_TYPES if t is not ShardingType.COLUMN_WISE)
    return EXECUTED_TYPES


@dataclass(frozen=True)
class TableSharding:
    """How one table is spread over the ranks.

    Args:
        sharding_type (ShardingType): table-wise, row-wise, table-row-wise, column-wise or
            data-parallel.
        ranks (tuple[int, ...]): the rank of a table-wise table; the ranks holding the row
            (column) ranges of a row-wise (column-wise) one, in order; every rank of one host,
            in the order of their row ranges, for a table-row-wise one; every rank for a
            data-parallel one. Ranges are near-equal, the first ones one longer.

    Example::

        >>> TableSharding(ShardingType.ROW_WISE, (0, 1)).ranks
        (0, 1)
    """

    sharding_type: ShardingType
    ranks: tuple[int, ...]


@dataclass(frozen=True)
class _Piece:
    table: EmbeddingTableConfig
    sharding_type: ShardingType
    index: int  # of the piece within its table
    rank: int
    first_row: int
    num_rows: int
    first_column: int
    num_columns: int
    column: int  # first column of the table in the pooled output

    @property
    def width(self) -> int:
        """Pooled columns of this piece: features x its columns."""
        return len(self.table.feature_names) * self.num_columns


@dataclass(frozen=True)
class ShardedPreparedBatch:
    """A batch prepared by :meth:`ShardedEmbeddingCollection.prepare`.

    Attributes:
        local (PreparedBatch | None): this rank's pieces prepared for the global batch
            (``None`` when it holds none).
        replicas (list[PreparedIds]): this rank's own bags of each data-parallel table.
        batch_sizes (tuple[int, ...]): every rank's local batch size, in rank order.
        mean_divisors (dict[str, torch.Tensor]): per feature of a (table-)row-wise mean-pooled table,
            its local bags' lengths (at least 1), :math:`(B_r, 1)`.
    """

    local: PreparedBatch | None
    batch_sizes: tuple[int, ...]
    mean_divisors: dict[str, torch.Tensor]
    replicas: list[PreparedIds]

    @property
    def global_batch_size(self) -> int:
        """Examples of the step over all ranks."""
        return sum(self.batch_sizes)


class ShardedEmbeddingCollection:
    """An :class:`~terarec.embedding.EmbeddingCollection` spread over ranks, with its interface.

    Every rank passes its own local batch and gets back the pooled embeddings of its own
    examples, :math:`(B_r, \\sum_f D_f)`, columns in the feature order an unsharded collection
    of the same ``tables`` has. ``W`` ranks with local batches ``B_r`` train the tables as one
    process would with the concatenated batch: bit for bit in fp32 for table-wise and
    data-parallel tables when ``W`` is a power of two, up to float summation order for
    row-wise and table-row-wise ones. Collective calls must come in the same order on every
    rank. Checkpoints (:meth:`save`) have the layout of an unsharded collection, whatever the
    placement, so any world size and placement (or one process) loads them.

    Args:
        tables (Sequence[EmbeddingTableConfig]): every table, the same list on every rank.
        shardings (Mapping[str, TableSharding]): how each table is spread.
        seed (int, optional): global seed; a row's initial value does not depend on the
            placement. Default: ``0``
        directory (Path, optional): where this rank's tiered tables keep their files. Default: ``None``
        comm_precision (CommPrecision, optional): pooled rows and gradients on the wire.
            Default: ``CommPrecision.FP32``
        group (dist.ProcessGroup, optional): the group of :meth:`lookup`, :meth:`save` and
            :meth:`counters`; ``None`` is the default group. Default: ``None``
        prepare_group (dist.ProcessGroup, optional): the group of :meth:`prepare`, so it can
            run on a background thread; ``None`` means ``group``. Default: ``None``
        apply_group (dist.ProcessGroup, optional): the group of :meth:`apply_gradients` (a
            background thread's in hybrid training); ``None`` means ``group``. Default: ``None``
        local_size (int, optional): ranks per host: host ``h`` is ranks ``h * local_size ...``,
            which a table-row-wise table spans (:attr:`World.local_size
            <terarec.train.distributed.World>` in training; a test may pretend). ``None`` is one
            host of every rank. Default: ``None``

    Shape:
        - :meth:`prepare` input: per feature a :class:`~terarec.sparse.JaggedTensor` of ``B_r`` bags
        - :meth:`lookup` values and the ``grad`` of :meth:`apply_gradients`: :math:`(B_r, \\sum_f D_f)`
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingTableConfig],
        shardings: Mapping[str, TableSharding],
        seed: int = 0,
        directory: Path | None = None,
        comm_precision: CommPrecision = CommPrecision.FP32,
        group: dist.ProcessGroup | None = None,
        prepare_group: dist.ProcessGroup | None = None,
        apply_group: dist.ProcessGroup | None = None,
        local_size: int | None = None,
    ) -> None:
        self.group = group
        self._groups = {"prepare": prepare_group or group, "lookup": group, "apply": apply_group or group}
        # One counter per group: each is touched by one thread only, so no update is lost.
        self._sent = dict.fromkeys(self._groups, 0)
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.local_size = self.world_size if local_size is None else int(local_size)
        if self.local_size < 1 or self.world_size % self.local_size:
            raise ValueError(f"local_size ({self.local_size}) must divide the world size ({self.world_size})")
        self.comm_precision = comm_precision
        self.training = True
        self._features_by_table = {t.name: list(t.feature_names) for t in tables}
        self.feature_names = tuple(f for t in tables for f in t.feature_names)
        self.embedding_dims = tuple(t.embedding_dim for t in tables for _ in t.feature_names)
        self._width = sum(self.embedding_dims)
        pieces = _cut(tables, shardings, self.world_size, self.local_size)
        replicated = [p for p in pieces if p.sharding_type is ShardingType.DATA_PARALLEL and p.index == 0]
        self._pieces = [p for p in pieces if p.sharding_type is not ShardingType.DATA_PARALLEL]
        # A rank's table-row-wise pieces pool last: their partial sums are then one block of
        # columns to reduce inside the host, after the columns that go straight to the requesters.
        self._on = [
            [p for p in self._pieces if p.rank == r and p.sharding_type is not _TWRW]
            + [p for p in self._pieces if p.rank == r and p.sharding_type is _TWRW]
            for r in range(self.world_size)
        ]
        mine = self._on[self.rank]
        self.local = EmbeddingCollection.from_tables([_piece_table(p, seed, directory) for p in mine]) if mine else None
        self.replicas = ReplicatedTables([p.table for p in replicated], seed)
        self._replica_columns = _columns(replicated)
        self._row_wise = {
            t.name: (HashedRowMapper(t.num_embeddings), _bounds(t.num_embeddings, len(shardings[t.name].ranks)))
            for t in tables
            if shardings[t.name].sharding_type in _ROW_TYPES
        }
        self._mean_columns = {
            f: (p.column + i * p.table.embedding_dim, p.table.embedding_dim)
            for p in self._pieces
            if p.sharding_type in _ROW_TYPES and p.index == 0 and p.table.pooling is PoolingType.MEAN
            for i, f in enumerate(p.table.feature_names)
        }
        # The output columns of each rank's pieces, in the order that rank's collection pools them.
        self._columns_on = [_columns(pieces) for pieces in self._on]
        twrw = [p for p in self._pieces if p.sharding_type is _TWRW and p.index == 0]
        # every rank of a host pools its table-row-wise tables, last and in table order
        host_columns = [
            _columns([p for p in twrw if p.rank // self.local_size == h])
            for h in range(self.world_size // self.local_size)
        ]
        self._host = HostStage(self.rank, self.local_size, self._columns_on, host_columns)
        # what each rank sends this one, as runs of consecutive columns (whole tables mostly)
        self._in_runs = [_runs(columns) for columns in self._host.in_columns]

    @property
    def comm_bytes(self) -> int:
        """Bytes this rank has sent to other ranks so far (IDs, pooled rows, gradients)."""
        return sum(self._sent.values())

    @property
    def comm_bytes_by_kind(self) -> dict[str, int]:
        """:attr:`comm_bytes` split as the plan's ``comm_bytes`` is: ``"ids"`` (IDs, bag lengths
        and their counts) and ``"pooled"`` (pooled rows and gradients, inside hosts included)."""
        return {"ids": self._sent["prepare"], "pooled": self._sent["lookup"] + self._sent["apply"]}

    def train(self, mode: bool = True) -> ShardedEmbeddingCollection:
        """Sets this rank's pieces' training mode (see :meth:`EmbeddingCollection.train`)."""
        self.training = bool(mode)
        if self.local is not None:
            self.local.train(mode)
        self.replicas.train(mode)
        return self

    def eval(self) -> ShardedEmbeddingCollection:
        """``train(False)``."""
        return self.train(False)

    def counters(self) -> dict[str, float]:
        """Every table's counters, gathered from the first piece of each (a collective call)."""
        local = {}
        if self.local is not None:
            firsts = {p.table.name for p in self._on[self.rank] if p.index == 0}
            local = {k: v for k, v in self.local.counters().items() if k.rsplit("/", 1)[0] in firsts}
        gathered: list[dict[str, float] | None] = [None] * self.world_size
        dist.all_gather_object(gathered, local, group=self.group)
        return {key: value for part in gathered for key, value in (part or {}).items()}

    def _all_to_all(self, send: torch.Tensor, send_sizes: list[int], receive_sizes: list[int], stage: str) -> torch.Tensor:
        received = torch.empty(sum(receive_sizes), dtype=send.dtype)
        dist.all_to_all_single(received, send.contiguous(), receive_sizes, send_sizes, group=self._groups[stage])
        self._sent[stage] += (sum(send_sizes) - send_sizes[self.rank]) * send.element_size()
        return received

    def _bags_for(self, sparse: Mapping[str, JaggedTensor], batch: int) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
        """Per (feature, piece index) the ``(lengths, values)`` that piece is sent: all bags,
        or for a row-wise table the rows of its range, bag by bag."""
        bags = {}
        for table in (p.table for p in self._pieces if p.index == 0):
            for feature in table.feature_names:
                jagged = sparse[feature]
                lengths = torch.diff(jagged.offsets)
                if table.name not in self._row_wise:
                    bags[feature, 0] = (lengths, jagged.values)
                    continue
                mapper, bounds = self._row_wise[table.name]
                rows = mapper.map(np.ascontiguousarray(jagged.values.numpy())).rows
                shard = np.searchsorted(bounds[1:], rows, side="right")
                order = np.argsort(shard, kind="stable")  # bag order kept inside each shard
                bag = np.repeat(np.arange(batch), lengths.numpy())
                shards = len(bounds) - 1
                per_shard = np.bincount(shard * batch + bag, minlength=shards * batch).reshape(shards, batch)
                splits = np.split(rows[order], np.cumsum(per_shard.sum(axis=1))[:-1])
                for index, (shard_lengths, shard_rows) in enumerate(zip(per_shard, splits)):
                    bags[feature, index] = (torch.from_numpy(shard_lengths), torch.from_numpy(shard_rows))
        return bags

    def prepare(self, sparse: Mapping[str, JaggedTensor], parallel: bool = False) -> ShardedPreparedBatch:
        """Sends every feature's bags to the pieces that read them and prepares this rank's
        pieces for the global batch (bags of rank 0 first, then rank 1, ...). ``parallel`` as
        :meth:`EmbeddingCollection.prepare`."""
        missing = [f for f in self.feature_names if f not in sparse]
        if missing:
            raise ValueError(f"sparse features {missing} are missing from the batch")
        batch = sparse[self.feature_names[0]].batch_size if self.feature_names else 0
        sizes = torch.zeros(self.world_size, dtype=torch.int64)
        dist.all_gather_single(sizes, torch.tensor([batch], dtype=torch.int64), group=self._groups["prepare"])
        batch_sizes = tuple(int(b) for b in sizes)
        bags = self._bags_for(sparse, batch)
        lengths, values, value_counts = [], [], []
        for pieces in self._on:
            parts = [
                bags[f, p.index if p.sharding_type in _ROW_TYPES else 0] for p in pieces for f in p.table.feature_names
            ]
            lengths += [part[0] for part in parts]
            values += [part[1] for part in parts]
            value_counts.append(sum(int(part[1].numel()) for part in parts))
        mine = [f for p in self._on[self.rank] for f in p.table.feature_names]
        length_sizes = [sum(len(p.table.feature_names) for p in pieces) * batch for pieces in self._on]
        received_lengths = self._all_to_all(_cat(lengths), length_sizes, [len(mine) * b for b in batch_sizes], "prepare")
        ones = [1] * self.world_size
        counts = self._all_to_all(torch.tensor(value_counts, dtype=torch.int64), ones, ones, "prepare")
        received_values = self._all_to_all(_cat(values), value_counts, [int(c) for c in counts], "prepare")
        divisors = {
            f: torch.diff(sparse[f].offsets).clamp(min=1).to(torch.float32).unsqueeze(1) for f in self._mean_columns
        }
        replicas = self.replicas.prepare(sparse)
        if self.local is None:
            return ShardedPreparedBatch(None, batch_sizes, divisors, replicas)
        # received: per source rank, its bags feature after feature; regroup feature by feature.
        per_source_lengths = torch.split(received_lengths, [len(mine) * b for b in batch_sizes])
        per_source_values = torch.split(received_values, [int(c) for c in counts])
        global_bags: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {f: ([], []) for f in mine}
        for source, (source_lengths, source_values) in enumerate(zip(per_source_lengths, per_source_values)):
            feature_lengths = torch.split(source_lengths, batch_sizes[source])
            feature_values = torch.split(source_values, [int(x.sum()) for x in feature_lengths])
            for feature, bag_lengths, bag_values in zip(mine, feature_lengths, feature_values):
                global_bags[feature][0].append(bag_lengths)
                global_bags[feature][1].append(bag_values)
        jagged = {f: JaggedTensor.from_lengths(_cat(v), _cat(ls)) for f, (ls, v) in global_bags.items()}
        return ShardedPreparedBatch(self.local.prepare(jagged, parallel), batch_sizes, divisors, replicas)

    def lookup(self, prepared: ShardedPreparedBatch) -> PooledEmbeddings:
        """Pools this rank's pieces for the global batch and returns every rank its own rows,
        partial sums of row-wise tables added up (of table-row-wise ones, inside their host first)."""
        batch_sizes, wire = prepared.batch_sizes, _WIRE_DTYPE[self.comm_precision]
        batch = batch_sizes[self.rank]
        if self.local is not None and prepared.local is not None:
            pooled = self.local.lookup(prepared.local).values.detach()
        else:
            pooled = torch.zeros(sum(batch_sizes), 0)
        if self._host.active:
            send = self._host.served_rows(pooled, batch_sizes, wire, functools.partial(self._all_to_all, stage="lookup"))
        else:
            send = pooled.to(wire).reshape(-1)
        widths = [len(columns) for columns in self._host.in_columns]
        received = self._all_to_all(
            send,
            [b * width for b, width in zip(batch_sizes, self._host.out_widths)],
            [batch * width for width in widths],
            "lookup",
        )
        values = torch.zeros(batch, self._width)
        for columns, block in zip(self._host.in_columns, torch.split(received, [batch * width for width in widths])):
            if len(columns):
                values.index_add_(1, columns, block.view(batch, len(columns)).float())
        if len(self._replica_columns):
            values[:, self._replica_columns] = self.replicas.lookup(prepared.replicas, batch)
        for feature, (column, dim) in self._mean_columns.items():
            values[:, column : column + dim] /= prepared.mean_divisors[feature]
        values.requires_grad_(True)
        return PooledEmbeddings(values, self.feature_names, self.embedding_dims)

    def apply_gradients(self, prepared: ShardedPreparedBatch, grad: torch.Tensor) -> None:
        """Sends every piece the gradients of its table's columns for this rank's examples; each
        piece averages them over ranks and applies its optimizer for the global batch."""
        batch_sizes, wire = prepared.batch_sizes, _WIRE_DTYPE[self.comm_precision]
        batch = batch_sizes[self.rank]
        if tuple(grad.shape) != (batch, self._width):
            raise ValueError(f"grad must have shape {(batch, self._width)}, got {tuple(grad.shape)}")
        grad = grad.detach()
        if self._mean_columns:
            grad = grad.clone()
            for feature, (column, dim) in self._mean_columns.items():
                grad[:, column : column + dim] /= prepared.mean_divisors[feature]
        send = [_gather_runs(grad, runs).to(wire).reshape(-1) for runs in self._in_runs]
        mine = len(self._columns_on[self.rank])
        receive_sizes = [b * width for b, width in zip(batch_sizes, self._host.out_widths)]
        received = self._all_to_all(_cat(send, wire), [t.numel() for t in send], receive_sizes, "apply")
        if self._host.active:  # every rank, in this order: collectives on the apply group
            all_to_all = functools.partial(self._all_to_all, stage="apply")
            received = self._host.forward_gradients(received, batch_sizes, wire, all_to_all)
        if len(self._replica_columns):
            self.replicas.apply_gradients(
                prepared.replicas, grad[:, self._replica_columns], self.world_size, self._groups["apply"]
            )
        if self.local is None or prepared.local is None:
            return
        # source after source, each (B_s, mine): already the (G, mine) rows of the global batch;
        # .float() copies a half-precision buffer and returns a float32 one as it is, ours to scale
        rows = received.view(sum(batch_sizes), mine).float().div_(self.world_size)
        self.local.apply_gradients(prepared.local, rows)

    def save(self, directory: Path) -> None:
        """Writes the tables into ``directory`` in an unsharded collection's layout: each rank
        its table-wise tables and row or column blocks (the first block creates the table's
        files, the others then fill theirs in), rank 0 the replicas and ``collection.json``."""
        directory = Path(directory)
        if self.rank == 0:
            directory.mkdir(parents=True, exist_ok=True)
        dist.barrier(group=self.group)
        first = self._local_tables(lambda p: p.index == 0)
        if self.rank == 0:
            first.update(self.replicas.tables)
        save_tables(directory, first, self._features_by_table if self.rank == 0 else None)
        dist.barrier(group=self.group)
        blocks = self._local_tables(lambda p: p.index > 0 and p.sharding_type in SPLIT_TYPES)
        save_tables(directory, blocks, None)
        dist.barrier(group=self.group)

    def _local_tables(self, keep: Callable[[_Piece], bool]) -> dict[str, EmbeddingTable]:
        if self.local is None:
            return {}
        return {p.table.name: self.local.tables[p.table.name] for p in self._on[self.rank] if keep(p)}

    def load(self, directory: Path) -> None:
        """Loads this rank's pieces from a directory saved by any placement or world size."""
        tables = {**(self.local.tables if self.local else {}), **self.replicas.tables}
        load_tables(directory, tables, self._features_by_table)


def _cut(
    tables: Sequence[EmbeddingTableConfig], shardings: Mapping[str, TableSharding], world_size: int, local_size: int
) -> list[_Piece]:
    missing = [t.name for t in tables if t.name not in shardings]
    if missing:
        raise ValueError(f"shardings must place every table; missing {missing}")
    pieces, column = [], 0
    for table in tables:
        kind, ranks = shardings[table.name].sharding_type, shardings[table.name].ranks
        _check_sharding(table, kind, ranks, world_size, local_size)
        rows = _bounds(table.num_embeddings, len(ranks) if kind in _ROW_TYPES else 1)
        columns = _bounds(table.embedding_dim, len(ranks) if kind is ShardingType.COLUMN_WISE else 1)
        for index, rank in enumerate(ranks):
            r = index if len(rows) > 2 else 0
            c = index if len(columns) > 2 else 0
            block = (int(rows[r]), int(rows[r + 1] - rows[r]), int(columns[c]), int(columns[c + 1] - columns[c]))
            pieces.append(_Piece(table, kind, index, rank, *block, column))
        column += table.embedding_dim * len(table.feature_names)
    return pieces


def _check_sharding(
    table: EmbeddingTableConfig, kind: ShardingType, ranks: tuple[int, ...], world_size: int, local_size: int
) -> None:
    where = f"table {table.name!r} ({kind.value} on ranks {list(ranks)})"
    allowed = executable_types(table)
    if kind not in allowed:
        raise ValueError(f"{where}: this table trains {', '.join(t.value for t in allowed)} only")
    if not ranks or len(set(ranks)) != len(ranks) or not all(0 <= r < world_size for r in ranks):
        raise ValueError(f"{where}: needs distinct ranks in [0, {world_size})")
    if kind is ShardingType.TABLE_WISE and len(ranks) != 1:
        raise ValueError(f"{where}: a table-wise table lives on one rank")
    if kind is ShardingType.DATA_PARALLEL and sorted(ranks) != list(range(world_size)):
        raise ValueError(f"{where}: a data-parallel table has a replica on every rank")
    first = ranks[0] // local_size * local_size
    if kind is _TWRW and sorted(ranks) != list(range(first, first + local_size)):
        raise ValueError(f"{where}: a table-row-wise table spans every rank of one host ({local_size} ranks per host)")
    if kind in _ROW_TYPES and table.num_embeddings < len(ranks):
        raise ValueError(f"{where}: has fewer rows ({table.num_embeddings}) than ranks")
    if kind is ShardingType.COLUMN_WISE and table.embedding_dim < len(ranks):
        raise ValueError(f"{where}: has fewer columns ({table.embedding_dim}) than ranks")


def _bounds(total: int, parts: int) -> np.ndarray:
    """Starts of ``parts`` contiguous ranges of ``total``, then ``total``: :math:`(parts + 1)`;
    sizes differ by at most one, the first ones longer (as the planner splits)."""
    base, extra = divmod(total, parts)
    return np.concatenate([[0], np.cumsum([base + (i < extra) for i in range(parts)])]).astype(np.int64)


def _piece_table(piece: _Piece, seed: int, directory: Path | None) -> EmbeddingTable:
    if piece.sharding_type in _ROW_TYPES:
        return RowShardTable(piece.table, piece.first_row, piece.num_rows, seed)
    if piece.sharding_type is ShardingType.COLUMN_WISE:
        return ColumnShardTable(piece.table, piece.first_column, piece.num_columns, seed)
    if piece.table.dynamic is not None:
        return DynamicTable(piece.table, seed, directory)
    return FixedTable(piece.table, seed, directory)


def _columns(pieces: Sequence[_Piece]) -> torch.Tensor:
    """The pooled output's columns of ``pieces``, piece after piece, feature after feature."""
    starts = [p.column + f * p.table.embedding_dim + p.first_column for p in pieces for f in range(len(p.table.feature_names))]
    widths = [p.num_columns for p in pieces for _ in p.table.feature_names]
    return torch.tensor([c for start, width in zip(starts, widths) for c in range(start, start + width)], dtype=torch.int64)


def _runs(columns: torch.Tensor) -> list[tuple[int, int]]:
    """``columns`` as ``[start, stop)`` runs of consecutive values, in order."""
    values = columns.tolist()
    breaks = [i for i in range(1, len(values)) if values[i] != values[i - 1] + 1]
    starts, stops = [0, *breaks], [*breaks, len(values)]
    return [(values[a], values[b - 1] + 1) for a, b in zip(starts, stops) if b > a]


def _gather_runs(matrix: torch.Tensor, runs: list[tuple[int, int]]) -> torch.Tensor:
    """The columns ``runs`` cover, side by side: :math:`(B, \\sum (stop - start))`, contiguous.
    Slices and one copy: much faster than indexing column by column."""
    if not runs:
        return matrix.new_empty(matrix.shape[0], 0)
    return torch.cat([matrix[:, start:stop] for start, stop in runs], dim=1)


def _cat(tensors: list[torch.Tensor], dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.cat(tensors) if tensors else torch.empty(0, dtype=dtype)
