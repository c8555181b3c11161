"""Small tables whose costs are known by hand, shared by the sharding tests."""

from __future__ import annotations

from terarec.embedding import EmbeddingTableConfig, OptimizerConfig, OptimizerType
from terarec.sharding import TableWorkload


def workload(
    name: str,
    rows: int,
    dim: int = 16,
    pooling: tuple[float, ...] = (1.0,),
    skew: float = 0.0,
    optimizer: OptimizerType = OptimizerType.ROWWISE_ADAGRAD,
) -> TableWorkload:
    """A table read by ``len(pooling)`` features; uniform IDs unless ``skew`` is set."""
    features = tuple(f"{name}_f{i}" for i in range(len(pooling)))
    config = EmbeddingTableConfig(name, rows, dim, features, optimizer=OptimizerConfig(optimizer))
    return TableWorkload(config, pooling, zipf_exponent=skew)
