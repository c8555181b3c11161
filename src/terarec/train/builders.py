"""Builds a run's components from its config: embedding tables, the dense model, the dense optimizer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from terarec.embedding import EmbeddingTableConfig
from terarec.errors import ConfigError
from terarec.models import DLRM, ModelConfig, ModelType
from terarec.train.config import DenseOptimizerType, EmbeddingConfig, TrainConfig

__all__ = ["build_dense_optimizer", "build_model", "build_table_configs"]


def _rows_for(config: EmbeddingConfig, distinct_ids: int) -> int:
    wanted = math.ceil(distinct_ids * config.rows_per_distinct_id)
    return int(min(config.max_rows, max(config.min_rows, wanted)))


def build_table_configs(
    config: EmbeddingConfig,
    sparse_features: Sequence[str],
    distinct_ids: Mapping[str, int],
) -> list[EmbeddingTableConfig]:
    """One table per :class:`TableSpec`, then one per remaining sparse feature, sized from the data.

    Args:
        config (EmbeddingConfig): the table policy.
        sparse_features (Sequence[str]): the dataset's sparse features, in model input order.
        distinct_ids (Mapping[str, int]): estimated distinct IDs per feature in the training data.

    Raises:
        ConfigError: when a spec names an unknown feature, or a feature sits in two tables.

    Example::

        >>> tables = build_table_configs(EmbeddingConfig(), ["C1", "C2"], {"C1": 100, "C2": 5})
        >>> [(t.name, t.num_embeddings) for t in tables]
        [('C1', 200), ('C2', 16)]
    """
    known = set(sparse_features)
    claimed: dict[str, str] = {}
    tables: list[EmbeddingTableConfig] = []
    for index, spec in enumerate(config.tables):
        for feature in spec.feature_names:
            if feature not in known:
                raise ConfigError(
                    f"embedding.tables[{index}] ({spec.name!r}) names feature {feature!r}, which the data "
                    f"does not have; sparse features are: {', '.join(sparse_features)}"
                )
            if feature in claimed:
                raise ConfigError(
                    f"embedding.tables[{index}]: feature {feature!r} is already in table {claimed[feature]!r}"
                )
            claimed[feature] = spec.name
        rows = spec.num_embeddings or _rows_for(config, sum(distinct_ids.get(f, 0) for f in spec.feature_names))
        weights_dtype, state_dtype = spec.weights_dtype or config.weights_dtype, spec.state_dtype or config.state_dtype
        if spec.tiered is not None and weights_dtype is not state_dtype:
            raise ConfigError(
                f"embedding.tables[{index}] ({spec.name!r}) is tiered, which keeps weights and state in one dtype, "
                f"but its weights_dtype is {weights_dtype.value} and its state_dtype {state_dtype.value}"
            )
        tables.append(
            EmbeddingTableConfig(
                name=spec.name,
                num_embeddings=rows,
                embedding_dim=spec.embedding_dim or config.embedding_dim,
                feature_names=tuple(spec.feature_names),
                pooling=spec.pooling or config.pooling,
                optimizer=spec.optimizer or config.optimizer,
                init=spec.init or config.init,
                dynamic=spec.dynamic,
                tiered=spec.tiered,
                weights_dtype=weights_dtype,
                state_dtype=state_dtype,
            )
        )
    for feature in sparse_features:
        if feature in claimed:
            continue
        tables.append(
            EmbeddingTableConfig(
                name=feature,
                num_embeddings=_rows_for(config, distinct_ids.get(feature, 0)),
                embedding_dim=config.embedding_dim,
                feature_names=(feature,),
                pooling=config.pooling,
                optimizer=config.optimizer,
                init=config.init,
                dynamic=config.dynamic,
                tiered=config.tiered,
                weights_dtype=config.weights_dtype,
                state_dtype=config.state_dtype,
            )
        )
    return tables


def build_model(config: ModelConfig, num_dense: int, tables: Sequence[EmbeddingTableConfig]) -> nn.Module:
    """The dense model for ``tables``' pooled outputs. Seed torch first: weights come from its RNG."""
    if config.type is ModelType.DLRM:
        dims = {table.embedding_dim for table in tables}
        if len(dims) > 1:
            raise ConfigError(
                f"model.type=dlrm needs one embedding_dim for every table (dot interactions), got {sorted(dims)}"
            )
        num_sparse = sum(len(table.feature_names) for table in tables)
        return DLRM.from_config(config, num_dense, num_sparse, dims.pop() if dims else 1)
    raise ConfigError(f"model.type: unsupported model {config.type.value!r}")


def build_dense_optimizer(config: TrainConfig, parameters: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimizer that trains the dense network."""
    rate = config.dense_learning_rate
    if config.dense_optimizer is DenseOptimizerType.ADAM:
        return torch.optim.Adam(parameters, lr=rate)
    if config.dense_optimizer is DenseOptimizerType.ADAGRAD:
        return torch.optim.Adagrad(parameters, lr=rate)
    return torch.optim.SGD(parameters, lr=rate)
