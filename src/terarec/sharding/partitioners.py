"""Placing each table's chosen shards on ranks and tiers.

:class:`GreedyPartitioner` places the shards of the options
:func:`~terarec.sharding.enumerators.choose_options` picked, largest first, each on the least
loaded rank with room (RAM first; SSD behind a RAM cache when RAM is full and the ranks have
SSD), refines by moving and swapping shards off the most loaded rank, re-splits a table that
finds no room into smaller shards, and finally shares each rank's leftover RAM among the
caches of its SSD shards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from terarec.embedding import TIERED_SLOT_BYTES, format_bytes
from terarec.errors import PlanError
from terarec.sharding.config import ShardingType, Tier
from terarec.sharding.enumerators import ShardingOption, max_storage, min_cache_bytes
from terarec.sharding.estimators import ShardEstimator
from terarec.sharding.types import ShardPlacement, Storage, TablePlacement

__all__ = ["GreedyPartitioner"]

_REFINE_ROUNDS = 200
_TOLERANCE = 1e-12


class _NoRoom(Exception):
    def __init__(self, index: int, needed: Storage) -> None:
        self.index, self.needed = index, needed


class _Ranks:
    """Free RAM and SSD and estimated seconds of each rank while placing."""

    def __init__(self, world_size: int, capacity: Storage) -> None:
        self.load = np.zeros(world_size)
        self.ram = np.full(world_size, capacity.ram_bytes, dtype=np.int64)
        self.ssd = np.full(world_size, capacity.ssd_bytes, dtype=np.int64)

    def tier_mask(self, option: ShardingOption, block: int) -> dict[Tier, np.ndarray]:
        return {
            tier: (self.ram >= option.storage[tier][block].ram_bytes)
            & (self.ssd >= option.storage[tier][block].ssd_bytes)
            for tier in option.tiers
        }

    def take(self, rank: int, option: ShardingOption, block: int, tier: Tier, sign: int = 1) -> None:
        self.load[rank] += sign * option.seconds[tier][block]
        self.ram[rank] -= sign * option.storage[tier][block].ram_bytes
        self.ssd[rank] -= sign * option.storage[tier][block].ssd_bytes

    def take_all(self, targets: np.ndarray, option: ShardingOption, index: int) -> list[tuple[int, Tier]]:
        """Puts block ``i`` of ``option`` on distinct rank ``targets[i]``, each on its first tier with room."""
        choice = np.full(len(targets), -1)
        needs = {}
        for position, tier in enumerate(option.tiers):
            ram = np.fromiter((s.ram_bytes for s in option.storage[tier]), np.int64, len(targets))
            ssd = np.fromiter((s.ssd_bytes for s in option.storage[tier]), np.int64, len(targets))
            needs[position] = (ram, ssd, np.asarray(option.seconds[tier], dtype=np.float64))
            choice[(choice < 0) & (self.ram[targets] >= ram) & (self.ssd[targets] >= ssd)] = position
        if (choice < 0).any():
            raise _NoRoom(index, max_storage(option.storage[option.tiers[-1]]))
        for position, (ram, ssd, seconds) in needs.items():
            here = choice == position
            self.ram[targets[here]] -= ram[here]
            self.ssd[targets[here]] -= ssd[here]
            self.load[targets[here]] += seconds[here]
        return list(zip(targets.tolist(), [option.tiers[c] for c in choice.tolist()], strict=True))

    def fits(self, rank: int, option: ShardingOption, block: int) -> Tier | None:
        for tier in option.tiers:
            need = option.storage[tier][block]
            if self.ram[rank] >= need.ram_bytes and self.ssd[rank] >= need.ssd_bytes:
                return tier
        return None


class GreedyPartitioner:
    """Places each table's chosen shards on ranks and tiers, balancing estimated time.

    Data-parallel replicas go first (they take room on every rank); then shards in
    decreasing size (the larger of their time as a fraction of the average load and their
    bytes as a fraction of a rank), each on the least-loaded rank with room, RAM preferred.
    Row-wise shards of one table take distinct ranks, table-row-wise ones one host. Then
    single shards are moved or swapped off the most loaded rank while that lowers its load.
    When a table finds no room, it is re-split into smaller shards and placement restarts.

    Args:
        estimator (ShardEstimator): the cost model.
        capacity (Storage): what one rank may hold (RAM and SSD budgets, less the dense network).
        min_cache_fraction (float, optional): RAM cache of an SSD shard while placing, as a
            fraction of its bytes. Default: ``0.02``
    """

    def __init__(self, estimator: ShardEstimator, capacity: Storage, min_cache_fraction: float = 0.02) -> None:
        self.estimator = estimator
        self.capacity = capacity
        self.min_cache_fraction = min_cache_fraction

    def partition(
        self, options: Sequence[Sequence[ShardingOption]], chosen: Sequence[ShardingOption], price: bool = True
    ) -> list[TablePlacement]:
        """Places ``chosen`` (one option per table, from ``options``), re-splitting tables that find no room.

        Args:
            options (Sequence[Sequence[ShardingOption]]): every table's options.
            chosen (Sequence[ShardingOption]): the option of each table to place first.
            price (bool, optional): share out leftover RAM as cache and price every shard;
                ``False`` only checks that a placement exists (and returns ``[]``). Default: ``True``

        Raises:
            PlanError: naming the table that fits nowhere and the bytes it needed.
        """
        chosen = list(chosen)
        failure: _NoRoom | None = None
        for _ in range(4 * len(chosen)):
            try:
                return self._finished(chosen, self._place(chosen), price)
            except _NoRoom as error:
                failure = error
            # re-split the table that found no room (into shards half as large if it can); if it
            # cannot, the table with the largest shards, which may be what filled the ranks
            needed = _bytes(failure.needed)
            suspects = sorted(
                (i for i in range(len(chosen)) if i != failure.index and _largest(chosen[i]) > needed),
                key=lambda i: -_largest(chosen[i]),
            )
            if not any(self._resplit(options[i], chosen, i) for i in [failure.index, *suspects]):
                break
        # last resort: every table in its smallest shards, which balances bytes best
        for index, table_options in enumerate(options):
            fitting = [o for o in table_options if o.tier_for(self.capacity) is not None]
            if fitting:
                chosen[index] = min(fitting, key=lambda o: (_largest(o), self._work(o)))
        try:
            return self._finished(chosen, self._place(chosen), price)
        except _NoRoom as error:
            name, needed = chosen[error.index].table.name, error.needed
            raise PlanError(
                f"table {name!r} fits on no rank: a shard needs {needed.ram_bytes} bytes "
                f"({format_bytes(needed.ram_bytes)}) of RAM and {needed.ssd_bytes} bytes "
                f"({format_bytes(needed.ssd_bytes)}) of SSD, more than the other tables leave"
            ) from None

    def _work(self, option: ShardingOption) -> float:
        return option.work(option.tier_for(self.capacity) or option.tiers[-1], self.estimator.topology.world_size)

    def _resplit(self, table_options: Sequence[ShardingOption], chosen: list[ShardingOption], index: int) -> bool:
        """Switches table ``index`` to smaller shards (at most half as large if possible); False if none are."""
        current = _largest(chosen[index])
        smaller = [o for o in table_options if o.tier_for(self.capacity) is not None and _largest(o) < current]
        if not smaller:
            return False
        halved = [o for o in smaller if _largest(o) <= current // 2]
        chosen[index] = min(halved, key=self._work) if halved else min(smaller, key=_largest)
        return True

    def _finished(
        self, chosen: Sequence[ShardingOption], assignment: list[list[tuple[int, Tier]]], price: bool
    ) -> list[TablePlacement]:
        return self._finish(chosen, assignment) if price else []

    def _order(self, chosen: Sequence[ShardingOption]) -> list[int]:
        """Replicas first, then SSD-bound tables, then tables spanning every rank, then the rest;
        each group by size, largest first."""
        world = self.estimator.topology.world_size
        average = sum(o.work(o.tiers[0], world) for o in chosen) / world or 1.0

        def share(index: int) -> float:
            option = chosen[index]
            need = max_storage(option.storage[option.tier_for(self.capacity) or option.tiers[-1]])
            return max(
                need.ram_bytes / max(self.capacity.ram_bytes, 1), need.ssd_bytes / max(self.capacity.ssd_bytes, 1)
            )

        def size(index: int) -> float:
            option = chosen[index]
            return max(option.max_seconds(option.tier_for(self.capacity) or option.tiers[-1]) / average, share(index))

        def key(index: int) -> tuple[int, float, int]:
            option = chosen[index]
            if option.sharding_type is ShardingType.DATA_PARALLEL:
                return 0, 0.0, index
            if option.tier_for(self.capacity) is Tier.SSD:  # their caches need RAM: before RAM fills up;
                return 1, -share(index), index  # and capacity binds them: first-fit decreasing by bytes
            return 2 if len(option.blocks) == world else 3, -size(index), index

        return sorted(range(len(chosen)), key=key)

    def _place(self, chosen: Sequence[ShardingOption]) -> list[list[tuple[int, Tier]]]:
        topo = self.estimator.topology
        ranks = _Ranks(topo.world_size, self.capacity)
        assignment: list[list[tuple[int, Tier]]] = [[] for _ in chosen]
        for index in self._order(chosen):
            option = chosen[index]
            kind = option.sharding_type
            if kind is ShardingType.DATA_PARALLEL:
                targets = np.arange(topo.world_size)
            elif kind is ShardingType.TABLE_ROW_WISE:
                targets = self._pick_host(ranks, option, index)
            else:
                targets = self._pick_ranks(ranks, option, index)
            assignment[index] = ranks.take_all(targets, option, index)
        self._refine(ranks, chosen, assignment)
        return assignment

    def _pick_ranks(self, ranks: _Ranks, option: ShardingOption, index: int) -> np.ndarray:
        """Distinct ranks for the shards, RAM-capable ones first, then by load."""
        masks = ranks.tier_mask(option, int(np.argmax([_bytes(s) for s in option.storage[option.tiers[0]]])))
        ram_ok = masks.get(Tier.RAM, np.zeros_like(ranks.load, dtype=bool))
        any_ok = np.logical_or.reduce(list(masks.values()))
        order = np.lexsort((np.arange(len(ranks.load)), ranks.load, ~ram_ok, ~any_ok))
        picked = order[: len(option.blocks)]
        if len(picked) < len(option.blocks) or not any_ok[picked].all():
            raise _NoRoom(index, max_storage(option.storage[option.tiers[-1]]))
        return picked

    def _pick_host(self, ranks: _Ranks, option: ShardingOption, index: int) -> np.ndarray:
        per_host = self.estimator.topology.ranks_per_host
        masks = ranks.tier_mask(option, 0)
        any_ok = np.logical_or.reduce(list(masks.values())).reshape(-1, per_host).all(axis=1)
        if not any_ok.any():
            raise _NoRoom(index, max_storage(option.storage[option.tiers[-1]]))
        host_load = np.where(any_ok, ranks.load.reshape(-1, per_host).max(axis=1), np.inf)
        host = int(np.argmin(host_load))
        return np.arange(host * per_host, host * per_host + len(option.blocks))

    def _refine(
        self, ranks: _Ranks, chosen: Sequence[ShardingOption], assignment: list[list[tuple[int, Tier]]]
    ) -> None:
        """Moves or swaps single shards (table-wise, column-wise) off the most loaded rank."""
        movable = [
            (i, b)
            for i, o in enumerate(chosen)
            if o.sharding_type in (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE)
            for b in range(len(o.blocks))
        ]
        if not movable or len(ranks.load) == 1:
            return
        for _ in range(_REFINE_ROUNDS):
            high = int(np.argmax(ranks.load))
            here = sorted(
                (item for item in movable if assignment[item[0]][item[1]][0] == high),
                key=lambda item: -chosen[item[0]].seconds[assignment[item[0]][item[1]][1]][item[1]],
            )
            if not any(self._move(ranks, chosen, assignment, item, high) for item in here) and not self._swap(
                ranks, chosen, assignment, movable, high
            ):
                return

    def _move(
        self,
        ranks: _Ranks,
        chosen: Sequence[ShardingOption],
        assignment: list[list[tuple[int, Tier]]],
        item: tuple[int, int],
        high: int,
    ) -> bool:
        index, block = item
        option = chosen[index]
        _, old_tier = assignment[index][block]
        peak = ranks.load[high]
        ranks.take(high, option, block, old_tier, sign=-1)
        busy = {rank for rank, _ in assignment[index]}
        for rank in (int(r) for r in np.argsort(ranks.load, kind="stable")):
            if rank == high or rank in busy:
                continue
            if ranks.load[rank] >= peak - _TOLERANCE:
                break
            tier = ranks.fits(rank, option, block)
            if (
                tier is not None
                and max(ranks.load[high], ranks.load[rank] + option.seconds[tier][block]) < peak - _TOLERANCE
            ):
                ranks.take(rank, option, block, tier)
                assignment[index][block] = (rank, tier)
                return True
        ranks.take(high, option, block, old_tier)
        return False

    def _swap(
        self,
        ranks: _Ranks,
        chosen: Sequence[ShardingOption],
        assignment: list[list[tuple[int, Tier]]],
        movable: Sequence[tuple[int, int]],
        high: int,
    ) -> bool:
        low = int(np.argmin(ranks.load))
        peak = ranks.load[high]
        if low == high:
            return False
        on = {rank: [item for item in movable if assignment[item[0]][item[1]][0] == rank] for rank in (high, low)}
        for a in on[high]:
            for b in on[low]:
                if a[0] == b[0]:
                    continue
                (_, tier_a), (_, tier_b) = assignment[a[0]][a[1]], assignment[b[0]][b[1]]
                ranks.take(high, chosen[a[0]], a[1], tier_a, -1)
                ranks.take(low, chosen[b[0]], b[1], tier_b, -1)
                new_a, new_b = ranks.fits(low, chosen[a[0]], a[1]), ranks.fits(high, chosen[b[0]], b[1])
                if new_a is not None and new_b is not None:
                    after_high = ranks.load[high] + chosen[b[0]].seconds[new_b][b[1]]
                    after_low = ranks.load[low] + chosen[a[0]].seconds[new_a][a[1]]
                    busy_a = {r for r, _ in assignment[a[0]]} - {high}
                    busy_b = {r for r, _ in assignment[b[0]]} - {low}
                    if max(after_high, after_low) < peak - _TOLERANCE and low not in busy_a and high not in busy_b:
                        ranks.take(low, chosen[a[0]], a[1], new_a)
                        ranks.take(high, chosen[b[0]], b[1], new_b)
                        assignment[a[0]][a[1]], assignment[b[0]][b[1]] = (low, new_a), (high, new_b)
                        return True
                ranks.take(high, chosen[a[0]], a[1], tier_a)
                ranks.take(low, chosen[b[0]], b[1], tier_b)
        return False

    def _finish(
        self, chosen: Sequence[ShardingOption], assignment: list[list[tuple[int, Tier]]]
    ) -> list[TablePlacement]:
        """Shares each rank's leftover RAM among its SSD shards' caches and prices every shard."""
        estimator, topo = self.estimator, self.estimator.topology
        used = np.zeros(topo.world_size, dtype=np.int64)
        spilled: dict[int, list[tuple[int, int, int]]] = {}  # rank -> (table, block, ssd bytes)
        for index, option in enumerate(chosen):
            configured = option.table.config.tiered is not None
            for block, (rank, tier) in enumerate(assignment[index]):
                used[rank] += option.storage[tier][block].ram_bytes
                if tier is Tier.SSD and not configured:
                    spilled.setdefault(rank, []).append((index, block, option.storage[tier][block].ssd_bytes))
        extra: dict[tuple[int, int], int] = {}
        for rank, shards in spilled.items():
            left = max(int(self.capacity.ram_bytes - used[rank]), 0)
            total = sum(size for _, _, size in shards) or 1
            for index, block, size in shards:
                # a cached row also costs its slot's bookkeeping
                row_bytes = estimator.row_bytes(chosen[index].table, chosen[index].blocks[block][3])
                extra[index, block] = left * size // total * row_bytes // (row_bytes + TIERED_SLOT_BYTES)
        placements = []
        for index, option in enumerate(chosen):
            table = option.table
            shards = []
            for block, (rank, tier) in enumerate(assignment[index]):
                row_offset, num_rows, column_offset, cols = option.blocks[block]
                cache = 0
                if tier is Tier.SSD:
                    full = num_rows * estimator.row_bytes(table, cols)
                    cache = min(
                        full,
                        min_cache_bytes(estimator, table, num_rows, cols, self.min_cache_fraction)
                        + extra.get((index, block), 0),
                    )
                cost = estimator.cost(table, option.sharding_type, num_rows, cols, tier, cache)
                shards.append(
                    ShardPlacement(
                        rank=rank,
                        tier=tier,
                        row_offset=row_offset,
                        num_rows=num_rows,
                        column_offset=column_offset,
                        embedding_dim=cols,
                        storage=estimator.storage(table, num_rows, cols, tier, cache),
                        cache_bytes=estimator.cache_rows(table, num_rows, cols, cache)
                        * estimator.row_bytes(table, cols)
                        if tier is Tier.SSD
                        else 0,
                        lookup_seconds=cost.lookup_seconds,
                        ssd_seconds=cost.ssd_seconds,
                    )
                )
            placements.append(
                TablePlacement(
                    table.name,
                    option.sharding_type,
                    table.config.num_embeddings,
                    table.config.embedding_dim,
                    tuple(shards),
                )
            )
        return placements


def _bytes(storage: Storage) -> int:
    return storage.ram_bytes + storage.ssd_bytes


def _largest(option: ShardingOption) -> int:
    """Bytes of the option's largest shard on its last-resort tier."""
    return _bytes(max_storage(option.storage[option.tiers[-1]]))
