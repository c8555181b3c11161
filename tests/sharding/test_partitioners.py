"""Option choice and greedy placement: balance, memory limits, spilling to SSD, replication."""

from __future__ import annotations

import numpy as np
import pytest

from terarec.errors import PlanError
from terarec.sharding import (
    GreedyPartitioner,
    ShardEstimator,
    ShardingPlanner,
    ShardingType,
    Storage,
    Tier,
    Topology,
    choose_options,
    enumerate_options,
)
from tests.sharding.helpers import workload


def _rank_bytes(plan) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    return (
        np.array([load.storage.ram_bytes for load in plan.ranks]),
        np.array([load.storage.ssd_bytes for load in plan.ranks]),
    )


def test_equal_tables_spread_evenly() -> None:
    tables = [workload(f"t{i}", 50_000, 16) for i in range(8)]
    plan = ShardingPlanner(Topology(4, ram_per_rank=1 << 30), batch_size=256).plan(tables)
    assert {p.sharding_type for p in plan.placements} == {ShardingType.TABLE_WISE}
    per_rank = np.bincount([p.ranks[0] for p in plan.placements], minlength=4)
    assert per_rank.tolist() == [2, 2, 2, 2]
    lookups = [load.lookup_seconds for load in plan.ranks]
    assert max(lookups) == pytest.approx(min(lookups))


def test_greedy_with_refinement_balances_uneven_tables() -> None:
    rng = np.random.default_rng(0)
    rows = rng.integers(10_000, 200_000, size=24)
    pooling = rng.integers(1, 20, size=24)
    tables = [
        workload(f"t{i}", int(r), 16, pooling=(float(p),)) for i, (r, p) in enumerate(zip(rows, pooling, strict=True))
    ]
    plan = ShardingPlanner(Topology(6, ram_per_rank=1 << 30), batch_size=512).plan(tables)
    lookups = np.array([load.lookup_seconds + load.ssd_seconds for load in plan.ranks])
    largest_table = max(p.shards[0].lookup_seconds for p in plan.placements)
    # no rank carries more than the average plus one table's worth
    assert lookups.max() <= lookups.mean() + largest_table


@pytest.mark.parametrize("seed", range(5))
def test_no_rank_exceeds_its_ram_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tables = [
        workload(f"t{i}", int(r), int(d))
        for i, (r, d) in enumerate(
            zip(rng.integers(1_000, 2_000_000, 30), rng.choice([8, 16, 32, 64], 30), strict=True)
        )
    ]
    total = sum(t.config.memory_estimate().ram_bytes for t in tables)
    topology = Topology(8, ram_per_rank=int(total / 8 / 0.9 * 1.3))  # 30% slack over a perfect split
    plan = ShardingPlanner(topology, batch_size=256).plan(tables)
    ram, ssd = _rank_bytes(plan)
    assert (ram <= topology.ram_budget).all() and (ssd == 0).all()
    assert ram.sum() >= total  # everything placed (replicas count on every rank)


def test_a_table_larger_than_a_rank_is_split_row_wise() -> None:
    big = workload("big", 4_000_000, 32)  # 528 MB
    topology = Topology(4, ram_per_rank=200 << 20)
    plan = ShardingPlanner(topology, batch_size=256).plan([big, workload("small", 1000, 32)])
    placement = plan.placements[0]
    assert placement.sharding_type is ShardingType.ROW_WISE
    assert sum(shard.num_rows for shard in placement.shards) == big.config.num_embeddings
    assert len(set(placement.ranks)) == len(placement.shards)
    ram, _ = _rank_bytes(plan)
    assert (ram <= topology.ram_budget).all()


def test_tiny_tables_are_replicated() -> None:
    tables = [workload("tiny", 10, 16), workload("big", 500_000, 16)]
    plan = ShardingPlanner(Topology(4, ram_per_rank=1 << 30), batch_size=1024).plan(tables)
    tiny = plan.placements[0]
    assert tiny.sharding_type is ShardingType.DATA_PARALLEL
    assert tiny.ranks == (0, 1, 2, 3)
    assert plan.placements[1].sharding_type is not ShardingType.DATA_PARALLEL


def test_spills_to_ssd_when_ram_is_full_and_caches_the_hot_rows_in_what_is_left() -> None:
    tables = [workload(f"t{i}", 1_000_000, 32, skew=1.05) for i in range(4)]  # 132 MB each
    topology = Topology(2, ram_per_rank=200 << 20, ssd_per_rank=1 << 30)
    plan = ShardingPlanner(topology, batch_size=256).plan(tables)
    tiers = {tier for p in plan.placements for tier in p.tiers}
    assert tiers == {Tier.RAM, Tier.SSD}
    ram, ssd = _rank_bytes(plan)
    assert (ram <= topology.ram_budget).all() and (ssd <= topology.ssd_budget).all()
    for p in plan.placements:
        for shard in p.shards:
            if shard.tier is Tier.SSD:
                assert 0 < shard.cache_bytes < shard.storage.ssd_bytes
                assert shard.ssd_seconds > 0
    # leftover RAM went to the caches: each rank is (almost) full
    assert ram.min() > 0.99 * topology.ram_budget


def test_without_ssd_the_same_tables_do_not_fit() -> None:
    tables = [workload(f"t{i}", 1_000_000, 32) for i in range(4)]
    with pytest.raises(PlanError):
        ShardingPlanner(Topology(2, ram_per_rank=200 << 20), batch_size=256).plan(tables)


def test_options_cover_every_sharding_type_and_choice_prefers_least_work() -> None:
    topology = Topology(8, ram_per_rank=1 << 30, ranks_per_host=4)
    estimator = ShardEstimator(topology, 256)
    capacity = Storage(topology.ram_budget, 0)
    options = enumerate_options(workload("t", 100_000, 64), estimator, capacity)
    assert {o.sharding_type for o in options} == set(ShardingType)
    for option in options:
        if option.sharding_type is ShardingType.COLUMN_WISE:
            assert sum(block[3] for block in option.blocks) == 64
        if option.sharding_type in (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE):
            assert sum(block[1] for block in option.blocks) == 100_000
    chosen = choose_options([options], capacity, topology.world_size)[0]
    # alone on 8 ranks, a table-wise table would be one hot rank: the choice spreads it, at the
    # least work among the options whose largest shard is within the average load
    assert chosen.sharding_type is not ShardingType.TABLE_WISE
    least = min(options, key=lambda o: o.work(Tier.RAM, 8))
    average = least.work(Tier.RAM, 8) / 8
    spread = [o for o in options if o.max_seconds(Tier.RAM) <= average]
    assert chosen in spread or chosen.max_seconds(Tier.RAM) == min(o.max_seconds(Tier.RAM) for o in options)


def test_partitioner_names_the_table_that_fits_nowhere() -> None:
    topology = Topology(2, ram_per_rank=1 << 20)
    estimator = ShardEstimator(topology, 64)
    capacity = Storage(topology.ram_budget, 0)
    table = workload("huge", 10**6, 16)
    options = [enumerate_options(table, estimator, capacity)]
    with pytest.raises(PlanError, match="'huge'"):
        GreedyPartitioner(estimator, capacity).partition(options, choose_options(options, capacity, 2))
