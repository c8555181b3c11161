"""The 100-trillion-parameter preset: its size, and a plan of it on its cluster."""

from __future__ import annotations

import pytest

from terarec.errors import ConfigError
from terarec.models import DLRMConfig, DNNConfig, InputSpec, ModelConfig, ModelType, build_model
from terarec.sharding import (
    DenseWorkload,
    Resource,
    ShardingPlanner,
    ShardingType,
    Tier,
    dlrm_workload,
    get_preset,
    minimum_world_size,
)


def test_100t_preset_has_10_to_the_14_parameters_and_realistic_bags() -> None:
    preset = get_preset("100t")
    assert preset.num_parameters >= 10**14
    huge = [t for t in preset.tables if t.config.num_embeddings >= 10**10]
    assert len(huge) >= 4 and len(preset.tables) > 100
    assert max(t.ids_per_example for t in preset.tables) >= 50  # a behaviour history bag
    assert all(0.5 <= t.zipf_exponent <= 1.5 for t in preset.tables)


def test_100t_preset_plans_onto_its_cluster() -> None:
    preset = get_preset("100t")
    cluster = preset.cluster

    def planner(machines: int) -> ShardingPlanner:
        return ShardingPlanner(cluster.topology(machines), preset.batch_size, preset.comm_precision)

    fewest = minimum_world_size(planner(1), preset.tables, preset.dense)
    assert fewest is not None and fewest % cluster.ranks_per_machine == 0
    machines = fewest // cluster.ranks_per_machine
    # the data alone (weights and row-wise Adagrad state) needs this many machines' RAM + SSD
    data = sum(t.config.memory_estimate().ram_bytes for t in preset.tables)
    topology = cluster.topology(1)
    assert machines * cluster.ranks_per_machine * (topology.ram_budget + topology.ssd_budget) >= data
    plan = planner(machines).plan(preset.tables, preset.dense)
    assert plan.num_parameters >= 10**14
    assert Tier.SSD in {tier for p in plan.placements for tier in p.tiers}
    assert plan.placements[0].sharding_type is ShardingType.ROW_WISE  # 3e11 user rows
    assert plan.capacity_bound in (Resource.SSD_CAPACITY, Resource.RAM_CAPACITY)
    assert plan.examples_per_second > 0 and plan.comm_bytes["pooled"] > 0
    for load in plan.ranks:
        assert load.storage.ram_bytes <= topology.ram_budget and load.storage.ssd_bytes <= topology.ssd_budget


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="presets are: 100t"):
        get_preset("1t")


def test_dense_workload_counts_what_the_model_computes() -> None:
    spec = InputSpec(13, tuple(f"C{i}" for i in range(26)), (8,) * 26)
    config = ModelConfig(type=ModelType.DNN, dnn=DNNConfig(mlp=(64, 16)))
    workload = DenseWorkload.of_model(build_model(config, spec))
    widths = [13 + 26 * 8, 64, 16, 1]
    weights = sum(a * b for a, b in zip(widths, widths[1:]))
    assert workload.num_parameters == weights + sum(widths[1:])
    # a multiply-add is 2 FLOPs: forward, the weights' gradient and the input's gradient
    assert workload.flops_per_example == 6 * weights


def test_dlrm_workload_counts_the_model_parameters() -> None:
    config = ModelConfig(type=ModelType.DLRM, dlrm=DLRMConfig(bottom_mlp=(32,), top_mlp=(64, 16)))
    model = build_model(config, InputSpec(13, tuple(f"C{i}" for i in range(26)), (8,) * 26))
    workload = dlrm_workload(13, (32,), (64, 16), (8,) * 26)
    assert workload.num_parameters == sum(p.numel() for p in model.parameters())
    pairs = 27 * 26 // 2
    assert workload.flops_per_example > 6 * (8 * 27 * 27)  # the Gram matrix alone, forward and backward
    assert workload.flops_per_example > 2 * (13 * 32 + 32 * 8 + (pairs + 8) * 64 + 64 * 16 + 16)
