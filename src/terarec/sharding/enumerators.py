"""Listing each table's ways to be sharded, and choosing one per table.

The first two stages of planning, as TorchRec's enumerator and proposer:
:func:`enumerate_options` lists each table's :class:`ShardingOption` s (every sharding type
and shard count that makes sense, with the estimated time and bytes of each shard, on each
tier it may use) and :func:`choose_options` picks one per table: the least total work,
unless one of its shards alone would take longer than the average rank's whole load, in
which case the least work among options without such a shard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from terarec.embedding import format_bytes
from terarec.errors import PlanError
from terarec.sharding.config import ShardingOverride, ShardingType, Tier
from terarec.sharding.estimators import ShardEstimator
from terarec.sharding.types import Storage, TableWorkload

__all__ = ["ShardingOption", "choose_options", "enumerate_options", "max_storage", "min_cache_bytes"]

_MIN_COLUMNS = 32  # narrowest column-wise shard the planner proposes (an override may go narrower)


@dataclass(frozen=True)
class ShardingOption:
    """One way to shard one table, before placement.

    Args:
        table (TableWorkload): the table.
        sharding_type (ShardingType): how it is split.
        blocks (tuple[tuple[int, int, int, int], ...]): each shard's ``(row_offset, num_rows,
            column_offset, embedding_dim)``; one per rank for data-parallel.
        tiers (tuple[Tier, ...]): tiers its shards may use, preferred first.
        storage (dict[Tier, tuple[Storage, ...]]): each shard's bytes on each tier.
        seconds (dict[Tier, tuple[float, ...]]): each shard's time per step on its owner
            (lookups, SSD, the owner's share of communication) on each tier.
        consumer_seconds (float): time every rank spends exchanging with the owners.
    """

    table: TableWorkload
    sharding_type: ShardingType
    blocks: tuple[tuple[int, int, int, int], ...]
    tiers: tuple[Tier, ...]
    storage: dict[Tier, tuple[Storage, ...]]
    seconds: dict[Tier, tuple[float, ...]]
    consumer_seconds: float

    def tier_for(self, capacity: Storage) -> Tier | None:
        """The preferred tier whose largest shard fits ``capacity``, or ``None``."""
        for tier in self.tiers:
            if max_storage(self.storage[tier]).fits_in(capacity):
                return tier
        return None

    def work(self, tier: Tier, world_size: int) -> float:
        """Seconds over every rank: its shards plus every rank's exchange with them."""
        return sum(self.seconds[tier]) + world_size * self.consumer_seconds

    def max_seconds(self, tier: Tier) -> float:
        """Seconds of its slowest shard on ``tier``."""
        return max(self.seconds[tier])


def max_storage(items: Sequence[Storage]) -> Storage:
    """The largest shard's bytes per tier."""
    return Storage(max(s.ram_bytes for s in items), max(s.ssd_bytes for s in items))


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(offset, size)`` blocks of ``total``, sizes differing by at most one."""
    base, extra = divmod(total, parts)
    sizes = [base + (i < extra) for i in range(parts)]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    return [(int(o), s) for o, s in zip(offsets, sizes, strict=True)]


def _shard_counts(
    kind: ShardingType, table: TableWorkload, estimator: ShardEstimator, capacity: Storage, forced: bool
) -> list[int]:
    topo = estimator.topology
    w, rows, dim = topo.world_size, table.config.num_embeddings, table.config.embedding_dim
    if kind in (ShardingType.DATA_PARALLEL, ShardingType.TABLE_WISE):
        return [1]
    if kind is ShardingType.TABLE_ROW_WISE:
        return [topo.ranks_per_host] if forced or (topo.ranks_per_host > 1 and topo.num_hosts > 1) else []
    if kind is ShardingType.COLUMN_WISE:
        limit = min(w, dim if forced else dim // _MIN_COLUMNS)
    else:
        limit = min(w, rows)
    counts = {1 << i for i in range(1, int(math.log2(limit)) + 1)} if limit >= 2 else set()
    if kind is ShardingType.ROW_WISE:
        counts.add(limit)
        ram = estimator.storage(table, rows, dim, Tier.RAM).ram_bytes
        ssd = estimator.storage(table, rows, dim, Tier.SSD).ssd_bytes
        for need, room in ((ram, capacity.ram_bytes), (ssd, capacity.ssd_bytes)):
            if room > 0:
                counts.add(min(limit, max(2, math.ceil(need / room))))
    if forced and not counts:
        counts = {1}
    return sorted(c for c in counts if 1 <= c <= max(limit, 1))


def enumerate_options(
    table: TableWorkload,
    estimator: ShardEstimator,
    capacity: Storage,
    override: ShardingOverride | None = None,
    min_cache_fraction: float = 0.02,
    sharding_types: Sequence[ShardingType] = tuple(ShardingType),
) -> list[ShardingOption]:
    """Every sensible :class:`ShardingOption` of ``table`` (all of them, fitting or not).

    Args:
        table (TableWorkload): the table.
        estimator (ShardEstimator): the cost model.
        capacity (Storage): what one rank may hold (RAM and SSD budgets, less the dense network).
        override (ShardingOverride, optional): a pinned sharding type and/or tier. Default: ``None``
        min_cache_fraction (float, optional): RAM cache of an SSD shard, as a fraction of its
            bytes, while placing. Default: ``0.02``
        sharding_types (Sequence[ShardingType], optional): the types to consider when none is
            pinned. Default: all
    """
    topo = estimator.topology
    configured_ssd = table.config.tiered is not None
    # A tiered file holds weights and state in one dtype: a table mixing fp32 and bf16 stays in
    # RAM (the planner refuses an SSD override of one).
    ram_only = table.config.weights_dtype is not table.config.state_dtype
    if override is not None and override.tier is not None:
        tiers: tuple[Tier, ...] = (override.tier,)
    elif configured_ssd:
        tiers = (Tier.SSD,)
    else:
        tiers = (Tier.RAM, Tier.SSD) if capacity.ssd_bytes > 0 and not ram_only else (Tier.RAM,)
    forced = override is not None and override.sharding_type is not None
    if forced:
        kinds = [override.sharding_type]  # type: ignore[union-attr]
    elif topo.world_size == 1:
        kinds = [ShardingType.TABLE_WISE]
    else:
        kinds = list(sharding_types)
    rows, dim = table.config.num_embeddings, table.config.embedding_dim
    options = []
    for kind in kinds:
        kind_tiers = tuple(t for t in tiers if t is Tier.RAM) if kind is ShardingType.DATA_PARALLEL else tiers
        if not kind_tiers:
            continue
        for count in _shard_counts(kind, table, estimator, capacity, forced):
            if kind is ShardingType.COLUMN_WISE:
                blocks = tuple((0, rows, offset, size) for offset, size in _split(dim, count))
            elif kind in (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE):
                blocks = tuple((offset, size, 0, dim) for offset, size in _split(rows, count))
            else:
                blocks = ((0, rows, 0, dim),) * (topo.world_size if kind is ShardingType.DATA_PARALLEL else 1)
            storage: dict[Tier, tuple[Storage, ...]] = {}
            seconds: dict[Tier, tuple[float, ...]] = {}
            for tier in kind_tiers:
                shard_storage, shard_seconds = [], []
                memo: dict[tuple[int, int], tuple[Storage, float]] = {}
                for _, num_rows, _, cols in blocks:
                    if (num_rows, cols) not in memo:
                        cache = min_cache_bytes(estimator, table, num_rows, cols, min_cache_fraction)
                        cost = estimator.cost(table, kind, num_rows, cols, tier, cache)
                        comm = estimator.owner_comm_seconds(table, kind, cols, len(blocks))
                        memo[num_rows, cols] = (
                            estimator.storage(table, num_rows, cols, tier, cache),
                            cost.lookup_seconds + cost.ssd_seconds + comm,
                        )
                    shard_storage.append(memo[num_rows, cols][0])
                    shard_seconds.append(memo[num_rows, cols][1])
                storage[tier], seconds[tier] = tuple(shard_storage), tuple(shard_seconds)
            consumer = estimator.consumer_comm_seconds(table, kind, len(blocks))
            options.append(ShardingOption(table, kind, blocks, kind_tiers, storage, seconds, consumer))
    return options


def min_cache_bytes(estimator: ShardEstimator, table: TableWorkload, num_rows: int, cols: int, fraction: float) -> int:
    """RAM cache an SSD shard of ``num_rows`` x ``cols`` gets while placing: ``fraction`` of its
    bytes, and at least the rows of two steps (a tiered table holds the rows of the batch it
    trains and of the one prepared ahead)."""
    rows = max(math.ceil(fraction * num_rows), 2 * math.ceil(estimator.step_rows(table, num_rows)))
    return min(rows, num_rows) * estimator.row_bytes(table, cols)  # whole rows: caches only grow from here


def choose_options(
    options: Sequence[Sequence[ShardingOption]], capacity: Storage, world_size: int
) -> list[ShardingOption]:
    """Picks one option per table: least total work, avoiding shards heavier than the average load.

    The average load ``T`` is the chosen options' total work over ``world_size``. A table whose
    choice has a shard taking longer than ``T`` switches to its least-work option without
    one (or, if all have one, to the option with the lightest largest shard); twice, as ``T``
    moves.

    Raises:
        PlanError: when no option of some table fits one rank.
    """
    fitting: list[list[tuple[ShardingOption, Tier]]] = []
    for table_options in options:
        viable = [(o, t) for o in table_options if (t := o.tier_for(capacity)) is not None]
        if not viable:
            name = table_options[0].table.name if table_options else "?"
            smallest = min(
                (max_storage(o.storage[o.tiers[-1]]) for o in table_options),
                key=lambda s: s.ram_bytes + s.ssd_bytes,
                default=Storage(),
            )
            raise PlanError(
                f"table {name!r} does not fit: its smallest shard needs {smallest.ram_bytes} bytes "
                f"({format_bytes(smallest.ram_bytes)}) of RAM and {smallest.ssd_bytes} bytes "
                f"({format_bytes(smallest.ssd_bytes)}) of SSD, a rank may hold {capacity.ram_bytes} bytes "
                f"({format_bytes(capacity.ram_bytes)}) of RAM and {capacity.ssd_bytes} bytes of SSD"
            )
        fitting.append(viable)
    chosen = [min(viable, key=lambda pair: pair[0].work(pair[1], world_size)) for viable in fitting]
    for _ in range(2):
        average = sum(o.work(t, world_size) for o, t in chosen) / world_size
        for index, (option, tier) in enumerate(chosen):
            if option.max_seconds(tier) <= average:
                continue
            lighter = [(o, t) for o, t in fitting[index] if o.max_seconds(t) <= average]
            if lighter:
                chosen[index] = min(lighter, key=lambda pair: pair[0].work(pair[1], world_size))
            else:
                chosen[index] = min(fitting[index], key=lambda pair: pair[0].max_seconds(pair[1]))
    return [option for option, _ in chosen]
