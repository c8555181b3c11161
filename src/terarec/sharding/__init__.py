"""The sharding layer: plan where embedding tables live across ranks and memory tiers.

Split by role, as TorchRec's planner: :mod:`~terarec.sharding.types` (``Topology``,
``Storage``, ``TablePlacement``, ``Plan``, ``ShardingConfig``), :mod:`~terarec.sharding.estimators`
(the cost model), :mod:`~terarec.sharding.enumerators` (each table's options and the choice
among them), :mod:`~terarec.sharding.partitioners` (greedy placement),
:mod:`~terarec.sharding.planner` (composes them), :mod:`~terarec.sharding.calibration`
(micro-benchmarks of this machine), :mod:`~terarec.sharding.presets` (models to plan on
paper), :mod:`~terarec.sharding.sharded` (tables spread over ranks table-wise, row-wise,
table-row-wise, column-wise or data-parallel, over ``torch.distributed``) and
:mod:`~terarec.sharding.host_stage` (table-row-wise sums reduced inside a host). Typical use::

    topology = build_topology(config.sharding, load_calibration())
    plan = ShardingPlanner(topology, batch_size=4096).plan(tables, dense)
    plan.step_seconds, plan.time_bound, [p.sharding_type for p in plan.placements]
"""

from terarec.sharding.calibration import (
    Calibration,
    default_calibration_path,
    load_calibration,
    measure_calibration,
    save_calibration,
)
from terarec.sharding.config import (
    CommPrecision,
    ShardingConfig,
    ShardingOverride,
    ShardingType,
    Tier,
    TrainingMode,
)
from terarec.sharding.enumerators import (
    ShardingOption,
    choose_options,
    enumerate_options,
)
from terarec.sharding.estimators import ID_BYTES, ShardCost, ShardEstimator
from terarec.sharding.partitioners import GreedyPartitioner
from terarec.sharding.planner import (
    DEFAULT_NETWORK_GBPS,
    UNCALIBRATED,
    ShardingPlanner,
    build_topology,
    minimum_world_size,
)
from terarec.sharding.presets import (
    PRESETS,
    ClusterSpec,
    ModelPreset,
    dlrm_workload,
    get_preset,
)
from terarec.sharding.report import format_plan, plot_plan
from terarec.sharding.sharded import (
    ShardedEmbeddingCollection,
    ShardedPreparedBatch,
    TableSharding,
)
from terarec.sharding.traffic import estimate_plan
from terarec.sharding.types import (
    DenseWorkload,
    Plan,
    RankLoad,
    Resource,
    ShardPlacement,
    Storage,
    TablePlacement,
    TableWorkload,
    Topology,
)
from terarec.sharding.zipf import expected_unique

__all__ = [
    "DEFAULT_NETWORK_GBPS",
    "ID_BYTES",
    "PRESETS",
    "UNCALIBRATED",
    "Calibration",
    "ClusterSpec",
    "CommPrecision",
    "DenseWorkload",
    "GreedyPartitioner",
    "ModelPreset",
    "Plan",
    "RankLoad",
    "Resource",
    "ShardCost",
    "ShardEstimator",
    "ShardPlacement",
    "ShardedEmbeddingCollection",
    "ShardedPreparedBatch",
    "ShardingConfig",
    "ShardingOption",
    "ShardingOverride",
    "ShardingPlanner",
    "ShardingType",
    "Storage",
    "TablePlacement",
    "TableSharding",
    "TableWorkload",
    "Tier",
    "Topology",
    "TrainingMode",
    "build_topology",
    "format_plan",
    "choose_options",
    "default_calibration_path",
    "dlrm_workload",
    "enumerate_options",
    "estimate_plan",
    "expected_unique",
    "get_preset",
    "load_calibration",
    "measure_calibration",
    "minimum_world_size",
    "plot_plan",
    "save_calibration",
]
