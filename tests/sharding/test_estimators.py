"""The cost model against hand-computed bytes: memory per tier, lookups, SSD misses, traffic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from terarec.embedding import FixedTable, OptimizerType, TieredConfig
from terarec.sharding import (
    CommPrecision,
    DenseWorkload,
    ShardEstimator,
    ShardingType,
    ShardPlacement,
    Storage,
    TablePlacement,
    Tier,
    Topology,
    estimate_plan,
    expected_unique,
)
from tests.sharding.helpers import workload

B = 50  # examples per rank


def _exact_unique(num_ids: int, num_rows: int, skew: float, skip: int = 0) -> float:
    p = np.arange(1, num_rows + 1, dtype=np.float64) ** -skew
    p /= p.sum()
    return float(np.sum(1.0 - (1.0 - p[skip:]) ** num_ids))


@pytest.mark.parametrize(
    ("num_ids", "num_rows", "skew", "skip"),
    [
        (100, 100, 0.0, 0),
        (10_000, 3_000, 1.05, 0),
        (10_000, 3_000, 1.05, 300),
        (5, 1, 0.0, 0),
        (10**5, 10**6, 1.05, 0),
        (10**5, 10**6, 0.8, 1000),
        (10**5, 10**6, 1.0, 10**5),
    ],
)
def test_expected_unique_matches_the_exact_sum(num_ids: int, num_rows: int, skew: float, skip: int) -> None:
    # up to 2**16 rows the sum is exact; above, log-spaced buckets stay within 0.1%
    expected = _exact_unique(num_ids, num_rows, skew, skip)
    assert expected_unique(num_ids, num_rows, skew, skip) == pytest.approx(expected, rel=1e-3)


def test_expected_unique_falls_with_skew_and_never_exceeds_ids_or_rows() -> None:
    uniform = expected_unique(10**6, 10**12, 0.0)
    skewed = expected_unique(10**6, 10**12, 1.2)
    assert skewed < uniform <= 10**6
    assert expected_unique(10**9, 1000, 1.0) == pytest.approx(1000)
    assert expected_unique(0, 1000, 1.0) == 0.0


def test_storage_counts_weights_and_optimizer_state_per_tier(tmp_path: Path) -> None:
    estimator = ShardEstimator(Topology(2, ram_per_rank=1 << 30), B)
    rowwise = workload("t", 1000, 16)
    assert estimator.storage(rowwise, 1000, 16, Tier.RAM) == Storage(1000 * (16 + 1) * 4, 0)
    assert estimator.storage(rowwise, 500, 8, Tier.RAM) == Storage(500 * (8 + 1) * 4, 0)  # a shard
    # on SSD every row lives on disk; RAM holds what the tiered table then allocates: its cache
    # of whole rows and its bookkeeping
    tiered = FixedTable(dataclasses.replace(rowwise.config, tiered=TieredConfig(cache_bytes=6850)), directory=tmp_path)
    held = sum(value.nbytes for value in vars(tiered._storage).values() if isinstance(value, np.ndarray))
    assert estimator.storage(rowwise, 1000, 16, Tier.SSD, cache_bytes=6850) == Storage(held, 1000 * 17 * 4)
    adam = workload("a", 1000, 16, optimizer=OptimizerType.ADAM)
    assert estimator.storage(adam, 1000, 16, Tier.RAM).ram_bytes == 1000 * (16 + 32) * 4


def test_lookup_bytes_of_a_table_wise_shard() -> None:
    estimator = ShardEstimator(Topology(2, ram_per_rank=1 << 30), B)
    table = workload("t", 1000, 16, pooling=(1.0,), skew=0.0)
    cost = estimator.cost(table, ShardingType.TABLE_WISE, 1000, 16)
    ids = 2 * B  # every rank's IDs come to the owner
    unique = 1000 * (1 - (1 - 1 / 1000) ** ids)
    assert cost.ids == ids
    assert cost.unique_rows == pytest.approx(unique)
    # gather + scatter every ID's row, read + write every touched row and its one state float
    assert cost.memory_bytes == pytest.approx(4 * (2 * ids * 16 + 2 * unique * 17))
    assert cost.lookup_seconds == pytest.approx(cost.memory_bytes / 5e9)
    assert cost.ssd_bytes == 0


def test_row_wise_shards_split_ids_and_rows_evenly() -> None:
    estimator = ShardEstimator(Topology(4, ram_per_rank=1 << 30), B)
    table = workload("t", 1000, 16, pooling=(3.0,), skew=1.05)
    whole = estimator.cost(table, ShardingType.TABLE_WISE, 1000, 16)
    quarter = estimator.cost(table, ShardingType.ROW_WISE, 250, 16)
    assert quarter.ids == pytest.approx(whole.ids / 4)
    assert quarter.unique_rows == pytest.approx(whole.unique_rows / 4)


def test_data_parallel_replicas_look_up_their_own_ids_and_update_every_row() -> None:
    estimator = ShardEstimator(Topology(2, ram_per_rank=1 << 30), B)
    cost = estimator.cost(workload("t", 100, 16), ShardingType.DATA_PARALLEL, 100, 16)
    assert cost.ids == B
    assert cost.memory_bytes == 4 * (2 * B * 16 + 2 * 100 * 17)


def test_ssd_shard_reads_and_writes_back_its_cache_misses() -> None:
    estimator = ShardEstimator(Topology(2, ram_per_rank=1 << 30, ssd_per_rank=1 << 30), B)
    table = workload("t", 1000, 16, skew=1.05)
    cold = estimator.cost(table, ShardingType.TABLE_WISE, 1000, 16, Tier.SSD, cache_bytes=0)
    assert cold.missed_rows == pytest.approx(cold.unique_rows)
    assert cold.ssd_bytes == pytest.approx(2 * cold.missed_rows * 4096)  # a 68-byte row costs a 4 KiB block
    warm = estimator.cost(table, ShardingType.TABLE_WISE, 1000, 16, Tier.SSD, cache_bytes=100 * 68)
    assert warm.missed_rows == pytest.approx(expected_unique(2 * B, 1000, 1.05, skip_rows=100))
    assert warm.ssd_seconds < cold.ssd_seconds


def _placed(name: str, kind: ShardingType, ranks: list[int], rows: int, dim: int = 16) -> TablePlacement:
    if kind is ShardingType.COLUMN_WISE:
        blocks = [(0, rows, i * dim // len(ranks), dim // len(ranks)) for i in range(len(ranks))]
    elif kind in (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE):
        blocks = [(i * rows // len(ranks), rows // len(ranks), 0, dim) for i in range(len(ranks))]
    else:
        blocks = [(0, rows, 0, dim)] * len(ranks)
    shards = tuple(
        ShardPlacement(r, Tier.RAM, ro, nr, co, d, Storage(nr * (d + 1) * 4, 0))
        for r, (ro, nr, co, d) in zip(ranks, blocks, strict=True)
    )
    return TablePlacement(name, kind, rows, dim, shards)


def _plan(
    kind: ShardingType,
    ranks: list[int],
    world: int = 2,
    per_host: int = 1,
    precision: CommPrecision = CommPrecision.FP32,
):
    topology = Topology(world, ram_per_rank=1 << 30, ranks_per_host=per_host)
    estimator = ShardEstimator(topology, B, precision)
    return estimate_plan(
        estimator, [_placed("t", kind, ranks, 1000)], [workload("t", 1000, 16)], DenseWorkload(), "test"
    )


def test_table_wise_traffic() -> None:
    plan = _plan(ShardingType.TABLE_WISE, [0])
    # rank 1 sends its IDs and bag lengths (B x (1 + 1) int64s); rank 0 returns B x 16 floats, and
    # rank 1 sends as many gradients back
    assert plan.comm_bytes["ids"] == B * 2 * 8
    assert plan.comm_bytes["pooled"] == 2 * B * 16 * 4
    assert plan.ranks[1].sent_bytes == B * 2 * 8 + B * 16 * 4
    assert plan.ranks[0].received_bytes == B * 2 * 8 + B * 16 * 4


def test_exchange_packing_counts_every_pooled_value_a_rank_handles() -> None:
    # the owner pools 2 B rows and packs them all (its own B included), unpacks its own B, then
    # unpacks 2 B gradient rows and packs its own B; rank 1 unpacks B rows and packs B gradients
    for precision in (CommPrecision.FP32, CommPrecision.BF16):
        plan = _plan(ShardingType.TABLE_WISE, [0], precision=precision)
        topology = plan.topology
        per_value = 1 / topology.exchange_rate + (precision is not CommPrecision.FP32) / topology.conversion_rate
        assert plan.ranks[0].exchange_seconds == pytest.approx(6 * B * 16 * per_value)
        assert plan.ranks[1].exchange_seconds == pytest.approx(2 * B * 16 * per_value)
    assert Topology(1, 1 << 30).exchange_rate > 0 and _plan(ShardingType.TABLE_WISE, [0], world=1).ranks[0].exchange_seconds == 0


def test_row_wise_traffic_sends_partial_sums_to_every_rank() -> None:
    plan = _plan(ShardingType.ROW_WISE, [0, 1])
    # each rank sends half its IDs but all its bag lengths to the other owner
    assert plan.comm_bytes["ids"] == 2 * B * (0.5 + 1) * 8
    # each owner sends the other the partial sums of its examples; gradients come back the same way
    assert plan.comm_bytes["pooled"] == 2 * 2 * B * 16 * 4


def test_column_wise_traffic_sends_every_id_to_every_owner() -> None:
    plan = _plan(ShardingType.COLUMN_WISE, [0, 1])
    assert plan.comm_bytes["ids"] == 2 * B * 2 * 8
    assert plan.comm_bytes["pooled"] == 2 * 2 * B * 8 * 4  # 8 of the 16 columns each way


def test_data_parallel_traffic_is_an_all_reduce_of_the_table() -> None:
    plan = _plan(ShardingType.DATA_PARALLEL, [0, 1])
    assert plan.comm_bytes["ids"] == plan.comm_bytes["pooled"] == 0
    assert plan.comm_bytes["allreduce"] == 2 * 1000 * 16 * 4  # ring: each of 2 ranks sends the table once


@pytest.mark.parametrize("kind", [ShardingType.TABLE_WISE, ShardingType.ROW_WISE, ShardingType.COLUMN_WISE])
def test_half_precision_halves_pooled_bytes(kind: ShardingType) -> None:
    full = _plan(kind, [0, 1] if kind is not ShardingType.TABLE_WISE else [0])
    for precision in (CommPrecision.BF16, CommPrecision.FP16):
        half = _plan(kind, [0, 1] if kind is not ShardingType.TABLE_WISE else [0], precision=precision)
        assert half.comm_bytes["pooled"] == full.comm_bytes["pooled"] / 2
        assert half.comm_bytes["ids"] == full.comm_bytes["ids"]


def test_hosts_share_a_network_link_and_talk_inside_over_the_intra_host_one() -> None:
    plan = _plan(ShardingType.TABLE_WISE, [0], world=4, per_host=2)
    topology = plan.topology
    ids, pooled = B * 2 * 8, B * 16 * 4
    # host 0 (ranks 0, 1) receives IDs and gradients of ranks 2 and 3 and sends them pooled rows
    host_in, host_out = 2 * (ids + pooled), 2 * pooled
    assert plan.ranks[0].network_seconds == pytest.approx(max(host_in, host_out) / topology.network_bandwidth)
    assert plan.ranks[1].network_seconds == plan.ranks[0].network_seconds
    # inside host 0, rank 1 sends rank 0 its IDs and gradients and receives its pooled rows
    assert plan.ranks[0].intra_host_seconds == pytest.approx((ids + pooled) / topology.intra_host_bandwidth)


def test_table_row_wise_reduces_inside_the_host_before_the_network() -> None:
    row_wise = _plan(ShardingType.ROW_WISE, [0, 1], world=4, per_host=2)
    table_row_wise = _plan(ShardingType.TABLE_ROW_WISE, [0, 1], world=4, per_host=2)
    assert table_row_wise.ranks[0].network_seconds < row_wise.ranks[0].network_seconds


def test_table_row_wise_traffic_is_what_the_sharded_collection_sends() -> None:
    plan = _plan(ShardingType.TABLE_ROW_WISE, [0, 1], world=4, per_host=2)
    ids, row = B * (0.5 + 1) * 8, B * 16 * 4
    assert plan.comm_bytes["ids"] == 6 * ids  # as row-wise: ranks 1, 2, 3 to owner 0 and 0, 2, 3 to owner 1
    # inside host 0 each owner sends the other its partial sums of the G / 2 examples that one
    # serves, and later forwards it the gradients of its own; owner 0 serves ranks 0 and 2, owner
    # 1 ranks 1 and 3: one reduced row per bag to the other host, its gradient back
    assert plan.comm_bytes["pooled"] == 2 * 2 * (4 * B / 2) * 16 * 4 + 2 * 2 * row
    assert plan.ranks[2].received_bytes == row and plan.ranks[3].received_bytes == row
    assert plan.ranks[2].sent_bytes == 2 * ids + row
    assert plan.ranks[0].sent_bytes == ids + 2 * (2 * B * 16 * 4) + row  # to owner 1 IDs and both ways; to rank 2


def test_step_is_the_slowest_rank_and_names_what_binds() -> None:
    topology = Topology(1, ram_per_rank=1 << 30, dense_flops=1e9)
    estimator = ShardEstimator(topology, 1000)
    dense = DenseWorkload(num_parameters=10, flops_per_example=1e6)
    plan = estimate_plan(
        estimator, [_placed("t", ShardingType.TABLE_WISE, [0], 1000)], [workload("t", 1000, 16)], dense, "test"
    )
    assert plan.ranks[0].dense_seconds == pytest.approx(1000 * 1e6 / 1e9)
    assert plan.step_seconds == pytest.approx(plan.ranks[0].step_seconds)
    assert plan.time_bound.value == "dense compute"
    assert plan.examples_per_second == pytest.approx(1000 / plan.step_seconds)
    assert plan.ranks[0].storage.ram_bytes == 1000 * 17 * 4 + 10 * 16  # table + dense replica
