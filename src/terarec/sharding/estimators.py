"""The cost model of one shard: its bytes per tier, lookup traffic, communication and time
(a whole plan's traffic and time: :mod:`terarec.sharding.traffic`).

Per step, with ``B`` examples per rank, ``W`` ranks, ``G = B * W``, a table of ``R`` rows,
width ``D``, ``S`` optimizer-state floats per row, ``L`` IDs and ``F`` features per example,
and ``p`` bytes per communicated value (:class:`~terarec.sharding.config.CommPrecision`):

- **memory**: a shard of ``r`` rows and ``d`` columns holds ``r * (d a + S(d) s)`` bytes of
  weights and state (``a``, ``s``: 4 bytes per value in fp32, 2 in bf16), as its
  :meth:`~terarec.embedding.EmbeddingTableConfig.memory_estimate` says (which also counts ID
  maps of dynamic tables). In RAM that is all RAM; on SSD it is all SSD, and RAM holds a cache
  of the hottest rows.
- **lookups**: ``N = G * L`` IDs reach the table; a shard of a fraction ``f`` of the rows
  (rows are hashed, so hot IDs spread evenly) sees ``n = f * N`` of them and ``u = f * U``
  distinct rows, ``U`` the expected distinct rows among ``N`` draws of a bounded Zipf law
  (:func:`expected_unique`). It moves ``n d (a + 4) + 2 u (d a + S s)`` bytes of RAM: gather
  and pool forward, read each ID's float32 gradient backward, read and write the touched rows
  and state. Data-parallel replicas gather their own ``B * L`` IDs and update every row (the
  all-reduced gradient is dense): ``B L D (a + 4) + 2 R (D a + S s)``.
- **SSD**: rows missing from an SSD shard's cache (the ``c`` hottest rows, an ideal LFU) are
  read and later written back, ``2 * m * max(row bytes, block)`` bytes, ``m`` the expected
  distinct missed rows.
- **all-to-all**: IDs and bag lengths travel as ``int64`` (8 bytes): ``B * (L + F) * 8`` from
  each rank to a table-wise owner (``L / k`` IDs but every length to each of ``k`` row-wise
  owners). Pooled embeddings ``B * F * d * p`` per rank and shard travel back, gradients
  mirror them; row-wise owners send each rank the partial sums of its examples (a
  reduce-scatter when the table spans every rank). Table-row-wise owners (the ``k`` ranks of
  one host) first reduce inside their host: the owner of local index ``l`` serves the ranks of
  local index ``l`` (``G / k`` examples), and gets every other owner's partial sums of them;
  it then sends each rank it serves on another host its reduced rows, ``B * F * d * p``, and
  gets their gradients back, which it forwards to every other owner (``G / k`` examples each).
- **all-reduce**: data-parallel gradients (``R * D * 4``) and the dense network (``P * 4``) use a
  hierarchical ring: ``2 (h - 1) / h`` of the bytes inside a host, ``2 (H - 1) / H`` per host
  over the network.
- **time** of a rank is the sum of dense compute (``B * FLOPs / rate``), lookups, SSD, its
  host's network traffic (``max(out, in) / bandwidth``), its intra-host traffic, the CPU
  time of packing the pooled values it sends and receives (every one, its own share
  included: ``values / exchange_rate``, plus ``values / conversion_rate`` in bf16 or fp16)
  and ``latency * ceil(log2 W)`` per collective: no overlap is assumed, so the estimate is an
  upper bound of a well-pipelined step. The step takes as long as the slowest rank.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from terarec.embedding import EmbeddingTableConfig, TieredConfig
from terarec.sharding.config import CommPrecision, ShardingType, Tier
from terarec.sharding.types import DenseWorkload, Storage, TableWorkload, Topology
from terarec.sharding.zipf import expected_unique

__all__ = ["FLOAT_BYTES", "ID_BYTES", "ShardCost", "ShardEstimator"]

ID_BYTES = 8
"""Bytes of one ID or bag length on the wire (``int64``)."""

FLOAT_BYTES = 4
"""Bytes of one float32 gradient or weight on the wire."""


@dataclass(frozen=True)
class ShardCost:
    """Predicted work of one shard in one step.

    Args:
        ids (float): IDs it looks up.
        unique_rows (float): distinct rows among them.
        missed_rows (float): distinct rows read from SSD (cache misses).
        memory_bytes (float): bytes gathered, scattered, read and written in RAM.
        ssd_bytes (float): bytes read from and written back to SSD.
        lookup_seconds (float): ``memory_bytes / memory_bandwidth``.
        ssd_seconds (float): ``ssd_bytes / ssd_bandwidth``.
    """

    ids: float
    unique_rows: float
    missed_rows: float
    memory_bytes: float
    ssd_bytes: float
    lookup_seconds: float
    ssd_seconds: float


def _shard_config(config: EmbeddingTableConfig, num_rows: int, embedding_dim: int) -> EmbeddingTableConfig:
    """The config of a ``num_rows`` x ``embedding_dim`` shard of ``config``: same optimizer,
    features and kind; a configured SSD cache scaled to the shard's share of the table."""
    changes: dict[str, object] = {"num_embeddings": max(int(num_rows), 1), "embedding_dim": int(embedding_dim)}
    if config.tiered is not None:
        share = num_rows * embedding_dim / (config.num_embeddings * config.embedding_dim)
        changes["tiered"] = dataclasses.replace(
            config.tiered, cache_bytes=max(1, int(config.tiered.cache_bytes * share))
        )
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


class ShardEstimator:
    """Predicts a shard's memory, its lookup and SSD work, and the traffic of a sharding.

    See the module docstring for the formulas. Communication estimated here is per shard and
    per rank, for balancing; :func:`estimate_plan` computes a placed plan's traffic exactly.

    Args:
        topology (Topology): the ranks and their rates.
        batch_size (int): examples per rank per step ``B``.
        comm_precision (CommPrecision, optional): pooled embeddings on the wire.
            Default: ``CommPrecision.FP32``

    Example::

        >>> from terarec.embedding import EmbeddingTableConfig, TieredConfig
        >>> table = TableWorkload(EmbeddingTableConfig("t", 1000, 16, ("f",)), (1.0,), zipf_exponent=0.0)
        >>> estimator = ShardEstimator(Topology(world_size=2, ram_per_rank=1 << 30), batch_size=50)
        >>> estimator.storage(table, 1000, 16, Tier.RAM)  # 1000 x (16 + 1) floats
        Storage(ram_bytes=68000, ssd_bytes=0)
        >>> cost = estimator.cost(table, ShardingType.TABLE_WISE, 1000, 16)
        >>> cost.ids, round(cost.unique_rows, 1)  # 2 ranks x 50 examples x 1 ID
        (100.0, 95.2)
    """

    def __init__(self, topology: Topology, batch_size: int, comm_precision: CommPrecision = CommPrecision.FP32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.topology = topology
        self.batch_size = int(batch_size)
        self.comm_precision = comm_precision

    @property
    def global_batch_size(self) -> int:
        """``G = B * W``."""
        return self.batch_size * self.topology.world_size

    @staticmethod
    def row_bytes(table: TableWorkload, embedding_dim: int) -> int:
        """Bytes of one row of weights and optimizer state at width ``embedding_dim``, each in
        its stored precision."""
        return _shard_config(table.config, 1, embedding_dim).row_bytes

    def storage(
        self, table: TableWorkload, num_rows: int, embedding_dim: int, tier: Tier, cache_bytes: int = 0
    ) -> Storage:
        """Bytes per tier of a shard of ``num_rows`` x ``embedding_dim`` on ``tier``.

        In RAM that is every row (and a dynamic table's ID map); on SSD, what a tiered table of
        that size reports: every row on disk, and in RAM its cache (the table's configured one,
        scaled to the shard, else ``cache_bytes``) and its row-to-slot bookkeeping.

        Args:
            table (TableWorkload): the table the shard is cut from.
            num_rows (int): rows of the shard.
            embedding_dim (int): columns of the shard.
            tier (Tier): where its rows live.
            cache_bytes (int, optional): RAM cache of an SSD shard. Default: ``0``
        """
        estimate = self.shard_config(table, num_rows, embedding_dim, tier, cache_bytes).memory_estimate()
        return Storage(estimate.ram_bytes, estimate.disk_bytes)

    def shard_config(
        self, table: TableWorkload, num_rows: int, embedding_dim: int, tier: Tier, cache_bytes: int = 0
    ) -> EmbeddingTableConfig:
        """The table config a shard on ``tier`` is built from: in RAM a plain table; on SSD a
        tiered one, with the table's configured cache (scaled to the shard) or ``cache_bytes``."""
        config = _shard_config(table.config, num_rows, embedding_dim)
        if tier is Tier.RAM:
            return dataclasses.replace(config, tiered=None)
        if config.tiered is None:
            return dataclasses.replace(config, tiered=TieredConfig(cache_bytes=max(int(cache_bytes), 1)))
        return config

    def cache_rows(self, table: TableWorkload, num_rows: int, embedding_dim: int, cache_bytes: int) -> int:
        """Rows an SSD shard's RAM cache holds (the table's configured cache, if it has one)."""
        config = self.shard_config(table, num_rows, embedding_dim, Tier.SSD, cache_bytes)
        return min(num_rows, config.tiered.cache_bytes // config.row_bytes)  # type: ignore[union-attr]

    def step_rows(self, table: TableWorkload, num_rows: int) -> float:
        """Expected distinct rows a shard of ``num_rows`` rows (hashed from the whole table) touches per step."""
        ids = self.global_batch_size * table.ids_per_example
        return (
            expected_unique(ids, table.config.num_embeddings, table.zipf_exponent)
            * num_rows
            / table.config.num_embeddings
        )

    def cost(
        self,
        table: TableWorkload,
        sharding_type: ShardingType,
        num_rows: int,
        embedding_dim: int,
        tier: Tier = Tier.RAM,
        cache_bytes: int = 0,
    ) -> ShardCost:
        """Lookup and SSD work of one shard per step (see the module docstring).

        Args:
            table (TableWorkload): the table the shard is cut from.
            sharding_type (ShardingType): how the table is split (data-parallel replicas
                look up their own rank's IDs; other shards their share of every rank's).
            num_rows (int): rows of the shard.
            embedding_dim (int): columns of the shard.
            tier (Tier, optional): where its rows live. Default: ``Tier.RAM``
            cache_bytes (int, optional): RAM cache of an SSD shard. Default: ``0``
        """
        topo = self.topology
        rows_total, ids_per_example = table.config.num_embeddings, table.ids_per_example
        row_bytes = self.row_bytes(table, embedding_dim)
        # Per ID: its weights read by the lookup, its float32 gradient read by the update.
        id_bytes = embedding_dim * (table.config.weights_dtype.itemsize + FLOAT_BYTES)
        if sharding_type is ShardingType.DATA_PARALLEL:
            ids = self.batch_size * ids_per_example
            unique = expected_unique(self.global_batch_size * ids_per_example, rows_total, table.zipf_exponent)
            memory = ids * id_bytes + 2 * rows_total * row_bytes
            return ShardCost(ids, unique, 0.0, memory, 0.0, memory / topo.memory_bandwidth, 0.0)
        share = num_rows / rows_total
        all_ids = self.global_batch_size * ids_per_example
        ids = all_ids * share
        unique = expected_unique(all_ids, rows_total, table.zipf_exponent) * share
        memory = ids * id_bytes + 2 * unique * row_bytes
        missed = ssd = 0.0
        if tier is Tier.SSD:
            cached = self.cache_rows(table, num_rows, embedding_dim, cache_bytes)
            missed = expected_unique(all_ids, rows_total, table.zipf_exponent, int(cached / share)) * share
            ssd = 2 * missed * max(self.row_bytes(table, embedding_dim), topo.ssd_block_bytes)
        return ShardCost(ids, unique, missed, memory, ssd, memory / topo.memory_bandwidth, ssd / topo.ssd_bandwidth)

    def _rank_bandwidth(self) -> float:
        topo = self.topology
        if topo.num_hosts > 1:
            return topo.network_bandwidth / topo.ranks_per_host
        return topo.intra_host_bandwidth

    def owner_comm_seconds(
        self, table: TableWorkload, sharding_type: ShardingType, embedding_dim: int, num_owners: int
    ) -> float:
        """Time an owner of one shard (of width ``embedding_dim``, one of ``num_owners``) spends
        receiving IDs and gradients and sending pooled results; for balancing ranks."""
        topo, b, p = self.topology, self.batch_size, self.comm_precision.num_bytes
        others = topo.world_size - 1
        if others == 0:
            return 0.0
        length, features = table.ids_per_example, table.num_features
        pooled = 2 * b * features * embedding_dim * p
        if sharding_type is ShardingType.DATA_PARALLEL:
            volume = 4 * others / topo.world_size * table.config.num_embeddings * embedding_dim * FLOAT_BYTES
            return volume / (2 * self._rank_bandwidth())
        if sharding_type in (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE):
            volume = others * (b * (length + features) * ID_BYTES + pooled)
            return volume / (2 * self._rank_bandwidth())
        ids = others * b * (length / num_owners + features) * ID_BYTES
        if sharding_type is ShardingType.ROW_WISE:
            return (ids + others * pooled) / (2 * self._rank_bandwidth())
        # inside the host, each owner receives every other's partial sums of its G / k examples
        # and sends it its own of theirs (forward), and the reverse for gradients (backward); across
        # hosts, it serves one rank per other host
        intra = 4 * (num_owners - 1) * self.global_batch_size / num_owners * features * embedding_dim * p
        served = max(topo.world_size / num_owners - 1, 0.0)
        return (ids + served * pooled) / (2 * self._rank_bandwidth()) + intra / (2 * topo.intra_host_bandwidth)

    def consumer_comm_seconds(self, table: TableWorkload, sharding_type: ShardingType, num_owners: int) -> float:
        """Time every rank spends sending IDs and gradients to a table's owners and receiving
        its pooled results; the same on every rank, whatever the placement."""
        if self.topology.world_size == 1 or sharding_type is ShardingType.DATA_PARALLEL:
            return 0.0
        b, p = self.batch_size, self.comm_precision.num_bytes
        length, features, dim = table.ids_per_example, table.num_features, table.config.embedding_dim
        if sharding_type is ShardingType.TABLE_WISE:
            volume = b * (length + features) * ID_BYTES + 2 * b * features * dim * p
        elif sharding_type is ShardingType.COLUMN_WISE:
            volume = num_owners * b * (length + features) * ID_BYTES + 2 * b * features * dim * p
        elif sharding_type is ShardingType.ROW_WISE:
            volume = b * (length + num_owners * features) * ID_BYTES + 2 * num_owners * b * features * dim * p
        else:
            volume = b * (length + num_owners * features) * ID_BYTES + 2 * b * features * dim * p
        return volume / (2 * self._rank_bandwidth())

    def dense_seconds(self, dense: DenseWorkload) -> float:
        """Dense forward and backward of one rank's batch."""
        return self.batch_size * dense.flops_per_example / self.topology.dense_flops
