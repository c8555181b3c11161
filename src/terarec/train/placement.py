"""Where a run's embedding tables live when it trains on several ranks, and what the planner
predicts for it.

``terarec train`` executes table-wise sharding: each table whole on one rank, chosen by the
:class:`~terarec.sharding.ShardingPlanner` to balance its cost model over the ranks (largest
first). The tier is the table's own config (``tiered`` tables on SSD behind their cache).
The other sharding types are planned by ``terarec plan`` but not executed yet.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from terarec.data import ColumnarData
from terarec.embedding import EmbeddingTableConfig
from terarec.errors import ConfigError
from terarec.sharding import (
    UNCALIBRATED,
    DenseWorkload,
    Plan,
    ShardingOverride,
    ShardingPlanner,
    ShardingType,
    TableWorkload,
    Tier,
    build_topology,
    dlrm_dense_workload,
    load_calibration,
)
from terarec.train.config import Config

__all__ = ["DEFAULT_ZIPF_EXPONENT", "dense_workload", "mean_bag_sizes", "plan_tables", "table_workloads"]

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


def dense_workload(config: Config, num_dense: int, tables: Sequence[EmbeddingTableConfig]) -> DenseWorkload:
    """The run's dense network (DLRM) as the planner costs it."""
    dim = max(t.embedding_dim for t in tables)
    features = sum(len(t.feature_names) for t in tables)
    return dlrm_dense_workload(num_dense, config.model.bottom_mlp, config.model.top_mlp, features, dim)


def _zipf_exponent(config: Config) -> float:
    if config.sharding.zipf_exponent is not None:
        return config.sharding.zipf_exponent
    return config.data.synthetic.zipf_exponent if config.data.path is None else DEFAULT_ZIPF_EXPONENT


def _executable_overrides(config: Config, tables: Sequence[EmbeddingTableConfig]) -> tuple[ShardingOverride, ...]:
    """Pins every table table-wise, on the tier its own config asks for."""
    for index, override in enumerate(config.sharding.overrides):
        if override.sharding_type not in (None, ShardingType.TABLE_WISE):
            raise ConfigError(
                f"sharding.overrides[{index}]: table {override.table!r} is {override.sharding_type.value}; "
                f"`terarec plan` plans that, but `terarec train` executes table_wise sharding only"
            )
    return tuple(
        ShardingOverride(t.name, ShardingType.TABLE_WISE, Tier.SSD if t.tiered is not None else Tier.RAM) for t in tables
    )


def plan_tables(
    config: Config,
    tables: Sequence[EmbeddingTableConfig],
    data: ColumnarData,
    world_size: int,
    ranks_per_host: int,
    tables_dir: Path,
) -> Plan:
    """Places ``tables`` table-wise over ``world_size`` ranks and predicts the step.

    Rates come from this machine's calibration (``terarec plan --calibrate``) when one is
    saved, else the planner's defaults; the SSD per rank is the free disk under ``tables_dir``.

    Raises:
        PlanError: when the tables cannot fit on the ranks.
        ConfigError: when an override asks for a sharding type training does not execute.
    """
    batch_per_rank = config.train.batch_size // world_size
    ssd = 0
    if any(t.tiered is not None for t in tables):
        existing = next(p for p in (tables_dir.resolve(), *tables_dir.resolve().parents) if p.exists())
        ssd = int(shutil.disk_usage(existing).free) // ranks_per_host
    sharding = dataclasses.replace(
        config.sharding, world_size=world_size, ranks_per_host=ranks_per_host, ssd_per_rank=ssd
    )
    calibration = load_calibration()
    planner = ShardingPlanner(
        build_topology(sharding, calibration),
        batch_per_rank,
        sharding.comm_precision,
        _executable_overrides(config, tables),
        sharding.min_cache_fraction,
        calibration.describe() if calibration else UNCALIBRATED,
    )
    workloads = table_workloads(tables, mean_bag_sizes(data), _zipf_exponent(config))
    return planner.plan(workloads, dense_workload(config, data.schema.num_dense, tables))
