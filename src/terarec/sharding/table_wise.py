"""Table-wise sharded embeddings over ``torch.distributed``: each table lives on one rank.

The forward and backward exchanges follow TorchRec's table-wise sharding: every rank sends the
IDs of its local batch to the owners of the tables that read them (one ``all_to_all``), each
owner prepares and pools the whole global batch for its tables, the pooled rows go back to the
ranks whose examples they are (a second ``all_to_all``), and in backward the gradients of those
rows travel to the owner (a third), which applies its fused optimizer once for the global batch.
Pooled rows and gradients may travel in bf16 or fp16 (``comm_precision``); IDs stay int64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from terarec.embedding import (
    EmbeddingCollection,
    EmbeddingTableConfig,
    PooledEmbeddings,
    PreparedBatch,
)
from terarec.embedding.collection import load_tables, save_tables
from terarec.sharding.types import CommPrecision
from terarec.sparse import JaggedTensor

__all__ = ["ShardedPreparedBatch", "TableWiseShardedCollection"]

_WIRE_DTYPE = {CommPrecision.FP32: torch.float32, CommPrecision.BF16: torch.bfloat16, CommPrecision.FP16: torch.float16}


@dataclass(frozen=True)
class ShardedPreparedBatch:
    """A batch prepared by :meth:`TableWiseShardedCollection.prepare`.

    Attributes:
        local (PreparedBatch | None): this rank's tables prepared for the global batch (``None``
            when the rank owns no table).
        batch_sizes (tuple[int, ...]): every rank's local batch size, in rank order.
    """

    local: PreparedBatch | None
    batch_sizes: tuple[int, ...]

    @property
    def global_batch_size(self) -> int:
        """Examples of the step over all ranks."""
        return sum(self.batch_sizes)


class TableWiseShardedCollection:
    """An :class:`~terarec.embedding.EmbeddingCollection` whose tables are spread over ranks, one
    rank per table, with the same ``prepare`` / ``lookup`` / ``apply_gradients`` interface.

    Every rank passes its own local batch and gets back the pooled embeddings of its own
    examples, :math:`(B_r, \\sum_f D_f)`, columns in the same feature order as an unsharded
    collection of the same ``tables``. Gradients are averaged over ranks, like DDP's dense
    gradients, so ``W`` ranks with local batches ``B_r`` train the tables exactly as one
    process would with the concatenated batch (bit for bit in fp32 when ``W`` is a power of
    two). Collective calls must happen in the same order on every rank.

    Args:
        tables (Sequence[EmbeddingTableConfig]): every table of the model, the same list on
            every rank.
        owners (Mapping[str, int]): the rank holding each table.
        seed (int, optional): global seed (a table's rows do not depend on its owner). Default: ``0``
        directory (Path, optional): where tiered tables of this rank keep their files. Default: ``None``
        comm_precision (CommPrecision, optional): format of pooled rows and gradients on the
            wire. Default: ``CommPrecision.FP32``
        group (dist.ProcessGroup, optional): the process group of :meth:`lookup`, :meth:`save`
            and :meth:`counters`; ``None`` is the default group. Default: ``None``
        prepare_group (dist.ProcessGroup, optional): the group :meth:`prepare` talks over, so it
            can run on a background thread while the trainer looks up the previous batch;
            ``None`` means ``group``. Default: ``None``
        apply_group (dist.ProcessGroup, optional): the group :meth:`apply_gradients` talks over
            (its own in hybrid training, where updates run on a background thread); ``None``
            means ``group``. Default: ``None``


    Shape:
        - :meth:`prepare` input: per feature a :class:`~terarec.sparse.JaggedTensor` of ``B_r`` bags
        - :meth:`lookup` values and the ``grad`` of :meth:`apply_gradients`: :math:`(B_r, \\sum_f D_f)`
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingTableConfig],
        owners: Mapping[str, int],
        seed: int = 0,
        directory: Path | None = None,
        comm_precision: CommPrecision = CommPrecision.FP32,
        group: dist.ProcessGroup | None = None,
        prepare_group: dist.ProcessGroup | None = None,
        apply_group: dist.ProcessGroup | None = None,
    ) -> None:
        self._groups = {"prepare": prepare_group or group, "lookup": group, "apply": apply_group or group}
        # One counter per group: each is touched by one thread only, so no update is lost.
        self._sent = dict.fromkeys(self._groups, 0)
        self.group = group
        self.training = True
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.comm_precision = comm_precision
        missing = [t.name for t in tables if t.name not in owners]
        bad = {name: rank for name, rank in owners.items() if not 0 <= rank < self.world_size}
        if missing or bad:
            raise ValueError(f"owners must give every table a rank in [0, {self.world_size}); missing {missing}, bad {bad}")
        self.owners = dict(owners)
        self._features_by_table = {t.name: list(t.feature_names) for t in tables}
        self.feature_names = tuple(f for t in tables for f in t.feature_names)
        self.embedding_dims = tuple(t.embedding_dim for t in tables for _ in t.feature_names)
        # Per rank, the features (in global order) of the tables it owns.
        self._features_of = [[f for t in tables if owners[t.name] == r for f in t.feature_names] for r in range(self.world_size)]
        dim_of = dict(zip(self.feature_names, self.embedding_dims))
        self._width_of = [sum(dim_of[f] for f in features) for features in self._features_of]
        owned = [t for t in tables if owners[t.name] == self.rank]
        self.local = EmbeddingCollection(owned, seed=seed, directory=directory) if owned else None
        # Columns of the global output, listed owner by owner: received blocks -> output order.
        start_of, column = {}, 0
        for name, dim in zip(self.feature_names, self.embedding_dims):
            start_of[name] = column
            column += dim
        by_owner = [c for features in self._features_of for f in features for c in range(start_of[f], start_of[f] + dim_of[f])]
        self._owner_order = torch.tensor(by_owner, dtype=torch.int64)
        self._output_order = torch.argsort(self._owner_order)

    @property
    def comm_bytes(self) -> int:
        """Bytes this rank has sent to other ranks so far (IDs, pooled rows, gradients)."""
        return sum(self._sent.values())

    def _all_to_all(self, send: torch.Tensor, send_sizes: list[int], receive_sizes: list[int], stage: str) -> torch.Tensor:
        received = torch.empty(sum(receive_sizes), dtype=send.dtype)
        dist.all_to_all_single(received, send.contiguous(), receive_sizes, send_sizes, group=self._groups[stage])
        self._sent[stage] += (sum(send_sizes) - send_sizes[self.rank]) * send.element_size()
        return received

    def train(self, mode: bool = True) -> TableWiseShardedCollection:
        """Sets this rank's tables' training mode (see :meth:`EmbeddingCollection.train`)."""
        self.training = bool(mode)
        if self.local is not None:
            self.local.train(mode)
        return self

    def eval(self) -> TableWiseShardedCollection:
        """``train(False)``."""
        return self.train(False)

    def counters(self) -> dict[str, float]:
        """Every table's counters, gathered from their owners (a collective call)."""
        gathered: list[dict[str, float] | None] = [None] * self.world_size
        dist.all_gather_object(gathered, self.local.counters() if self.local else {}, group=self.group)
        return {key: value for part in gathered for key, value in (part or {}).items()}

    def prepare(self, sparse: Mapping[str, JaggedTensor]) -> ShardedPreparedBatch:
        """Sends every feature's bags to the owner of its table and prepares this rank's tables
        for the global batch (bags of rank 0 first, then rank 1, ...)."""
        missing = [f for f in self.feature_names if f not in sparse]
        if missing:
            raise ValueError(f"sparse features {missing} are missing from the batch")
        batch = sparse[self.feature_names[0]].batch_size if self.feature_names else 0
        sizes = torch.zeros(self.world_size, dtype=torch.int64)
        dist.all_gather_single(sizes, torch.tensor([batch], dtype=torch.int64), group=self._groups["prepare"])
        batch_sizes = tuple(int(b) for b in sizes)
        lengths, values, value_counts = [], [], []
        for features in self._features_of:
            lengths += [torch.diff(sparse[f].offsets) for f in features]
            values += [sparse[f].values for f in features]
            value_counts.append(sum(int(sparse[f].values.numel()) for f in features))
        mine = self._features_of[self.rank]
        length_sizes = [len(features) * batch for features in self._features_of]
        received_lengths = self._all_to_all(_cat(lengths), length_sizes, [len(mine) * b for b in batch_sizes], "prepare")
        ones = [1] * self.world_size
        counts = self._all_to_all(torch.tensor(value_counts, dtype=torch.int64), ones, ones, "prepare")
        received_values = self._all_to_all(_cat(values), value_counts, [int(c) for c in counts], "prepare")
        if self.local is None:
            return ShardedPreparedBatch(None, batch_sizes)
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
        return ShardedPreparedBatch(self.local.prepare(jagged), batch_sizes)

    def lookup(self, prepared: ShardedPreparedBatch) -> PooledEmbeddings:
        """Pools this rank's tables for the global batch and returns every rank its own rows."""
        batch_sizes, wire = prepared.batch_sizes, _WIRE_DTYPE[self.comm_precision]
        mine = self._width_of[self.rank]
        if self.local is not None and prepared.local is not None:
            pooled = self.local.lookup(prepared.local).values.detach()
        else:
            pooled = torch.zeros(sum(batch_sizes), 0)
        batch = batch_sizes[self.rank]
        received = self._all_to_all(
            pooled.to(wire).reshape(-1),
            [b * mine for b in batch_sizes],
            [batch * width for width in self._width_of],
            "lookup",
        )
        blocks = [block.view(batch, width) for block, width in zip(torch.split(received, [batch * w for w in self._width_of]), self._width_of)]
        values = torch.cat(blocks, dim=1).float()[:, self._output_order].contiguous()
        values.requires_grad_(True)
        return PooledEmbeddings(values, self.feature_names, self.embedding_dims)

    def apply_gradients(self, prepared: ShardedPreparedBatch, grad: torch.Tensor) -> None:
        """Sends each owner the gradient of its tables' columns for this rank's examples; the
        owner averages over ranks and applies its optimizers for the global batch."""
        batch_sizes, wire = prepared.batch_sizes, _WIRE_DTYPE[self.comm_precision]
        batch = batch_sizes[self.rank]
        if tuple(grad.shape) != (batch, sum(self.embedding_dims)):
            raise ValueError(f"grad must have shape {(batch, sum(self.embedding_dims))}, got {tuple(grad.shape)}")
        by_owner = grad.detach()[:, self._owner_order].to(wire)
        blocks = torch.split(by_owner, self._width_of, dim=1)
        send = _cat([block.contiguous().view(-1) for block in blocks])
        mine = self._width_of[self.rank]
        received = self._all_to_all(
            send, [batch * w for w in self._width_of], [b * mine for b in batch_sizes], "apply"
        )
        if self.local is None or prepared.local is None:
            return
        rows = torch.cat([part.view(b, mine) for part, b in zip(torch.split(received, [b * mine for b in batch_sizes]), batch_sizes)])
        self.local.apply_gradients(prepared.local, rows.float() / self.world_size)

    def save(self, directory: Path) -> None:
        """Each rank writes its own tables into ``directory / <table>``; rank 0 adds the
        ``collection.json`` an unsharded :class:`~terarec.embedding.EmbeddingCollection` writes.
        The layout does not depend on the placement, so any world size and any owners can load
        it (and so can one process)."""
        directory = Path(directory)
        if self.rank == 0:
            directory.mkdir(parents=True, exist_ok=True)
        dist.barrier(group=self.group)
        local = self.local.tables if self.local else {}
        save_tables(directory, local, self._features_by_table if self.rank == 0 else None)
        dist.barrier(group=self.group)

    def load(self, directory: Path) -> None:
        """Loads this rank's tables from a directory saved by any placement or world size."""
        load_tables(directory, self.local.tables if self.local else {}, self._features_by_table)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(tensors) if tensors else torch.empty(0, dtype=torch.int64)
