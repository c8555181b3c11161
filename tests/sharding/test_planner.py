"""The planner: overrides, refusals that say what would fit, comm precision, topology from config."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from terarec._dataclass_codec import from_mapping
from terarec.errors import ConfigError, PlanError
from terarec.sharding import (
    Calibration,
    CommPrecision,
    ShardingConfig,
    ShardingOverride,
    ShardingPlanner,
    ShardingType,
    Tier,
    Topology,
    build_topology,
    minimum_world_size,
)
from terarec.train import load_config
from tests.sharding.helpers import workload

TABLES = [workload(f"t{i}", 200_000 * (i + 1), 32, pooling=(2.0,)) for i in range(4)] + [workload("tiny", 20, 32)]
TOTAL = sum(t.config.memory_estimate().ram_bytes for t in TABLES)  # 264 MB


def _planner(world: int = 4, ram: int = 1 << 30, ssd: int = 0, per_host: int = 1, **kwargs: object) -> ShardingPlanner:
    topology = Topology(world, ram_per_rank=ram, ssd_per_rank=ssd, ranks_per_host=per_host)
    return ShardingPlanner(topology, batch_size=512, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(ShardingType))
def test_every_override_is_honoured(kind: ShardingType) -> None:
    plan = _planner(world=4, per_host=2, overrides=[ShardingOverride("t1", kind)]).plan(TABLES)
    placement = plan.placements[1]
    assert placement.sharding_type is kind
    if kind is ShardingType.DATA_PARALLEL:
        assert placement.ranks == (0, 1, 2, 3)
    elif kind is ShardingType.TABLE_WISE:
        assert len(placement.ranks) == 1
    elif kind is ShardingType.TABLE_ROW_WISE:
        assert placement.ranks in ((0, 1), (2, 3))  # the ranks of one host
    elif kind is ShardingType.COLUMN_WISE:
        assert sum(s.embedding_dim for s in placement.shards) == 32 and len(placement.ranks) == len(placement.shards)
    else:
        assert sum(s.num_rows for s in placement.shards) == 400_000 and len(placement.shards) > 1


def test_tier_override_puts_a_table_on_ssd() -> None:
    overrides = [ShardingOverride("t0", tier=Tier.SSD)]
    plan = _planner(ssd=1 << 30, overrides=overrides).plan(TABLES)
    assert plan.placements[0].tiers == (Tier.SSD,)
    assert all(p.tiers == (Tier.RAM,) for p in plan.placements[1:])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (ShardingOverride("nope", ShardingType.ROW_WISE), "sharding.overrides[0] names table 'nope'"),
        (ShardingOverride("t0", tier=Tier.SSD), "the ranks have no SSD"),
        (ShardingOverride("t0", ShardingType.DATA_PARALLEL, Tier.SSD), "must be in RAM"),
    ],
)
def test_bad_overrides_are_config_errors(override: ShardingOverride, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _planner(overrides=[override]).plan(TABLES)


def _suggested(message: str, pattern: str) -> int:
    found = re.search(pattern, message)
    assert found, message
    return int(found.group(1))


def test_refusal_says_how_many_ranks_would_fit_and_they_do() -> None:
    small = _planner(world=2, ram=int(TOTAL / 6))
    with pytest.raises(PlanError) as info:
        small.plan(TABLES)
    message = str(info.value)
    assert "\n" not in message and ("does not fit" in message or "fits on no rank" in message)
    ranks = _suggested(message, r"--world-size (\d+)")
    assert ranks > 2
    bigger = ShardingPlanner(dataclasses.replace(small.topology, world_size=ranks), batch_size=512)
    assert bigger.fits(TABLES)
    assert not ShardingPlanner(dataclasses.replace(small.topology, world_size=ranks - 1), batch_size=512).fits(TABLES)


def test_refusal_suggests_an_ssd_tier_and_a_smaller_dim_that_fit() -> None:
    small = _planner(world=2, ram=int(TOTAL / 4))
    with pytest.raises(PlanError) as info:
        small.plan(TABLES)
    message = str(info.value)
    found = re.search(r"--ssd-per-rank (\w+)\)", message)
    assert found, message
    ssd = from_mapping(ShardingConfig, {"ssd_per_rank": found.group(1)}).ssd_per_rank  # the config reads it back
    assert ShardingPlanner(dataclasses.replace(small.topology, ssd_per_rank=ssd), batch_size=512).fits(TABLES)
    dim = _suggested(message, r"embedding_dim (\d+)")
    assert 1 <= dim < 32
    capped = [dataclasses.replace(t, config=dataclasses.replace(t.config, embedding_dim=dim)) for t in TABLES]
    assert small.fits(capped)


def test_minimum_world_size_is_the_smallest_that_fits() -> None:
    planner = _planner(world=1, ram=int(TOTAL / 5))
    fewest = minimum_world_size(planner, TABLES)
    assert fewest is not None
    topology = planner.topology
    assert ShardingPlanner(dataclasses.replace(topology, world_size=fewest), 512).fits(TABLES)
    assert not ShardingPlanner(dataclasses.replace(topology, world_size=fewest - 1), 512).fits(TABLES)


def test_bf16_halves_the_pooled_bytes_of_a_whole_plan() -> None:
    def plan(precision: CommPrecision):  # type: ignore[no-untyped-def]
        topology = Topology(4, ram_per_rank=1 << 30, network_bandwidth=1.25e8)  # 1 Gbit/s
        return ShardingPlanner(topology, batch_size=512, comm_precision=precision).plan(TABLES)

    full, half = plan(CommPrecision.FP32), plan(CommPrecision.BF16)
    assert [p.ranks for p in half.placements] == [p.ranks for p in full.placements]
    assert half.comm_bytes["pooled"] == pytest.approx(full.comm_bytes["pooled"] / 2)
    assert half.comm_bytes["ids"] == full.comm_bytes["ids"]
    # 4 hosts on 1 Gbit/s: the network time saved outweighs the conversions added
    saved = full.slowest_rank.network_seconds - half.slowest_rank.network_seconds
    added = half.slowest_rank.exchange_seconds - full.slowest_rank.exchange_seconds
    assert saved > added > 0 and half.step_seconds < full.step_seconds


def test_bf16_costs_more_than_it_saves_where_transfers_are_cheap() -> None:
    # one host whose ranks exchange at 50 GB/s: halving the bytes saves less than converting costs
    def plan(precision: CommPrecision):  # type: ignore[no-untyped-def]
        topology = Topology(4, ram_per_rank=1 << 30, ranks_per_host=4, intra_host_bandwidth=50e9)
        return ShardingPlanner(topology, batch_size=512, comm_precision=precision).plan(TABLES)

    assert plan(CommPrecision.BF16).step_seconds > plan(CommPrecision.FP32).step_seconds


def test_plan_is_json_able_and_counts_every_parameter() -> None:
    import json

    plan = _planner().plan(TABLES)
    raw = json.loads(json.dumps(plan.to_dict()))
    assert raw["num_parameters"] == sum(t.config.num_embeddings * 32 for t in TABLES)
    assert len(raw["ranks"]) == 4 and len(raw["placements"]) == len(TABLES)
    assert raw["placements"][0]["sharding_type"] in {k.value for k in ShardingType}
    assert raw["examples_per_second"] == pytest.approx(512 * 4 / raw["step_seconds"])


def test_topology_from_config_and_calibration() -> None:
    config = ShardingConfig(world_size=8, ranks_per_host=2, ram_per_rank=1 << 30, ssd_per_rank=1 << 40, network_gbps=25)
    topology = build_topology(config)
    assert (topology.world_size, topology.num_hosts, topology.ssd_per_rank) == (8, 4, 1 << 40)
    assert topology.network_bandwidth == 25e9 / 8
    assert topology.memory_bandwidth == Topology(1, 1).memory_bandwidth  # uncalibrated defaults
    calibration = Calibration(7e9, 2e11, 5e-5, 3e9, 1e9, 4e9, "box", "2025-01-01T00:00:00+00:00")
    measured = build_topology(config, calibration)
    assert (measured.memory_bandwidth, measured.dense_flops) == (7e9 / 2, 2e11 / 2)  # 2 ranks share a host
    cores = min(1.0, (os.cpu_count() or 1) / 2)  # one core's rate, per rank while cores last
    assert (measured.exchange_rate, measured.conversion_rate) == (1e9 * cores, 4e9 * cores)
    assert (measured.collective_latency, measured.intra_host_bandwidth) == (5e-5, 3e9)
    assert build_topology(ShardingConfig(ranks_per_host=1)).ram_per_rank > 0  # this machine's RAM


def test_sharding_section_loads_from_yaml_and_overrides(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "run.yaml"
    path.write_text(
        "sharding:\n  world_size: 4\n  comm_precision: bf16\n"
        "  overrides:\n    - {table: C1, sharding_type: row_wise}\n    - {table: C2, tier: ssd}\n"
    )
    config = load_config(path, [("sharding.ssd_per_rank", "1000000")])
    assert config.sharding.world_size == 4 and config.sharding.comm_precision is CommPrecision.BF16
    assert config.sharding.overrides == (
        ShardingOverride("C1", ShardingType.ROW_WISE),
        ShardingOverride("C2", tier=Tier.SSD),
    )
    assert config.sharding.ssd_per_rank == 1_000_000
    assert load_config().sharding == ShardingConfig()  # configs without the section still load


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([("sharding.world_size", "6"), ("sharding.ranks_per_host", "4")], "must divide sharding.world_size"),
        ([("sharding.comm_precision", "fp8")], "expected one of fp32, bf16, fp16"),
        ([("sharding.world_size", "0")], "sharding.world_size must be >= 1"),
    ],
)
def test_bad_sharding_config_names_the_key(overrides: list[tuple[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=overrides)
