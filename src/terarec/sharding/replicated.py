"""Data-parallel embedding tables: a whole replica on every rank, for small tables.

A replica looks up its own rank's bags with no communication. In backward each rank sums its
gradients into one dense gradient per row of the table, one ``all_reduce`` adds them over
the ranks (with a count of the rows each rank touched), and every replica applies the same
fused optimizer step to the rows the global batch touched, so the replicas stay identical.
That costs the table's size in traffic per step, which is why only small tables are worth
replicating (the planner's choice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from terarec.embedding import EmbeddingTableConfig, PoolingType, PreparedIds
from terarec.sparse import concat_bags
from terarec.embedding.table import FixedTable
from terarec.sparse import JaggedTensor

__all__ = ["ReplicatedTables"]


class ReplicatedTables:
    """Fixed in-RAM tables replicated on every rank of ``group``.

    Args:
        tables (Sequence[EmbeddingTableConfig]): the replicated tables (fixed, not tiered).
        seed (int, optional): global seed; every replica starts identical. Default: ``0``

    Attributes:
        tables (dict[str, FixedTable]): this rank's replicas.
        width (int): pooled columns of all the tables, :math:`\\sum_t F_t D_t`.

    Shape:
        - :meth:`lookup` output and the ``grad`` of :meth:`apply_gradients`: :math:`(B, width)`

    Example::

        >>> from terarec.sparse import JaggedTensor
        >>> replicas = ReplicatedTables([EmbeddingTableConfig("t_day", 7, 4, ("day",))])
        >>> bags = {"day": JaggedTensor(torch.tensor([3, 3, 5]), torch.tensor([0, 2, 3]))}
        >>> prepared = replicas.prepare(bags)
        >>> pooled = replicas.lookup(prepared, batch=2)
        >>> pooled.shape
        torch.Size([2, 4])
        >>> replicas.apply_gradients(prepared, torch.ones(2, 4), world_size=1, group=None)  # one rank: nothing to reduce
    """

    def __init__(self, tables: Sequence[EmbeddingTableConfig], seed: int = 0) -> None:
        bad = [t.name for t in tables if t.dynamic is not None or t.tiered is not None]
        if bad:
            raise ValueError(f"tables {bad}: only fixed in-RAM tables can be data-parallel")
        self.tables = {t.name: FixedTable(t, seed) for t in tables}
        self.width = sum(t.embedding_dim * len(t.feature_names) for t in tables)

    def train(self, mode: bool = True) -> None:
        """Sets every replica's training mode."""
        for table in self.tables.values():
            table.train(mode)

    def prepare(self, sparse: Mapping[str, JaggedTensor]) -> list[PreparedIds]:
        """Each table's local bags (its features one after another), hashed and de-duplicated."""
        prepared = []
        for table in self.tables.values():
            values, offsets = concat_bags([sparse[f] for f in table.config.feature_names])
            prepared.append(table.prepare(values, offsets))
        return prepared

    def lookup(self, prepared: Sequence[PreparedIds], batch: int) -> torch.Tensor:
        """Pooled rows of this rank's examples, tables side by side: :math:`(B, width)`."""
        blocks = []
        for table, ids in zip(self.tables.values(), prepared):
            k, dim = len(table.config.feature_names), table.embedding_dim
            pooled = table.lookup_prepared(ids)  # (k B, D), feature-major
            blocks.append(pooled.view(k, batch, dim).transpose(0, 1).reshape(batch, k * dim))
        return torch.cat(blocks, dim=1) if blocks else torch.zeros(batch, 0)

    def apply_gradients(
        self, prepared: Sequence[PreparedIds], grad: torch.Tensor, world_size: int, group: dist.ProcessGroup | None
    ) -> None:
        """Adds every rank's per-row gradients (``grad``: this rank's :math:`(B, width)`) and
        steps every replica with their mean over the ranks."""
        batch = grad.shape[0]
        sums, start = [], 0
        for table, ids in zip(self.tables.values(), prepared):
            k, dim = len(table.config.feature_names), table.embedding_dim
            bag_grad = grad[:, start : start + k * dim].reshape(batch, k, dim).transpose(0, 1).reshape(k * batch, dim)
            start += k * dim
            sums.append(_row_sums(table, ids, bag_grad))
        flat = torch.cat([s.reshape(-1) for s in sums]) if sums else torch.zeros(0)
        if world_size > 1:
            dist.all_reduce(flat, group=group)
        offset = 0
        for table, row_sums in zip(self.tables.values(), sums):
            reduced = flat[offset : offset + row_sums.numel()].view_as(row_sums)
            offset += row_sums.numel()
            touched = np.flatnonzero(reduced[:, -1].numpy() > 0)
            _apply_rows(table, touched, reduced[touched, :-1].contiguous() / world_size)



def _row_sums(table: FixedTable, ids: PreparedIds, bag_grad: torch.Tensor) -> torch.Tensor:
    """Per row of the table, the sum of its gradients in this batch and, last column, how many
    IDs hit it: :math:`(R, D + 1)`."""
    rows, bag_of = torch.from_numpy(ids.rows), torch.from_numpy(ids.bag_of)
    per_id = bag_grad[bag_of]
    if table.config.pooling is PoolingType.MEAN:
        lengths = torch.from_numpy(np.diff(ids.offsets)).clamp(min=1).to(torch.float32)
        per_id = per_id * (1.0 / lengths)[bag_of].unsqueeze(1)
    sums = torch.zeros(table.num_embeddings, table.embedding_dim + 1)
    sums[:, :-1].index_add_(0, rows, per_id)
    sums[:, -1].index_add_(0, rows, torch.ones(rows.shape[0]))
    return sums


def _apply_rows(table: FixedTable, rows: np.ndarray, grad: torch.Tensor) -> None:
    """One optimizer step of ``table`` on ``rows``, each with its summed gradient :math:`(N, D)`."""
    count = rows.shape[0]
    positions = np.arange(count, dtype=np.int64)
    bounds = np.arange(count + 1, dtype=np.int64)
    step = PreparedIds(rows, bounds, rows, bounds, positions, positions)
    table.apply_gradients_prepared(step, grad)
