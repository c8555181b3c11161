"""The cost model of a whole plan: every rank's memory, the bytes each rank sends and receives
over the network and inside its host, and the step time (the model itself is described in
:mod:`terarec.sharding.estimators`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from terarec.sharding.config import ShardingType
from terarec.sharding.estimators import FLOAT_BYTES, ID_BYTES, ShardEstimator
from terarec.sharding.types import DenseWorkload, Plan, RankLoad, Storage, TablePlacement, TableWorkload, Topology

__all__ = ["estimate_plan"]


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
        traffic.all_reduce(placement.num_embeddings * dim * FLOAT_BYTES)
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
            traffic.all_reduce(dense.num_parameters * FLOAT_BYTES)
            collectives += 1
        collectives += 3 * len(kinds - {ShardingType.DATA_PARALLEL}) + 2 * (ShardingType.TABLE_ROW_WISE in kinds)
        collectives += ShardingType.DATA_PARALLEL in kinds
    latency = collectives * topo.collective_latency * math.ceil(math.log2(w)) if w > 1 else 0.0
    host = np.arange(w) // topo.ranks_per_host
    network = np.maximum(traffic.host_out, traffic.host_in)[host] / topo.network_bandwidth
    intra = np.maximum(traffic.intra_sent, traffic.intra_received) / topo.intra_host_bandwidth
    p = estimator.comm_precision.num_bytes
    per_value = 1.0 / topo.exchange_rate + (1.0 / topo.conversion_rate if p < FLOAT_BYTES else 0.0)
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
