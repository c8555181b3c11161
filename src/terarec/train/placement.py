"""Where a run's embedding tables live when it trains on several ranks, and what the planner
predicts for it.

``terarec train`` lets the :class:`~terarec.sharding.ShardingPlanner` choose, per table, among
the sharding types training runs for it (table-wise, row-wise, table-row-wise, column-wise,
data-parallel; see :func:`terarec.sharding.sharded.executable_types`) and the ranks, balancing
its cost model (largest first). A table's tier is its own config. Hosts are ``torchrun``'s
nodes (:attr:`World.local_size <terarec.train.distributed.World>` ranks each): the planner
offers table-row-wise sharding on its own only with several hosts of several ranks, and a
table pinned table-row-wise on one host is row-wise over its ranks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from terarec.data import ColumnarData, DataFormat, load_splits, open_prepared, read_prepared_stats, resolve_path
from terarec.embedding import (
    DeepHashTableConfig,
    EmbeddingCollection,
    EmbeddingTableConfig,
    MemoryEstimate,
    available_memory_bytes,
    check_disk,
    check_memory,
    free_disk_bytes,
)
from terarec.errors import ConfigError, PlanError
from terarec.sharding import (
    UNCALIBRATED,
    Calibration,
    DenseWorkload,
    Plan,
    ShardedEmbeddingCollection,
    ShardingOverride,
    ShardingPlanner,
    ShardingType,
    TableSharding,
    TableWorkload,
    Tier,
    build_topology,
    load_calibration,
)
from terarec.models import model_class
from terarec.sharding.sharded import SPLIT_TYPES, executable_types
from terarec.train.builders import build_deep_hash_tables, build_model, build_table_configs
from terarec.train.checkpoint import read_run_spec
from terarec.train.config import Config
from terarec.train.distributed import World
from terarec.train.task_selection import configure_for_data

__all__ = [
    "DEFAULT_ZIPF_EXPONENT",
    "Placement",
    "RunWorkload",
    "build_collection",
    "build_planner",
    "dense_workload",
    "mean_bag_sizes",
    "plan_tables",
    "run_workload",
    "saved_placement",
    "table_workloads",
]

Placement = dict[str, dict[str, object]]
"""Per table ``{"sharding": <ShardingType value>, "ranks": [...]}``, as ``run.json`` records it."""

DEFAULT_ZIPF_EXPONENT = 1.05
"""ID skew assumed for real data when ``sharding.zipf_exponent`` is not set."""


def mean_bag_sizes(data: ColumnarData) -> dict[str, float]:
    """Mean IDs per example of each sparse feature (at least 0.001, so no table costs nothing)."""
    rows = max(data.num_rows, 1)
    return {
        name: max(float(column.offsets[-1] - column.offsets[0]) / rows, 1e-3) for name, column in data.sparse.items()
    }


def table_workloads(
    tables: Sequence[EmbeddingTableConfig], bag_sizes: Mapping[str, float], zipf_exponent: float
) -> list[TableWorkload]:
    """Each table with its features' mean bag sizes and the ID skew, as the planner reads them."""
    return [TableWorkload(t, tuple(bag_sizes[f] for f in t.feature_names), zipf_exponent) for t in tables]


def dense_workload(
    config: Config,
    num_dense: int,
    tables: Sequence[EmbeddingTableConfig],
    deep_hash_tables: Sequence[DeepHashTableConfig] = (),
    bag_sizes: Mapping[str, float] | None = None,
) -> DenseWorkload:
    """The run's dense network as the planner costs it: the model counts its own parameters and
    FLOPs; each Deep Hash table adds its decoder's parameters, and its FLOPs per ID times the
    mean bag sizes (``bag_sizes``, 1 when unknown) of its features: an upper bound, as each
    distinct ID of a batch is decoded once. Built on a forked RNG, so the run's seeded
    initialisation is untouched."""
    with torch.random.fork_rng():
        model = DenseWorkload.of_model(build_model(config.model, num_dense, tables, deep_hash_tables))
    sizes = bag_sizes or {}
    hashed_parameters = sum(table.num_parameters for table in deep_hash_tables)
    hashed_flops = sum(
        table.deep_hash.flops_per_id(table.embedding_dim) * sum(sizes.get(f, 1.0) for f in table.feature_names)
        for table in deep_hash_tables
    )
    return dataclasses.replace(
        model,
        num_parameters=model.num_parameters + hashed_parameters,
        flops_per_example=model.flops_per_example + hashed_flops,
    )


def _zipf_exponent(config: Config) -> float:
    if config.sharding.zipf_exponent is not None:
        return config.sharding.zipf_exponent
    return config.data.synthetic.zipf_exponent if config.data.path is None else DEFAULT_ZIPF_EXPONENT


def _executable_overrides(config: Config, tables: Sequence[EmbeddingTableConfig]) -> tuple[ShardingOverride, ...]:
    """The config's overrides, checked against what training runs for each table, with every
    table's tier set by its own config."""
    pinned = {override.table: (index, override) for index, override in enumerate(config.sharding.overrides)}
    names = {table.name for table in tables}
    for name, (index, _) in pinned.items():
        if name not in names:
            raise ConfigError(
                f"sharding.overrides[{index}] names table {name!r}, which the model does not have; "
                f"tables: {', '.join(sorted(names))}"
            )
    overrides = []
    for table in tables:
        index, override = pinned.get(table.name, (None, ShardingOverride(table.name)))
        allowed = executable_types(table)
        if override.sharding_type is not None and override.sharding_type not in allowed:
            raise ConfigError(
                f"sharding.overrides[{index}]: table {table.name!r} is {override.sharding_type.value}, but training "
                f"runs it {' or '.join(t.value for t in allowed)} only (`terarec plan` plans every type)"
            )
        tier = Tier.SSD if table.tiered is not None else Tier.RAM
        overrides.append(ShardingOverride(table.name, override.sharding_type, tier))
    return tuple(overrides)


def _chosen_types(table: EmbeddingTableConfig) -> tuple[ShardingType, ...]:
    """What the planner may choose for ``table`` unpinned: what training runs for it, less
    data-parallel. A replica costs per-table work the cost model does not count (its row
    gradients summed and all-reduced on its own): on 2 ranks, replicating the smallest of 26
    tables ran slower than placing every table table-wise.
    An override still pins a table data-parallel."""
    return tuple(t for t in executable_types(table) if t is not ShardingType.DATA_PARALLEL)


def build_planner(
    config: Config,
    tables: Sequence[EmbeddingTableConfig],
    batch_size: int,
    calibration: Calibration | None,
) -> ShardingPlanner:
    """The planner that places ``tables`` as training runs them on ``config.sharding``'s ranks:
    only the sharding types training executes for each table (data-parallel only when pinned),
    each table on the tier its config says. ``terarec plan --config`` and training both use it.

    Args:
        config (Config): the run; its ``sharding`` section gives the ranks and their resources.
        tables (Sequence[EmbeddingTableConfig]): the row tables.
        batch_size (int): examples per step over all ranks.
        calibration (Calibration, optional): measured rates (:func:`~terarec.sharding.load_calibration`);
            ``None`` uses the planner's defaults.

    Raises:
        ConfigError: when an override pins a sharding type training does not execute.
    """
    sharding = config.sharding
    return ShardingPlanner(
        build_topology(sharding, calibration),
        max(1, batch_size // sharding.world_size),
        sharding.comm_precision,
        _executable_overrides(config, tables),
        sharding.min_cache_fraction,
        calibration.describe() if calibration else UNCALIBRATED,
        {t.name: _chosen_types(t) for t in tables},
    )


@dataclass(frozen=True)
class RunWorkload:
    """A run as the planner sees it, derived from its config without training.

    Args:
        tables (list[EmbeddingTableConfig]): the row tables, as training builds them.
        workloads (list[TableWorkload]): each with its features' bag sizes and the ID skew.
        dense (DenseWorkload): the dense network (and Deep Hash tables).
        num_rows (int): training rows.
        notes (list[str]): what was assumed rather than read from the data.
    """

    tables: list[EmbeddingTableConfig]
    workloads: list[TableWorkload]
    dense: DenseWorkload
    num_rows: int
    notes: list[str]


def run_workload(config: Config) -> RunWorkload:
    """The run's tables as training builds them, their bag sizes and skew, the dense network and
    the training rows: sized from a prepared directory's saved statistics or the synthetic
    generator's cardinalities without reading the data, otherwise from the data."""
    data, notes = config.data, []
    skew = _zipf_exponent(config)
    if data.path is None:
        synthetic = data.synthetic
        distinct = synthetic.cardinalities()
        features = list(distinct)
        sizes = synthetic.bag_sizes or (1,) * synthetic.num_sparse
        pooling = {name: float(size) for name, size in zip(features, sizes, strict=True)}
        num_dense, num_rows = synthetic.num_dense, synthetic.num_examples
        notes.append("synthetic data: tables sized from its cardinalities (an upper bound of the distinct IDs)")
    else:
        paths, fmt = resolve_path(data.path, data.format)
        if fmt is DataFormat.PREPARED and len(paths) == 1:
            train, stats = open_prepared(paths[0]), read_prepared_stats(paths[0])  # memory-mapped: nothing read
        else:
            splits = load_splits(data)
            train, stats = splits.train, splits.stats
            config = configure_for_data(config, splits)  # a two-tower model's towers come from the data
        features = list(train.schema.sparse_features)
        distinct = stats.distinct_ids
        pooling = mean_bag_sizes(train)
        num_dense, num_rows = train.schema.num_dense, train.num_rows
        if config.sharding.zipf_exponent is None:
            notes.append(f"ID skew assumed: Zipf exponent {DEFAULT_ZIPF_EXPONENT} (set sharding.zipf_exponent)")
    model_type = model_class(config.model.type)
    tables = build_table_configs(config.embedding, features, distinct, model_type)
    workloads = table_workloads(tables, pooling, skew)
    hashed = build_deep_hash_tables(config.embedding, features, model_type)
    dense = dense_workload(config, num_dense, tables, hashed, pooling)
    return RunWorkload(tables, workloads, dense, num_rows, notes)


def plan_tables(
    config: Config,
    tables: Sequence[EmbeddingTableConfig],
    data: ColumnarData,
    world_size: int,
    ranks_per_host: int,
    tables_dir: Path,
) -> Plan:
    """Places ``tables`` over ``world_size`` ranks as training can run them and predicts the step.

    Rates come from this machine's calibration (``terarec plan --calibrate``) when one is
    saved, else the planner's defaults; the SSD per rank is the free disk under ``tables_dir``.

    Raises:
        PlanError: when the tables cannot fit on the ranks.
        ConfigError: when an override asks for a sharding type training does not execute.
    """
    ssd = 0
    if any(t.tiered is not None for t in tables):
        ssd = free_disk_bytes(tables_dir) // ranks_per_host
    sharding = dataclasses.replace(
        config.sharding, world_size=world_size, ranks_per_host=ranks_per_host, ssd_per_rank=ssd
    )
    planner = build_planner(dataclasses.replace(config, sharding=sharding), tables, config.train.batch_size, load_calibration())
    bag_sizes = mean_bag_sizes(data)
    workloads = table_workloads(tables, bag_sizes, _zipf_exponent(config))
    hashed = build_deep_hash_tables(config.embedding, data.schema.sparse_features, model_class(config.model.type))
    return planner.plan(workloads, dense_workload(config, data.schema.num_dense, tables, hashed, bag_sizes))


def saved_placement(checkpoint: Path | None, world_size: int) -> Placement | None:
    """The placement ``checkpoint`` was trained with, if it had ``world_size`` ranks: a resumed
    run keeps it (and so its summation order), even if the planner would now choose otherwise."""
    if checkpoint is None:
        return None
    spec = read_run_spec(checkpoint)
    return spec.get("placement") if spec.get("world_size") == world_size else None  # type: ignore[return-value]


def build_collection(
    config: Config,
    tables: list[EmbeddingTableConfig],
    data: ColumnarData | None,
    world: World,
    tables_dir: Path,
    placement: Placement | None = None,
) -> tuple[EmbeddingCollection | ShardedEmbeddingCollection, Plan | None, Placement]:
    """The run's tables: all in this process, or spread over the ranks as ``placement`` says
    (else as the planner places them from the training ``data``'s workload), with the plan's
    predictions and the placement used. One process needs no ``data``.

    Raises:
        PlanError: when this rank's share does not fit its RAM or disk.
    """
    settings = config.train
    estimates = EmbeddingCollection.estimate_memory(tables)
    if world.size == 1 or not tables:
        check_memory(estimates, settings.memory_budget_bytes)
        check_disk(estimates, tables_dir)
        return EmbeddingCollection(tables, seed=settings.seed, directory=tables_dir), None, {}
    assert data is not None, "placing tables over several ranks needs the training data's workload"
    plan = plan_tables(config, tables, data, world.size, world.local_size, tables_dir)
    if placement is None:
        placement = {p.name: {"sharding": p.sharding_type.value, "ranks": list(p.ranks)} for p in plan.placements}
        # Rank 0's plan binds all ranks: inputs such as the free disk may differ between them.
        chosen = [placement]
        dist.broadcast_object_list(chosen, src=0)
        placement = chosen[0]
    shardings = {
        name: TableSharding(ShardingType(where["sharding"]), tuple(where["ranks"]))  # type: ignore[arg-type]
        for name, where in placement.items()
    }
    mine = {}  # this rank's share: a block of each split table, whole tables otherwise
    for name, estimate in estimates.items():
        where = shardings[name]
        if world.rank in where.ranks:
            blocks = len(where.ranks) if where.sharding_type in SPLIT_TYPES else 1
            mine[name] = MemoryEstimate(estimate.ram_bytes // blocks, estimate.disk_bytes // blocks)
    try:
        check_memory(mine, settings.memory_budget_bytes or available_memory_bytes() // world.local_size)
    except PlanError as error:
        raise PlanError(f"rank {world.rank}, its share of the tables: {error} Or use more ranks.") from None
    check_disk(mine, tables_dir)
    collection = ShardedEmbeddingCollection(
        tables,
        shardings,
        seed=settings.seed,
        directory=tables_dir,
        comm_precision=config.sharding.comm_precision,
        prepare_group=world.prepare_group,
        apply_group=world.apply_group,
        local_size=world.local_size,
    )
    return collection, plan, placement
