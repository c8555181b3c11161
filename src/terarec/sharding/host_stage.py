"""The table-row-wise stage of a :class:`~terarec.sharding.sharded.ShardedEmbeddingCollection`:
partial sums reduced inside each host before they leave it, gradients forwarded inside it.

A table-row-wise table is row-wise over every rank of one host (``local_size`` ranks,
``h * local_size ...``). The owner with local index ``l`` serves the requesters with the same
local index on every host (``G / local_size`` examples, TorchRec's TWRW). Forward, before the
pooled exchange, each owner sends every other owner of its host its partial sums of that
owner's examples and adds up the ones it receives, so the pooled exchange carries one row per
bag out of the host instead of one per owner. Backward, a requester sends a bag's gradient to
the one owner serving it, which forwards it to the other owners of its host.

Both stages are one ``all_to_all`` over the collection's own group (the lookup's, then the
apply's), every rank taking part, ranks off the host with zero-sized messages. Groups of a
host's ranks would have to be created by every rank, two per host (the lookup thread and the
apply thread each need their own, as the prepare thread has) and destroyed with the run, and
could not be made from a group other than the default one without mapping its ranks; the
zero-sized messages carry no bytes, and the planner counts each stage as one more collective
over all ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["AllToAll", "HostStage"]

AllToAll = Callable[[torch.Tensor, list[int], list[int]], torch.Tensor]
"""``(send, send_sizes, receive_sizes) -> received``: one ``all_to_all`` of the collection."""


class HostStage:
    """Which pooled columns one rank exchanges with each other rank when some host holds
    table-row-wise tables, and the in-host exchanges around the pooled all-to-all.

    Args:
        rank (int): this rank.
        local_size (int): ranks per host; host ``h`` is ranks ``h * local_size ...``.
        columns_on (Sequence[torch.Tensor]): per rank, the output columns of its pieces in the
            order it pools them, its table-row-wise pieces last.
        host_columns (Sequence[torch.Tensor]): per host, the output columns of its
            table-row-wise tables (pooled by every rank of the host, last, in this order).

    Attributes:
        active (bool): whether any host holds a table-row-wise table (else nothing changes).
        in_columns (list[torch.Tensor]): per rank ``s``, the columns this rank gets from ``s``
            in the pooled exchange (and sends ``s`` as gradients): those of ``s``'s other
            pieces, then the reduced sums of ``s``'s host's table-row-wise tables if ``s``
            serves this rank.
        out_widths (list[int]): per requester, the columns of each of its examples this rank
            sends it.

    Example::

        >>> # 2 hosts of 2 ranks; host 0 holds a table-row-wise table of columns 0-1, every
        >>> # rank also has a table-wise piece of its own (columns 2 + 2 r, 3 + 2 r)
        >>> own = [torch.tensor([2 + 2 * r, 3 + 2 * r]) for r in range(4)]
        >>> twrw = [torch.tensor([0, 1]), torch.tensor([], dtype=torch.int64)]
        >>> stage = HostStage(0, 2, [torch.cat([c, twrw[r // 2]]) for r, c in enumerate(own)], twrw)
        >>> stage.out_widths  # rank 0 serves ranks 0 and 2 (local index 0) its reduced sums
        [4, 2, 4, 2]
        >>> [c.tolist() for c in stage.in_columns]  # rank 1 serves local index 1: not rank 0
        [[2, 3, 0, 1], [4, 5], [6, 7], [8, 9]]
    """

    def __init__(
        self, rank: int, local_size: int, columns_on: Sequence[torch.Tensor], host_columns: Sequence[torch.Tensor]
    ) -> None:
        self.rank, self.local_size, self.world_size = rank, local_size, len(columns_on)
        self.active = any(len(columns) for columns in host_columns)
        self._width = len(host_columns[rank // local_size])
        self._direct = len(columns_on[rank]) - self._width

        def serves(owner: int, requester: int) -> bool:
            return len(host_columns[owner // local_size]) > 0 and owner % local_size == requester % local_size

        self.in_columns = [
            torch.cat(
                [
                    columns_on[s][: len(columns_on[s]) - len(host_columns[s // local_size])],
                    host_columns[s // local_size][: len(host_columns[s // local_size]) * serves(s, rank)],
                ]
            )
            for s in range(self.world_size)
        ]
        self.out_widths = [self._direct + self._width * serves(rank, c) for c in range(self.world_size)]

    def served_rows(
        self, pooled: torch.Tensor, batch_sizes: Sequence[int], wire: torch.dtype, all_to_all: AllToAll
    ) -> torch.Tensor:
        """What the pooled exchange sends, requester after requester: the columns of this
        rank's other pieces, then for a requester it serves the sums of its host's
        table-row-wise tables, reduced over the host first (one ``all_to_all``).

        Shape:
            - pooled: :math:`(G, C)` this rank's pooled pieces for the global batch, its
              table-row-wise columns last
            - output: flat, as :attr:`out_widths` says per requester, in ``wire``
        """
        direct, width, size = self._direct, self._width, self.local_size
        order, served = self._order(batch_sizes)
        count = served[self.rank % size] if width else 0  # rows of the requesters this rank serves
        # per owner of this host, the partial sums of the requesters it serves (none off the host)
        send = pooled[order, direct:].to(wire).reshape(-1) if width else torch.empty(0, dtype=wire)
        received = all_to_all(send, self._sizes([n * width for n in served]), self._sizes([count * width] * size))
        reduced = torch.zeros(count, width)
        for block in received.view(size, count, width):
            reduced += block.float()  # owner after owner: the same order on every run
        reduced = reduced.to(wire)
        direct_rows = pooled[:, :direct].to(wire)
        starts, parts, done = np.cumsum([0, *batch_sizes]), [], 0
        for requester, width_out in enumerate(self.out_widths):
            rows = direct_rows[starts[requester] : starts[requester + 1]]
            if width_out > direct:  # served here: its reduced rows are the next ones
                rows = torch.cat([rows, reduced[done : done + batch_sizes[requester]]], dim=1)
                done += batch_sizes[requester]
            parts.append(rows.reshape(-1))
        return torch.cat(parts)

    def forward_gradients(
        self, received: torch.Tensor, batch_sizes: Sequence[int], wire: torch.dtype, all_to_all: AllToAll
    ) -> torch.Tensor:
        """The gradients of this rank's pieces for the global batch, from what the gradient
        exchange brought (per requester its other pieces' columns, then the table-row-wise
        ones if this rank serves it): each owner sends every other owner of its host the
        table-row-wise gradients of the requesters it serves (one ``all_to_all``).

        Shape:
            - received: flat, as :attr:`out_widths` says per requester
            - output: flat :math:`(G, C)`, requester after requester, in ``wire``
        """
        direct, width, size = self._direct, self._width, self.local_size
        parts = torch.split(received, [b * out for b, out in zip(batch_sizes, self.out_widths)])
        blocks = [part.view(b, out) for b, out, part in zip(batch_sizes, self.out_widths, parts)]
        order, served = self._order(batch_sizes)
        # the gradients of the requesters this rank serves, requester after requester
        mine = [block[:, direct:].reshape(-1) for block in blocks if block.shape[1] > direct]
        own = torch.cat(mine) if mine else torch.empty(0, dtype=wire)
        send = own.repeat(size)  # the same rows to every owner of the host, itself included
        gathered = all_to_all(send, self._sizes([own.numel()] * size), self._sizes([n * width for n in served]))
        rows = torch.empty(sum(batch_sizes), direct + width, dtype=wire)
        rows[:, :direct] = torch.cat([block[:, :direct] for block in blocks])
        if width:
            rows[order, direct:] = gathered.view(-1, width)
        return rows.reshape(-1)

    def _order(self, batch_sizes: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """The global batch's rows grouped by the local index of the owners serving them (each
        group requester after requester, as the owner holds them), and each group's size."""
        requester = np.repeat(np.arange(self.world_size), batch_sizes) % self.local_size
        order = torch.from_numpy(np.argsort(requester, kind="stable"))
        return order, np.bincount(requester, minlength=self.local_size).tolist()

    def _sizes(self, per_rank: list[int]) -> list[int]:
        """``per_rank`` (one value per rank of this host) as all_to_all sizes: 0 off the host."""
        sizes = [0] * self.world_size
        first = self.rank // self.local_size * self.local_size
        sizes[first : first + self.local_size] = per_rank
        return sizes
