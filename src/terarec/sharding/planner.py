"""The planner: the cost model, option choice and partitioner composed into a :class:`~terarec.sharding.types.Plan`.

:class:`ShardingPlanner` enumerates each table's sharding options
(:func:`~terarec.sharding.enumerators.enumerate_options`), honours per-table overrides,
chooses and places (:class:`~terarec.sharding.partitioners.GreedyPartitioner`) and predicts
the plan's memory, traffic and step time (:func:`~terarec.sharding.traffic.estimate_plan`).
When the model cannot fit, the :class:`~terarec.errors.PlanError` says what would: more
ranks, an SSD tier of some size, or a smaller embedding dim.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence

import psutil

from terarec.embedding import format_bytes
from terarec.errors import ConfigError, PlanError
from terarec.sharding.calibration import Calibration
from terarec.sharding.config import CommPrecision, ShardingConfig, ShardingOverride, ShardingType, Tier
from terarec.sharding.enumerators import choose_options, enumerate_options
from terarec.sharding.estimators import ShardEstimator
from terarec.sharding.partitioners import GreedyPartitioner
from terarec.sharding.traffic import estimate_plan
from terarec.sharding.types import DenseWorkload, Plan, Storage, TablePlacement, TableWorkload, Topology

__all__ = ["DEFAULT_NETWORK_GBPS", "UNCALIBRATED", "ShardingPlanner", "build_topology", "minimum_world_size"]

DEFAULT_NETWORK_GBPS = 10.0
"""Network bandwidth per host assumed when none is given (Gbit/s per direction)."""

UNCALIBRATED = "uncalibrated: conservative default rates (measure this machine with `terarec plan --calibrate`)"

_MAX_WORLD_SIZE = 1 << 16


def build_topology(config: ShardingConfig, calibration: Calibration | None = None) -> Topology:
    """The :class:`Topology` a ``sharding`` config describes, with measured rates when given.

    Unset RAM is this machine's total RAM shared by ``ranks_per_host`` ranks; unset network
    bandwidth is :data:`DEFAULT_NETWORK_GBPS`; collective latency and intra-host bandwidth come
    from ``calibration``, and so do memory bandwidth and dense FLOP/s, each shared by the
    ``ranks_per_host`` ranks of a host, and the exchange's packing and conversion rates, one
    core's, which each rank gets until a host has more ranks than this machine has cores;
    without one, Topology's defaults.

    Example::

        >>> topology = build_topology(ShardingConfig(world_size=4, ram_per_rank=1 << 30, network_gbps=100))
        >>> topology.world_size, topology.network_bandwidth
        (4, 12500000000.0)
    """
    ram = config.ram_per_rank or int(psutil.virtual_memory().total) // config.ranks_per_host
    rates: dict[str, float] = {}
    cores_per_rank = min(1.0, (os.cpu_count() or 1) / config.ranks_per_host)
    if calibration is not None:
        # measured with every core of the machine, which the ranks of a host share
        rates = {
            "memory_bandwidth": calibration.memory_bandwidth / config.ranks_per_host,
            "dense_flops": calibration.dense_flops / config.ranks_per_host,
            "collective_latency": calibration.collective_latency,
            "intra_host_bandwidth": calibration.intra_host_bandwidth,
            # one core's: each rank has one until the host has more ranks than cores
            "exchange_rate": calibration.exchange_rate * cores_per_rank,
            "conversion_rate": calibration.conversion_rate * cores_per_rank,
        }
    return Topology(
        world_size=config.world_size,
        ram_per_rank=ram,
        ssd_per_rank=config.ssd_per_rank,
        ranks_per_host=config.ranks_per_host,
        network_bandwidth=(config.network_gbps or DEFAULT_NETWORK_GBPS) * 1e9 / 8,
        **rates,  # type: ignore[arg-type]
    )


class ShardingPlanner:
    """Plans where every embedding table lives on ``topology`` and predicts the step.

    Args:
        topology (Topology): the ranks and their rates.
        batch_size (int): examples per rank per step ``B``.
        comm_precision (CommPrecision, optional): pooled embeddings on the wire.
            Default: ``CommPrecision.FP32``
        overrides (Sequence[ShardingOverride], optional): per-table sharding type or tier.
            Default: ``()``
        min_cache_fraction (float, optional): RAM cache of a shard moved to SSD while placing,
            as a fraction of its bytes; leftover RAM is added afterwards. Default: ``0.02``
        calibration (str, optional): where the topology's rates came from, for the report.
            Default: :data:`UNCALIBRATED`
        sharding_types (Mapping[str, Sequence[ShardingType]], optional): per table, the types to
            choose among when no override pins one (what training can run for it); a table not
            named may take any. Default: ``None``

    Example::

        >>> from terarec.embedding import EmbeddingTableConfig
        >>> tables = [TableWorkload(EmbeddingTableConfig(f"t{i}", 10**5 * (i + 1), 16, (f"f{i}",)), (1.0,))
        ...           for i in range(4)] + [TableWorkload(EmbeddingTableConfig("tiny", 10, 16, ("g",)), (1.0,))]
        >>> plan = ShardingPlanner(Topology(world_size=2, ram_per_rank=1 << 30), batch_size=512).plan(tables)
        >>> [(p.name, p.sharding_type.value, p.ranks) for p in plan.placements]  # doctest: +NORMALIZE_WHITESPACE
        [('t0', 'table_wise', (0,)), ('t1', 'table_wise', (1,)), ('t2', 'table_wise', (1,)),
         ('t3', 'table_wise', (0,)), ('tiny', 'data_parallel', (0, 1))]
        >>> ShardingPlanner(Topology(world_size=2, ram_per_rank=1 << 20), batch_size=512).plan(tables)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        terarec.errors.PlanError: table 't0' does not fit: ... would fit: 73 ranks (--world-size 73)
    """

    def __init__(
        self,
        topology: Topology,
        batch_size: int,
        comm_precision: CommPrecision = CommPrecision.FP32,
        overrides: Sequence[ShardingOverride] = (),
        min_cache_fraction: float = 0.02,
        calibration: str = UNCALIBRATED,
        sharding_types: Mapping[str, Sequence[ShardingType]] | None = None,
    ) -> None:
        self.topology = topology
        self.sharding_types = dict(sharding_types or {})
        self.batch_size = batch_size
        self.comm_precision = comm_precision
        self.overrides = tuple(overrides)
        self.min_cache_fraction = min_cache_fraction
        self.calibration = calibration

    def _with(self, topology: Topology) -> ShardingPlanner:
        return ShardingPlanner(
            topology,
            self.batch_size,
            self.comm_precision,
            self.overrides,
            self.min_cache_fraction,
            self.calibration,
            self.sharding_types,
        )

    def _partition(
        self, tables: Sequence[TableWorkload], dense: DenseWorkload, price: bool = True
    ) -> tuple[ShardEstimator, list[TablePlacement]]:
        topo = self.topology
        by_name = {override.table: override for override in self.overrides}
        by_table = {table.name: table for table in tables}
        for index, override in enumerate(self.overrides):
            if override.table not in by_table:
                raise ConfigError(
                    f"sharding.overrides[{index}] names table {override.table!r}, which the model does not have; "
                    f"tables are: {', '.join(sorted(by_table))}"
                )
            if override.tier is Tier.SSD and override.sharding_type is ShardingType.DATA_PARALLEL:
                raise ConfigError(f"sharding.overrides[{index}]: data-parallel table {override.table!r} must be in RAM")
            stored = by_table[override.table].config
            if override.tier is Tier.SSD and stored.weights_dtype is not stored.state_dtype:
                raise ConfigError(
                    f"sharding.overrides[{index}] puts table {override.table!r} on SSD, but it stores weights and state "
                    f"in different dtypes and a tiered file holds one; pin it to RAM or give both the same dtype"
                )
            if override.tier is Tier.SSD and topo.ssd_per_rank == 0:
                raise ConfigError(
                    f"sharding.overrides[{index}] puts table {override.table!r} on SSD, but the ranks have no SSD "
                    f"(set sharding.ssd_per_rank or --ssd-per-rank)"
                )
        room = topo.ram_budget - dense.ram_bytes
        if room <= 0:
            raise PlanError(
                f"the dense network needs {dense.ram_bytes} bytes ({format_bytes(dense.ram_bytes)}) of RAM per rank, "
                f"more than the budget of {topo.ram_budget} bytes ({format_bytes(topo.ram_budget)})"
            )
        capacity = Storage(room, topo.ssd_budget)
        estimator = ShardEstimator(topo, self.batch_size, self.comm_precision)
        options = [
            enumerate_options(
                t,
                estimator,
                capacity,
                by_name.get(t.name),
                self.min_cache_fraction,
                self.sharding_types.get(t.name, tuple(ShardingType)),
            )
            for t in tables
        ]
        chosen = choose_options(options, capacity, topo.world_size)
        partitioner = GreedyPartitioner(estimator, capacity, self.min_cache_fraction)
        return estimator, partitioner.partition(options, chosen, price)

    def fits(self, tables: Sequence[TableWorkload], dense: DenseWorkload | None = None) -> bool:
        """Whether a plan exists (same search as :meth:`plan`, without the report or suggestions)."""
        try:
            self._partition(tables, dense or DenseWorkload(), price=False)
        except PlanError:
            return False
        return True

    def plan(
        self, tables: Sequence[TableWorkload], dense: DenseWorkload | None = None, notes: Sequence[str] = ()
    ) -> Plan:
        """Places ``tables`` and predicts the step.

        Args:
            tables (Sequence[TableWorkload]): the embedding tables and how they are read.
            dense (DenseWorkload, optional): the dense network; ``None`` for none. Default: ``None``
            notes (Sequence[str], optional): assumptions to carry into the plan's report. Default: ``()``

        Raises:
            PlanError: when the tables cannot fit, naming a table, its bytes, and what would fit.
            ConfigError: when an override names an unknown table.
        """
        if not tables:
            raise ConfigError("nothing to plan: the model has no embedding tables")
        dense = dense or DenseWorkload()
        try:
            estimator, placements = self._partition(tables, dense)
        except PlanError as error:
            raise PlanError(f"{error}; {self.suggest(tables, dense)}") from None
        return estimate_plan(estimator, placements, tables, dense, self.calibration, notes)

    def suggest(self, tables: Sequence[TableWorkload], dense: DenseWorkload | None = None) -> str:
        """What would fit, as one clause: more ranks, an SSD tier, or a smaller embedding dim."""
        topo, dense = self.topology, dense or DenseWorkload()
        fixes = []
        ranks = minimum_world_size(self, tables, dense)
        if ranks is not None and ranks != topo.world_size:
            fixes.append(f"{ranks} ranks (--world-size {ranks})")
        ssd = self._ssd_that_fits(tables, dense)
        if ssd is not None:
            fixes.append(f"an SSD tier of {format_bytes(ssd)} per rank (--ssd-per-rank {_size_text(ssd)})")
        dim = self._dim_that_fits(tables, dense)
        if dim is not None:
            fixes.append(f"embedding_dim {dim} (embedding.embedding_dim={dim})")
        if not fixes:
            return "nothing simple would fit: check the sharding overrides"
        return "would fit: " + ", or ".join(fixes)

    def _ssd_that_fits(self, tables: Sequence[TableWorkload], dense: DenseWorkload) -> int | None:
        topo = self.topology
        total = sum(ShardEstimator.row_bytes(t, t.config.embedding_dim) * t.config.num_embeddings for t in tables)
        size = max(int(total / topo.world_size / topo.headroom), topo.ssd_per_rank + 1)
        size = 1 << math.ceil(math.log2(size))
        for _ in range(8):  # up to 128x the data's share; beyond, RAM for caches is what lacks
            if self._with(dataclasses.replace(topo, ssd_per_rank=size)).fits(tables, dense):
                return size
            size *= 2
        return None

    def _dim_that_fits(self, tables: Sequence[TableWorkload], dense: DenseWorkload) -> int | None:
        def capped(dim: int) -> list[TableWorkload]:
            return [
                dataclasses.replace(
                    t, config=dataclasses.replace(t.config, embedding_dim=min(dim, t.config.embedding_dim))
                )
                for t in tables
            ]

        low, high = 0, max(t.config.embedding_dim for t in tables) - 1
        while low < high:  # largest dim in [1, high] that fits; low = 0 means none
            middle = (low + high + 1) // 2
            if self.fits(capped(middle), dense):
                low = middle
            else:
                high = middle - 1
        return low or None


def _size_text(num_bytes: int) -> str:
    """``num_bytes`` as a size the config reads back exactly, e.g. ``64GiB``."""
    for power, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if num_bytes % (1 << power) == 0:
            return f"{num_bytes >> power}{unit}"
    return str(num_bytes)


def minimum_world_size(
    planner: ShardingPlanner,
    tables: Sequence[TableWorkload],
    dense: DenseWorkload | None = None,
    limit: int = _MAX_WORLD_SIZE,
) -> int | None:
    """The fewest ranks (a multiple of ``ranks_per_host``, per-rank resources unchanged) on which
    ``tables`` fit, or ``None`` if not even ``limit`` ranks do.

    Starts from the bytes-over-capacity lower bound, doubles until a plan fits, then bisects.

    Example::

        >>> from terarec.embedding import EmbeddingTableConfig
        >>> tables = [TableWorkload(EmbeddingTableConfig("t", 10**6, 64, ("f",)), (1.0,))]  # 260 MB
        >>> minimum_world_size(ShardingPlanner(Topology(1, ram_per_rank=100 << 20), 128), tables)
        3
    """
    topo, dense = planner.topology, dense or DenseWorkload()
    step = topo.ranks_per_host
    total = sum(ShardEstimator.row_bytes(t, t.config.embedding_dim) * t.config.num_embeddings for t in tables)
    per_rank = max(topo.ram_budget - dense.ram_bytes, 1) + topo.ssd_budget
    low = max(step, math.ceil(total / per_rank / step) * step)

    def fits(world: int) -> bool:
        return planner._with(dataclasses.replace(topo, world_size=world)).fits(tables, dense)

    high = low
    while not fits(high):
        if high >= limit:
            return None
        low, high = high + step, max(min(high * 2, limit) // step * step, high + step)
    while low < high:
        middle = max(low, (low + high) // 2 // step * step)
        if fits(middle):
            high = middle
        else:
            low = middle + step
    return high
