"""The sharding layer's types: what a plan is made of, and the machine it is made for (its
configuration is in :mod:`terarec.sharding.config`).

Vocabulary follows TorchRec's planner: a :class:`Topology` describes the ranks and their
resources, each table gets a :class:`TablePlacement` (a :class:`ShardingType` and one
:class:`ShardPlacement` per shard, each on a rank and a :class:`Tier`), and a :class:`Plan`
holds every placement with its predicted memory, traffic and step time. Sizes are bytes,
bandwidths bytes per second, times seconds, all per training step unless said otherwise.

Shape symbols, library-wide: ``B`` examples per rank per step (``batch_size``), ``W`` ranks
(``world_size``), ``G = B * W`` examples per step, ``L`` IDs per example of a table (the sum
of its features' pooling factors), ``F`` features of a table, ``D`` embedding dim.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field

from terarec.embedding import EmbeddingTableConfig
from terarec.models import RecModel
from terarec.sharding.config import CommPrecision, ShardingType, Tier

__all__ = [
    "DenseWorkload",
    "Plan",
    "RankLoad",
    "Resource",
    "ShardPlacement",
    "Storage",
    "TablePlacement",
    "TableWorkload",
    "Topology",
]


class Resource(enum.Enum):
    """What limits a plan: a capacity (how many ranks it needs) or a rate (how fast a step runs)."""

    RAM_CAPACITY = "RAM capacity"
    SSD_CAPACITY = "SSD capacity"
    DENSE_COMPUTE = "dense compute"
    MEMORY_BANDWIDTH = "memory bandwidth (embedding lookups and updates)"
    SSD_BANDWIDTH = "SSD bandwidth (cache misses)"
    NETWORK = "network (between hosts)"
    INTRA_HOST = "intra-host transfers"
    EXCHANGE = "exchange packing (pooled rows and gradients onto and off the wire)"
    LATENCY = "collective latency"


@dataclass(frozen=True)
class Topology:
    """The ranks a plan is for and what each can do.

    Memory and bandwidth are per rank, except ``network_bandwidth``, which the
    ``ranks_per_host`` ranks of a host share. The defaults are deliberately conservative
    stand-ins for a commodity machine, used when nothing was measured (see
    :mod:`terarec.sharding.calibration`).

    Args:
        world_size (int): ranks ``W``.
        ram_per_rank (int): RAM of one rank.
        ssd_per_rank (int, optional): local SSD of one rank; ``0`` means none. Default: ``0``
        ranks_per_host (int, optional): ranks per machine; divides ``world_size``. Default: ``1``
        network_bandwidth (float, optional): a host's network bytes/s, per direction. Default: ``1.25e9`` (10 Gbit/s)
        intra_host_bandwidth (float, optional): bytes/s between two ranks of a host. Default: ``2e9``
        memory_bandwidth (float, optional): bytes/s one rank gathers and scatters embedding rows
            at (random rows, not streaming). Default: ``5e9``
        ssd_bandwidth (float, optional): bytes/s of random reads and writes one rank gets from
            its SSD. Default: ``1e9``
        dense_flops (float, optional): FLOP/s of one rank on the dense network. Default: ``5e10``
        collective_latency (float, optional): seconds per collective per tree level. Default: ``1e-4``
        exchange_rate (float, optional): pooled values (embedding columns or their gradients)
            per second one rank packs for an exchange and adds back into place on arrival, in
            fp32; the copies the exchange itself makes are in the bandwidths. Default: ``1e9``
        conversion_rate (float, optional): values per second one rank converts between fp32 and
            a 16-bit wire format (bf16, fp16), on top of ``exchange_rate``. Default: ``1e9``
        ssd_block_bytes (int, optional): smallest SSD read or write. Default: ``4096``
        headroom (float, optional): fraction of RAM and SSD a plan may fill. Default: ``0.9``

    Example::

        >>> topology = Topology(world_size=8, ram_per_rank=64 << 30, ranks_per_host=4)
        >>> topology.num_hosts, topology.host_of(5), topology.ram_budget
        (2, 1, 61847529062)
    """

    world_size: int
    ram_per_rank: int
    ssd_per_rank: int = 0
    ranks_per_host: int = 1
    network_bandwidth: float = 1.25e9
    intra_host_bandwidth: float = 2e9
    memory_bandwidth: float = 5e9
    ssd_bandwidth: float = 1e9
    dense_flops: float = 5e10
    collective_latency: float = 1e-4
    exchange_rate: float = 1e9
    conversion_rate: float = 1e9
    ssd_block_bytes: int = 4096
    headroom: float = 0.9

    def __post_init__(self) -> None:
        if self.world_size < 1 or self.ranks_per_host < 1 or self.world_size % self.ranks_per_host:
            raise ValueError(
                f"Topology: world_size ({self.world_size}) must be a positive multiple of ranks_per_host "
                f"({self.ranks_per_host})"
            )
        if self.ram_per_rank < 1 or self.ssd_per_rank < 0:
            raise ValueError(
                f"Topology: ram_per_rank must be >= 1 and ssd_per_rank >= 0, got "
                f"{self.ram_per_rank} and {self.ssd_per_rank}"
            )
        for name in (
            "network_bandwidth",
            "intra_host_bandwidth",
            "memory_bandwidth",
            "ssd_bandwidth",
            "dense_flops",
            "collective_latency",
            "exchange_rate",
            "conversion_rate",
            "ssd_block_bytes",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"Topology: {name} must be a positive finite number, got {value}")
        if not 0.0 < self.headroom <= 1.0:
            raise ValueError(f"Topology: headroom must be in (0, 1], got {self.headroom}")

    @property
    def num_hosts(self) -> int:
        """Machines: ``world_size / ranks_per_host``."""
        return self.world_size // self.ranks_per_host

    def host_of(self, rank: int) -> int:
        """The host (machine) of ``rank``: ranks ``h * ranks_per_host ...`` share host ``h``."""
        return rank // self.ranks_per_host

    @property
    def ram_budget(self) -> int:
        """RAM a plan may fill on one rank: ``headroom * ram_per_rank``."""
        return int(self.ram_per_rank * self.headroom)

    @property
    def ssd_budget(self) -> int:
        """SSD a plan may fill on one rank: ``headroom * ssd_per_rank``."""
        return int(self.ssd_per_rank * self.headroom)


@dataclass(frozen=True)
class Storage:
    """Bytes per tier, of a shard or of a rank.

    Example::

        >>> need = Storage(ram_bytes=10, ssd_bytes=100)
        >>> need.fits_in(Storage(16, 0)), (need + need).ssd_bytes
        (False, 200)
    """

    ram_bytes: int = 0
    ssd_bytes: int = 0

    def __add__(self, other: Storage) -> Storage:
        return Storage(self.ram_bytes + other.ram_bytes, self.ssd_bytes + other.ssd_bytes)

    def fits_in(self, capacity: Storage) -> bool:
        """Whether both tiers are within ``capacity``."""
        return self.ram_bytes <= capacity.ram_bytes and self.ssd_bytes <= capacity.ssd_bytes


@dataclass(frozen=True)
class TableWorkload:
    """A table and how each training example reads it: what the cost model needs of a table.

    Args:
        config (EmbeddingTableConfig): the table.
        pooling_factors (tuple[float, ...]): mean IDs per example of each of
            ``config.feature_names`` (bag sizes; ``1.0`` for one-hot features).
        zipf_exponent (float, optional): skew of the table's ID frequencies; ``0`` is
            uniform. Default: ``1.05``

    Example::

        >>> from terarec.embedding import EmbeddingTableConfig
        >>> workload = TableWorkload(EmbeddingTableConfig("t", 1000, 16, ("a", "b")), (1.0, 20.0))
        >>> workload.ids_per_example, workload.num_features
        (21.0, 2)
    """

    config: EmbeddingTableConfig
    pooling_factors: tuple[float, ...]
    zipf_exponent: float = 1.05

    def __post_init__(self) -> None:
        if len(self.pooling_factors) != len(self.config.feature_names):
            raise ValueError(
                f"table {self.config.name!r}: pooling_factors needs one value per feature "
                f"({len(self.config.feature_names)}), got {len(self.pooling_factors)}"
            )
        if any(not (factor > 0 and math.isfinite(factor)) for factor in self.pooling_factors):
            raise ValueError(
                f"table {self.config.name!r}: pooling_factors must be positive, got {self.pooling_factors}"
            )
        if not 0.0 <= self.zipf_exponent <= 5.0:
            raise ValueError(f"table {self.config.name!r}: zipf_exponent must be in [0, 5], got {self.zipf_exponent}")

    @property
    def name(self) -> str:
        """The table's name."""
        return self.config.name

    @property
    def ids_per_example(self) -> float:
        """``L``: IDs one example looks up in this table."""
        return float(sum(self.pooling_factors))

    @property
    def num_features(self) -> int:
        """``F``: pooled vectors one example gets from this table."""
        return len(self.pooling_factors)


@dataclass(frozen=True)
class DenseWorkload:
    """The dense network, replicated on every rank under DistributedDataParallel.

    Args:
        num_parameters (int, optional): its parameters (all-reduced every step). Default: ``0``
        flops_per_example (float, optional): forward plus backward FLOPs per example. Default: ``0.0``
        bytes_per_parameter (int, optional): RAM per parameter: weights, gradients and
            optimizer state (Adam: 16). Default: ``16``
    """

    num_parameters: int = 0
    flops_per_example: float = 0.0
    bytes_per_parameter: int = 16

    @property
    def ram_bytes(self) -> int:
        """RAM of one replica: ``num_parameters * bytes_per_parameter``."""
        return self.num_parameters * self.bytes_per_parameter

    @classmethod
    def of_model(cls, model: RecModel) -> DenseWorkload:
        """The workload of ``model``, as it counts its own parameters and FLOPs
        (:meth:`~terarec.models.RecModel.dense_cost`)."""
        cost = model.dense_cost()
        return cls(num_parameters=cost.num_parameters, flops_per_example=cost.flops_per_example)


@dataclass(frozen=True)
class ShardPlacement:
    """One shard of a table: a block of rows and columns on one rank and tier.

    Args:
        rank (int): the rank that owns it.
        tier (Tier): where its rows live.
        row_offset (int): first row of the table it holds.
        num_rows (int): rows it holds.
        column_offset (int): first column it holds.
        embedding_dim (int): columns it holds.
        storage (Storage): its bytes per tier (rows, optimizer state, cache, ID map).
        cache_bytes (int, optional): RAM cache of an SSD shard (part of ``storage``). Default: ``0``
        lookup_seconds (float, optional): predicted time per step gathering and updating its
            rows in RAM. Default: ``0.0``
        ssd_seconds (float, optional): predicted time per step on SSD (cache misses). Default: ``0.0``
    """

    rank: int
    tier: Tier
    row_offset: int
    num_rows: int
    column_offset: int
    embedding_dim: int
    storage: Storage
    cache_bytes: int = 0
    lookup_seconds: float = 0.0
    ssd_seconds: float = 0.0


@dataclass(frozen=True)
class TablePlacement:
    """Where one table lives: its sharding type and shards.

    Args:
        name (str): the table.
        sharding_type (ShardingType): how it is split.
        num_embeddings (int): its rows ``R``.
        embedding_dim (int): its width ``D``.
        shards (tuple[ShardPlacement, ...]): one per piece (per rank for data-parallel).
    """

    name: str
    sharding_type: ShardingType
    num_embeddings: int
    embedding_dim: int
    shards: tuple[ShardPlacement, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ranks holding a shard, ascending."""
        return tuple(sorted({shard.rank for shard in self.shards}))

    @property
    def tiers(self) -> tuple[Tier, ...]:
        """The tiers its shards use, RAM first."""
        return tuple(tier for tier in Tier if any(shard.tier is tier for shard in self.shards))

    @property
    def storage(self) -> Storage:
        """Bytes over every shard."""
        total = Storage()
        for shard in self.shards:
            total = total + shard.storage
        return total


@dataclass(frozen=True)
class RankLoad:
    """One rank's predicted memory and time per step.

    Args:
        rank (int): the rank.
        storage (Storage): bytes it holds (table shards, caches and the dense replica).
        cache_bytes (int): the part of its RAM that caches SSD shards.
        dense_seconds (float): dense forward and backward.
        lookup_seconds (float): embedding lookups and sparse updates in RAM.
        ssd_seconds (float): SSD reads and write-backs.
        network_seconds (float): its host's traffic to other hosts.
        intra_host_seconds (float): its traffic to ranks of its own host.
        exchange_seconds (float): packing the pooled rows and gradients it sends and adding
            those it receives into place (its own share included), with conversions to and
            from the wire precision.
        latency_seconds (float): fixed cost of the step's collectives.
        sent_bytes (float): bytes it sends per step.
        received_bytes (float): bytes it receives per step.
    """

    rank: int
    storage: Storage
    cache_bytes: int
    dense_seconds: float
    lookup_seconds: float
    ssd_seconds: float
    network_seconds: float
    intra_host_seconds: float
    exchange_seconds: float
    latency_seconds: float
    sent_bytes: float
    received_bytes: float

    def seconds_by_resource(self) -> dict[Resource, float]:
        """The step's time on this rank split by what it is spent on."""
        return {
            Resource.DENSE_COMPUTE: self.dense_seconds,
            Resource.MEMORY_BANDWIDTH: self.lookup_seconds,
            Resource.SSD_BANDWIDTH: self.ssd_seconds,
            Resource.NETWORK: self.network_seconds,
            Resource.INTRA_HOST: self.intra_host_seconds,
            Resource.EXCHANGE: self.exchange_seconds,
            Resource.LATENCY: self.latency_seconds,
        }

    @property
    def step_seconds(self) -> float:
        """Predicted step time of this rank: the sum of its parts (no overlap assumed)."""
        return sum(self.seconds_by_resource().values())


@dataclass(frozen=True)
class Plan:
    """Every table's placement with the predicted memory, traffic and speed of a step.

    Args:
        topology (Topology): the ranks planned for.
        batch_size (int): examples per rank per step ``B``.
        comm_precision (CommPrecision): format of pooled embeddings on the wire.
        placements (tuple[TablePlacement, ...]): one per table, in input order.
        ranks (tuple[RankLoad, ...]): one per rank.
        comm_bytes (dict[str, float]): bytes sent per step over all ranks, by kind:
            ``"ids"`` (IDs and bag lengths), ``"pooled"`` (pooled embeddings and their
            gradients) and ``"allreduce"`` (data-parallel tables and the dense network).
        num_parameters (int): embedding parameters (rows x dim over every table).
        calibration (str): where the rates came from (measured, preset or defaults).
        notes (tuple[str, ...], optional): assumptions worth printing. Default: ``()``

    Attributes:
        step_seconds (float): the slowest rank's step time.
        examples_per_second (float): ``G / step_seconds``.
        time_bound (Resource): the largest part of the slowest rank's step.
        capacity_bound (Resource): the fuller tier, relative to its budget.
    """

    topology: Topology
    batch_size: int
    comm_precision: CommPrecision
    placements: tuple[TablePlacement, ...]
    ranks: tuple[RankLoad, ...]
    comm_bytes: dict[str, float]
    num_parameters: int
    calibration: str
    notes: tuple[str, ...] = field(default=())

    @property
    def slowest_rank(self) -> RankLoad:
        """The rank with the longest predicted step."""
        return max(self.ranks, key=lambda load: load.step_seconds)

    @property
    def step_seconds(self) -> float:
        """Predicted step time: the slowest rank's."""
        return self.slowest_rank.step_seconds

    @property
    def examples_per_second(self) -> float:
        """Predicted throughput: ``G / step_seconds``."""
        step = self.step_seconds
        return self.batch_size * self.topology.world_size / step if step > 0 else math.inf

    @property
    def time_bound(self) -> Resource:
        """What the slowest rank spends most of its step on."""
        parts = self.slowest_rank.seconds_by_resource()
        return max(parts, key=lambda resource: parts[resource])

    def utilization(self) -> dict[Resource, float]:
        """The fullest rank's use of each tier, as a fraction of its budget (0 when it has none).

        RAM counts what must be there, not SSD caches: those only take the RAM that is left.
        """
        ram = max(load.storage.ram_bytes - load.cache_bytes for load in self.ranks)
        ssd = max(load.storage.ssd_bytes for load in self.ranks)
        budget = self.topology
        return {
            Resource.RAM_CAPACITY: ram / budget.ram_budget,
            Resource.SSD_CAPACITY: ssd / budget.ssd_budget if budget.ssd_budget else 0.0,
        }

    @property
    def capacity_bound(self) -> Resource:
        """The tier closest to full (see :meth:`utilization`)."""
        used = self.utilization()
        return max(used, key=lambda resource: used[resource])

    def to_dict(self) -> dict[str, object]:
        """A JSON-able summary: inputs, every placement and rank, and the predictions."""

        def plain(value: object) -> object:
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, dict):
                return {str(plain(k)): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        ranks = []
        for load in self.ranks:
            entry = asdict(load)
            entry["step_seconds"] = load.step_seconds
            ranks.append(entry)
        return {
            "topology": asdict(self.topology),
            "batch_size": self.batch_size,
            "global_batch_size": self.batch_size * self.topology.world_size,
            "comm_precision": self.comm_precision.value,
            "num_parameters": self.num_parameters,
            "calibration": self.calibration,
            "notes": list(self.notes),
            "step_seconds": self.step_seconds,
            "examples_per_second": self.examples_per_second,
            "time_bound": self.time_bound.value,
            "capacity_bound": self.capacity_bound.value,
            "utilization": plain(self.utilization()),
            "comm_bytes_per_step": dict(self.comm_bytes),
            "placements": [plain(asdict(placement)) for placement in self.placements],
            "ranks": plain(ranks),
        }
