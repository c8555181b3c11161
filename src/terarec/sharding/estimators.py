"""The cost model: bytes per tier, lookup traffic, communication and time of a shard and a plan.

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
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from terarec.embedding import EmbeddingTableConfig, TieredConfig
from terarec.sharding.config import CommPrecision, ShardingType, Tier
from terarec.sharding.types import (
    DenseWorkload,
    Plan,
    RankLoad,
    Storage,
    TablePlacement,
    TableWorkload,
    Topology,
)

__all__ = ["ID_BYTES", "ShardCost", "ShardEstimator", "estimate_plan", "expected_unique"]

ID_BYTES = 8
"""Bytes of one ID or bag length on the wire (``int64``)."""

_FLOAT_BYTES = 4
_EXACT_RANKS = 1 << 16  # below this many rows, sum over every row
_HEAD_RANKS = 1024  # beyond it, the hottest rows stay exact and the tail is bucketed
_TAIL_BUCKETS = 4096  # log-spaced: adjacent buckets differ by < 1% for 10^12 rows


@functools.lru_cache(maxsize=512)
def _zipf(num_rows: int, exponent: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Popularity-rank buckets of ranks ``1..num_rows``: first rank, size, and the probability
    of each row in the bucket (the bucket's mean of ``i ** -exponent``, normalised)."""
    if num_rows <= _EXACT_RANKS:
        lo = np.arange(1, num_rows + 1, dtype=np.float64)
        size = np.ones_like(lo)
    else:
        edges = np.unique(
            np.concatenate(
                [
                    np.arange(1, _HEAD_RANKS + 1, dtype=np.float64),
                    np.round(np.geomspace(_HEAD_RANKS + 1, num_rows + 1, _TAIL_BUCKETS)),
                ]
            )
        )
        lo, size = edges[:-1], np.diff(edges)
    a, b = lo - 0.5, lo + size - 0.5  # midpoint-corrected integral over each bucket
    if exponent == 1.0:
        integral = np.log(b / a)
    else:
        integral = (b ** (1.0 - exponent) - a ** (1.0 - exponent)) / (1.0 - exponent)
    mean = np.where(size == 1.0, lo**-exponent, integral / size)
    return lo, size, mean / float(np.sum(mean * size))


def expected_unique(num_ids: float, num_rows: int, zipf_exponent: float, skip_rows: int = 0) -> float:
    """Expected distinct rows among ``num_ids`` IDs drawn from a bounded Zipf law over ``num_rows``
    rows, counting only rows less popular than the ``skip_rows`` hottest.

    Row ``i`` (by popularity, ``1..R``) is drawn with probability
    :math:`p_i = i^{-s} / \\sum_j j^{-s}` and appears at least once with probability
    :math:`1 - (1 - p_i)^N`; the sum over rows is exact up to ``2**16`` rows and over
    log-spaced buckets above (``s = 0`` is uniform). With ``skip_rows`` set to a cache's rows,
    it is the expected distinct cache misses of a step. Vectorised: no loop over rows.

    Args:
        num_ids (float): IDs drawn ``N``.
        num_rows (int): rows ``R``.
        zipf_exponent (float): skew ``s``; ``0`` is uniform.
        skip_rows (int, optional): hottest rows not counted. Default: ``0``

    Example::

        >>> round(expected_unique(100, 100, 0.0), 2)  # 100 * (1 - 0.99 ** 100)
        63.4
        >>> expected_unique(100, 100, 0.0, skip_rows=100)
        0.0
        >>> expected_unique(10**6, 10**12, 1.05) < expected_unique(10**6, 10**12, 0.5) < 10**6
        True
    """
    if num_rows < 1:
        raise ValueError(f"num_rows must be >= 1, got {num_rows}")
    if num_ids <= 0 or skip_rows >= num_rows:
        return 0.0
    return _expected_unique(float(num_ids), int(num_rows), float(zipf_exponent), max(int(skip_rows), 0))


@functools.lru_cache(maxsize=1 << 14)
def _expected_unique(num_ids: float, num_rows: int, zipf_exponent: float, skip_rows: int) -> float:
    lo, size, p = _zipf(num_rows, zipf_exponent)
    with np.errstate(divide="ignore"):  # a row of probability 1 is always hit
        hit = -np.expm1(float(num_ids) * np.log1p(-np.minimum(p, 1.0)))
    counted = np.clip(lo + size - 1.0 - skip_rows, 0.0, size)  # rows of each bucket ranked below skip_rows
    return float(np.sum(counted * hit))


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
        id_bytes = embedding_dim * (table.config.weights_dtype.itemsize + _FLOAT_BYTES)
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
            volume = 4 * others / topo.world_size * table.config.num_embeddings * embedding_dim * _FLOAT_BYTES
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


class _Traffic:
    """Per-rank and per-host bytes of a step's point-to-point traffic, built from rank-one
    patterns ``bytes[r -> c] = u[r] * v[c]`` (``r != c``) in O(W) each."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        w, h = topology.world_size, topology.num_hosts
        self.sent, self.received = np.zeros(w), np.zeros(w)
        self.intra_sent, self.intra_received = np.zeros(w), np.zeros(w)
        self.host_out, self.host_in = np.zeros(h), np.zeros(h)
        # pooled bytes each rank packs and unpacks, its share to itself included: the exchange
        # sends that through the all-to-all too
        self.pooled_handled = np.zeros(w)
        self.total: dict[str, float] = {"ids": 0.0, "pooled": 0.0, "allreduce": 0.0}

    def add(self, kind: str, u: np.ndarray, v: np.ndarray) -> None:
        per_host = self.topology.ranks_per_host
        su, sv = float(u.sum()), float(v.sum())
        uh, vh = u.reshape(-1, per_host).sum(axis=1), v.reshape(-1, per_host).sum(axis=1)
        self.sent += u * (sv - v)
        self.received += v * (su - u)
        self.intra_sent += u * (np.repeat(vh, per_host) - v)
        self.intra_received += v * (np.repeat(uh, per_host) - u)
        self.host_out += uh * (sv - vh)
        self.host_in += vh * (su - uh)
        self.total[kind] += float(np.sum(u * (sv - v)))
        if kind == "pooled":
            self.pooled_handled += u * sv + v * su

    def all_reduce(self, num_bytes: float) -> None:
        topo = self.topology
        per_host, hosts = topo.ranks_per_host, topo.num_hosts
        intra = 2 * (per_host - 1) / per_host * num_bytes
        inter = 2 * (hosts - 1) / hosts * num_bytes
        self.sent += intra + inter / per_host
        self.received += intra + inter / per_host
        self.intra_sent += intra
        self.intra_received += intra
        self.host_out += inter
        self.host_in += inter
        self.total["allreduce"] += topo.world_size * (intra + inter / per_host)


def _indicator(ranks: Sequence[int], world_size: int, weights: Sequence[float] | None = None) -> np.ndarray:
    return np.bincount(np.asarray(ranks, dtype=np.int64), weights=weights, minlength=world_size).astype(np.float64)


def _add_table_traffic(
    traffic: _Traffic, estimator: ShardEstimator, placement: TablePlacement, table: TableWorkload
) -> None:
    topo = estimator.topology
    w, b, p = topo.world_size, estimator.batch_size, estimator.comm_precision.num_bytes
    length, features, dim = table.ids_per_example, table.num_features, placement.embedding_dim
    ranks = [shard.rank for shard in placement.shards]
    owners = np.minimum(_indicator(ranks, w), 1.0)
    k = float(owners.sum())
    ones = np.ones(w)
    kind = placement.sharding_type
    if kind is ShardingType.DATA_PARALLEL:
        traffic.all_reduce(placement.num_embeddings * dim * _FLOAT_BYTES)
        return
    if kind in (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE):
        traffic.add("ids", ones * b * (length + features) * ID_BYTES, owners)
        out = _indicator(ranks, w, [shard.embedding_dim for shard in placement.shards]) * b * features * p
        traffic.add("pooled", out, ones)
        traffic.add("pooled", ones, out)
        return
    traffic.add("ids", ones * b * (length / k + features) * ID_BYTES, owners)
    if kind is ShardingType.ROW_WISE:
        traffic.add("pooled", owners * b * features * dim * p, ones)
        traffic.add("pooled", ones * b * features * dim * p, owners)
        return
    # Table-row-wise, as ShardedEmbeddingCollection runs it: inside the host each owner sends
    # every other its partial sums of the G / k examples that one serves, and later forwards it
    # the gradients of its own G / k; the owner of local index l serves the ranks of local index
    # l, one row per bag each way (none to itself: its rows come out of the reduction).
    reduce = estimator.global_batch_size / k * features * dim * p
    traffic.add("pooled", owners * reduce, owners)
    traffic.add("pooled", owners * reduce, owners)
    local = np.arange(w) % topo.ranks_per_host
    for rank in ranks:
        owner, served = _indicator([rank], w), (local == rank % topo.ranks_per_host).astype(np.float64)
        traffic.add("pooled", owner * b * features * dim * p, served)
        traffic.add("pooled", served * b * features * dim * p, owner)


def estimate_plan(
    estimator: ShardEstimator,
    placements: Sequence[TablePlacement],
    tables: Sequence[TableWorkload],
    dense: DenseWorkload,
    calibration: str,
    notes: Sequence[str] = (),
) -> Plan:
    """Predicts memory, traffic and time of every rank for placed tables.

    Args:
        estimator (ShardEstimator): the topology, batch size and comm precision.
        placements (Sequence[TablePlacement]): where each table is (shards carry their
            lookup and SSD times).
        tables (Sequence[TableWorkload]): the tables, in the same order.
        dense (DenseWorkload): the replicated dense network.
        calibration (str): where the topology's rates came from, for the report.
        notes (Sequence[str], optional): assumptions to report. Default: ``()``
    """
    topo = estimator.topology
    w = topo.world_size
    traffic = _Traffic(topo)
    ram, ssd, cache = np.full(w, float(dense.ram_bytes)), np.zeros(w), np.zeros(w)
    lookup, ssd_time = np.zeros(w), np.zeros(w)
    kinds: set[ShardingType] = set()
    for placement, table in zip(placements, tables, strict=True):
        kinds.add(placement.sharding_type)
        for shard in placement.shards:
            ram[shard.rank] += shard.storage.ram_bytes
            ssd[shard.rank] += shard.storage.ssd_bytes
            cache[shard.rank] += shard.cache_bytes
            lookup[shard.rank] += shard.lookup_seconds
            ssd_time[shard.rank] += shard.ssd_seconds
        if w > 1:
            _add_table_traffic(traffic, estimator, placement, table)
    collectives = 0
    if w > 1:
        if dense.num_parameters:
            traffic.all_reduce(dense.num_parameters * _FLOAT_BYTES)
            collectives += 1
        collectives += 3 * len(kinds - {ShardingType.DATA_PARALLEL}) + 2 * (ShardingType.TABLE_ROW_WISE in kinds)
        collectives += ShardingType.DATA_PARALLEL in kinds
    latency = collectives * topo.collective_latency * math.ceil(math.log2(w)) if w > 1 else 0.0
    host = np.arange(w) // topo.ranks_per_host
    network = np.maximum(traffic.host_out, traffic.host_in)[host] / topo.network_bandwidth
    intra = np.maximum(traffic.intra_sent, traffic.intra_received) / topo.intra_host_bandwidth
    p = estimator.comm_precision.num_bytes
    per_value = 1.0 / topo.exchange_rate + (1.0 / topo.conversion_rate if p < _FLOAT_BYTES else 0.0)
    exchange = traffic.pooled_handled / p * per_value
    dense_seconds = estimator.dense_seconds(dense)
    loads = tuple(
        RankLoad(
            rank=r,
            storage=Storage(int(ram[r]), int(ssd[r])),
            cache_bytes=int(cache[r]),
            dense_seconds=dense_seconds,
            lookup_seconds=float(lookup[r]),
            ssd_seconds=float(ssd_time[r]),
            network_seconds=float(network[r]),
            intra_host_seconds=float(intra[r]),
            exchange_seconds=float(exchange[r]),
            latency_seconds=latency,
            sent_bytes=float(traffic.sent[r]),
            received_bytes=float(traffic.received[r]),
        )
        for r in range(w)
    )
    parameters = sum(table.config.num_embeddings * table.config.embedding_dim for table in tables)
    return Plan(
        topology=topo,
        batch_size=estimator.batch_size,
        comm_precision=estimator.comm_precision,
        placements=tuple(placements),
        ranks=loads,
        comm_bytes=dict(traffic.total),
        num_parameters=parameters,
        calibration=calibration,
        notes=tuple(notes),
    )
