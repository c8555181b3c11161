"""The sharding layer's configuration: how tables may be split (:class:`ShardingType`), on
which tier, what crosses the network in which precision, the training mode, and the overrides
that pin a table's placement (``sharding.*``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from terarec.errors import ConfigError

__all__ = [
    "CommPrecision",
    "ShardingConfig",
    "ShardingOverride",
    "ShardingType",
    "Tier",
    "TrainingMode",
]


class ShardingType(enum.Enum):
    """How one table is split across ranks (TorchRec's names).

    - ``DATA_PARALLEL``: every rank holds the whole table; gradients are all-reduced. For
      small tables, where that costs less than sending IDs and pooled rows around.
    - ``TABLE_WISE``: the whole table on one rank.
    - ``ROW_WISE``: rows split evenly over a set of ranks; each produces partial sums.
    - ``COLUMN_WISE``: columns split over ranks; each shard holds every row.
    - ``TABLE_ROW_WISE``: row-wise over the ranks of one host, partial sums combined
      inside the host before anything crosses the network.
    """

    DATA_PARALLEL = "data_parallel"
    TABLE_WISE = "table_wise"
    ROW_WISE = "row_wise"
    COLUMN_WISE = "column_wise"
    TABLE_ROW_WISE = "table_row_wise"


class Tier(enum.Enum):
    """Where a shard's rows and optimizer state live: RAM, or SSD behind a RAM cache."""

    RAM = "ram"
    SSD = "ssd"


class CommPrecision(enum.Enum):
    """Number format of pooled embeddings and their gradients on the wire (IDs stay ``int64``)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"

    @property
    def num_bytes(self) -> int:
        """Bytes per value: 4 or 2."""
        return 4 if self is CommPrecision.FP32 else 2


class TrainingMode(enum.Enum):
    """How embedding updates meet lookups when training on several ranks.

    - ``SYNC``: a step's updates land before the next step's lookups; deterministic.
    - ``HYBRID``: Persia's mode. The dense network stays synchronous; a step's embedding
      gradients are sent and applied on a background thread while later steps train, so a
      lookup misses the updates of the last ``staleness`` steps. Deterministic too.
    """

    SYNC = "sync"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class ShardingOverride:
    """Pins one table's sharding type or tier, overriding the planner's choice.

    Args:
        table (str): the table's name.
        sharding_type (ShardingType, optional): ``None`` lets the planner choose. Default: ``None``
        tier (Tier, optional): ``None`` lets the planner choose (RAM, else SSD). Default: ``None``

    Example::

        >>> ShardingOverride("C1", ShardingType.ROW_WISE).sharding_type.value
        'row_wise'
    """

    table: str
    sharding_type: ShardingType | None = None
    tier: Tier | None = None

    def __post_init__(self) -> None:
        if not self.table:
            raise ConfigError("sharding.overrides: table must name a table")


@dataclass(frozen=True)
class ShardingConfig:
    """The ``sharding`` section of a run's config: the cluster a plan is for and its policy.

    Sizes are bytes. Whatever is not set comes from this machine: RAM from its total memory,
    bandwidths and latencies from ``terarec plan --calibrate`` (or documented defaults).

    Args:
        world_size (int, optional): ranks to plan for. Default: ``1``
        ranks_per_host (int, optional): ranks sharing one machine (its RAM, SSD and network
            link); must divide ``world_size``. Default: ``1``
        comm_precision (CommPrecision, optional): format of pooled embeddings and their
            gradients on the wire. Default: ``CommPrecision.FP32``
        ram_per_rank (int, optional): RAM of one rank; ``None``: this machine's total RAM
            divided by ``ranks_per_host``. Default: ``None``
        ssd_per_rank (int, optional): local SSD of one rank; ``0`` keeps every table in RAM.
            Default: ``0``
        network_gbps (float, optional): each host's network bandwidth in Gbit/s per direction;
            ``None`` assumes 10. Default: ``None``
        zipf_exponent (float, optional): skew of ID frequencies (a bounded Zipf law);
            ``None`` takes synthetic data's own, else assumes 1.05. Default: ``None``
        min_cache_fraction (float, optional): RAM cache of a shard the planner moves to SSD,
            as a fraction of its bytes, before leftover RAM is shared out. Default: ``0.02``
        overrides (tuple[ShardingOverride, ...], optional): per-table sharding type or tier.
            Default: ``()``
        mode (TrainingMode, optional): synchronous, or Persia-style hybrid embedding updates.
            Default: ``TrainingMode.SYNC``
        staleness (int, optional): in hybrid mode, the recent steps whose embedding updates
            a lookup misses (``>= 1``). Default: ``1``
        timeout_seconds (float, optional): how long a rank waits in a collective for the others
            before it stops with an error (a dead or stuck rank). Default: ``300``

    Example::

        >>> ShardingConfig(world_size=8, ranks_per_host=2).comm_precision
        <CommPrecision.FP32: 'fp32'>
    """

    world_size: int = 1
    ranks_per_host: int = 1
    comm_precision: CommPrecision = CommPrecision.FP32
    ram_per_rank: int | None = None
    ssd_per_rank: int = 0
    network_gbps: float | None = None
    zipf_exponent: float | None = None
    min_cache_fraction: float = 0.02
    overrides: tuple[ShardingOverride, ...] = ()
    mode: TrainingMode = TrainingMode.SYNC
    staleness: int = 1
    timeout_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.staleness < 1:
            raise ConfigError(f"sharding.staleness must be >= 1, got {self.staleness}")
        if not self.timeout_seconds > 0:
            raise ConfigError(f"sharding.timeout_seconds must be > 0, got {self.timeout_seconds}")
        for name in ("world_size", "ranks_per_host"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sharding.{name} must be >= 1, got {getattr(self, name)}")
        if self.world_size % self.ranks_per_host:
            raise ConfigError(
                f"sharding.ranks_per_host ({self.ranks_per_host}) must divide sharding.world_size ({self.world_size})"
            )
        if self.ram_per_rank is not None and self.ram_per_rank < 1:
            raise ConfigError(f"sharding.ram_per_rank must be >= 1 when set, got {self.ram_per_rank}")
        if self.ssd_per_rank < 0:
            raise ConfigError(f"sharding.ssd_per_rank must be >= 0, got {self.ssd_per_rank}")
        if self.network_gbps is not None and not self.network_gbps > 0:
            raise ConfigError(f"sharding.network_gbps must be > 0 when set, got {self.network_gbps}")
        if self.zipf_exponent is not None and not 0.0 <= self.zipf_exponent <= 5.0:
            raise ConfigError(f"sharding.zipf_exponent must be in [0, 5], got {self.zipf_exponent}")
        if not 0.0 < self.min_cache_fraction <= 1.0:
            raise ConfigError(f"sharding.min_cache_fraction must be in (0, 1], got {self.min_cache_fraction}")
        names = [override.table for override in self.overrides]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigError(f"sharding.overrides names table(s) {twice} more than once")
