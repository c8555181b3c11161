"""Builds a run's components from its config: embedding tables, the dense model, the dense optimizer."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from terarec.embedding import (
    DeepHashCollection,
    PoolingType,
    DeepHashConfig,
    DeepHashTableConfig,
    EmbeddingTableConfig,
    OptimizerConfig,
    OptimizerType,
)
from terarec.errors import ConfigError
from terarec.models import EmbeddingLayout, InputSpec, ModelConfig, RecModel, model_class
from terarec.models import build_model as build_registered_model
from terarec.train.network import DenseNetwork
from terarec.train.config import DenseOptimizerType, EmbeddingConfig, TableKind, TableSpec, TrainConfig

__all__ = ["build_deep_hash_tables", "build_dense_optimizer", "build_model", "build_network", "build_table_configs", "input_spec"]


def _with_wide_column(optimizer: OptimizerConfig, layout: EmbeddingLayout) -> OptimizerConfig:
    """Row-wise Adagrad as element-wise Adagrad for a table that carries a wide column beside
    the embedding: one shared step size would tie the ID's scalar weight, whose gradient is the
    logit's own, to its embedding's much smaller ones (the weight then takes ~sqrt(D) too large
    steps). Costs a state value per column instead of per row."""
    if layout.wide and layout.deep and optimizer.type is OptimizerType.ROWWISE_ADAGRAD:
        return dataclasses.replace(optimizer, type=OptimizerType.ADAGRAD)
    return optimizer


def _rows_for(config: EmbeddingConfig, distinct_ids: int) -> int:
    wanted = math.ceil(distinct_ids * config.rows_per_distinct_id)
    return int(min(config.max_rows, max(config.min_rows, wanted)))


def _resolved_specs(config: EmbeddingConfig, sparse_features: Sequence[str]) -> list[tuple[TableSpec, TableKind]]:
    """Every table with its kind: the configured ones, then one per remaining feature (with
    ``embedding``'s dynamic and tiered settings), after checking the features they name."""
    known = set(sparse_features)
    claimed: dict[str, str] = {}
    specs: list[tuple[TableSpec, TableKind]] = []
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
        weights_dtype, state_dtype = spec.weights_dtype or config.weights_dtype, spec.state_dtype or config.state_dtype
        if spec.tiered is not None and weights_dtype is not state_dtype:
            raise ConfigError(
                f"embedding.tables[{index}] ({spec.name!r}) is tiered, which keeps weights and state in one dtype, "
                f"but its weights_dtype is {weights_dtype.value} and its state_dtype {state_dtype.value}"
            )
        specs.append((spec, spec.kind or config.kind))
    for feature in sparse_features:
        if feature not in claimed:
            implicit = TableSpec(feature, (feature,), dynamic=config.dynamic, tiered=config.tiered)
            specs.append((implicit, config.kind))
    return specs


def _model_defaults(config: EmbeddingConfig, model: type[RecModel] | None) -> tuple[EmbeddingLayout, int, PoolingType]:
    """The model's layout, and the embedding dim and pooling of tables whose config sets none
    (without a model: :class:`~terarec.models.RecModel`'s)."""
    model = model or RecModel
    return model.layout, config.embedding_dim or model.default_embedding_dim, config.pooling or model.default_pooling


def build_table_configs(
    config: EmbeddingConfig,
    sparse_features: Sequence[str],
    distinct_ids: Mapping[str, int],
    model: type[RecModel] | None = None,
) -> list[EmbeddingTableConfig]:
    """The row tables: one per :class:`TableSpec`, then one per remaining sparse feature, sized
    from the data; ``dhe`` tables are :func:`build_deep_hash_tables`'.

    Args:
        config (EmbeddingConfig): the table policy.
        sparse_features (Sequence[str]): the dataset's sparse features, in model input order.
        distinct_ids (Mapping[str, int]): estimated distinct IDs per feature in the training data.
        model (type[RecModel], optional): the model class, whose defaults fill what the config
            leaves unset (optimizer, embedding dim, pooling) and whose ``layout`` says the
            columns it reads from a row: a table's ``embedding_dim`` is ``layout.table_dim`` of
            the configured one (one more column for a wide weight; only that column for logistic
            regression), and a table with a wide column beside its embedding trains row-wise
            Adagrad element-wise. Default: none: embeddings only, row-wise Adagrad at ``0.05``,
            dim 16, sum pooling

    Raises:
        ConfigError: when a spec names an unknown feature, or a feature sits in two tables.

    Example::

        >>> tables = build_table_configs(EmbeddingConfig(), ["C1", "C2"], {"C1": 100, "C2": 5})
        >>> [(t.name, t.num_embeddings) for t in tables]
        [('C1', 6400), ('C2', 320)]
    """
    layout, default_dim, default_pooling = _model_defaults(config, model)
    default_optimizer = config.optimizer or (model.embedding_optimizer if model is not None else OptimizerConfig())
    tables: list[EmbeddingTableConfig] = []
    for spec, kind in _resolved_specs(config, sparse_features):
        if kind is not TableKind.TABLE:
            continue
        rows = spec.num_embeddings or _rows_for(config, sum(distinct_ids.get(f, 0) for f in spec.feature_names))
        tables.append(
            EmbeddingTableConfig(
                name=spec.name,
                num_embeddings=rows,
                embedding_dim=layout.table_dim(spec.embedding_dim or default_dim),
                feature_names=tuple(spec.feature_names),
                pooling=spec.pooling or default_pooling,
                optimizer=_with_wide_column(spec.optimizer or default_optimizer, layout),
                init=spec.init or config.init,
                dynamic=spec.dynamic,
                tiered=spec.tiered,
                weights_dtype=spec.weights_dtype or config.weights_dtype,
                state_dtype=spec.state_dtype or config.state_dtype,
            )
        )
    return tables


def build_deep_hash_tables(
    config: EmbeddingConfig, sparse_features: Sequence[str], model: type[RecModel] | None = None
) -> list[DeepHashTableConfig]:
    """The Deep Hash tables (kind ``dhe``), each as wide as the ``model``'s layout reads a row
    (see :func:`build_table_configs`).

    Example::

        >>> config = EmbeddingConfig(tables=(TableSpec("ids", ("C2",), kind=TableKind.DHE),))
        >>> [(t.name, t.feature_names, t.embedding_dim) for t in build_deep_hash_tables(config, ["C1", "C2"])]
        [('ids', ('C2',), 16)]
    """
    layout, default_dim, default_pooling = _model_defaults(config, model)
    return [
        DeepHashTableConfig(
            name=spec.name,
            embedding_dim=layout.table_dim(spec.embedding_dim or default_dim),
            feature_names=tuple(spec.feature_names),
            pooling=spec.pooling or default_pooling,
            deep_hash=spec.deep_hash or config.deep_hash or DeepHashConfig(),
        )
        for spec, kind in _resolved_specs(config, sparse_features)
        if kind is TableKind.DHE
    ]


def input_spec(
    num_dense: int,
    tables: Sequence[EmbeddingTableConfig],
    layout: EmbeddingLayout,
    deep_hash_tables: Sequence[DeepHashTableConfig] = (),
) -> InputSpec:
    """The widths a model reading ``tables`` through ``layout`` gets: features in collection
    order, then the Deep Hash tables' features.

    Example::

        >>> from terarec.embedding import EmbeddingTableConfig
        >>> tables = [EmbeddingTableConfig("t", 10, 9, ("user", "item"))]
        >>> input_spec(13, tables, EmbeddingLayout(wide=True)).embedding_dims
        (8, 8)
    """
    names, dims = [], []
    for table in [*tables, *deep_hash_tables]:
        dim = table.embedding_dim - (1 if layout.wide else 0)
        names.extend(table.feature_names)
        dims.extend([dim if layout.deep else 0] * len(table.feature_names))
    return InputSpec(num_dense, tuple(names), tuple(dims))


def build_model(
    config: ModelConfig,
    num_dense: int,
    tables: Sequence[EmbeddingTableConfig],
    deep_hash_tables: Sequence[DeepHashTableConfig] = (),
) -> RecModel:
    """The dense model for ``tables``' pooled outputs, then ``deep_hash_tables``' (built with
    :func:`build_table_configs` and :func:`build_deep_hash_tables` for the same model). Seed
    torch first: weights come from its RNG."""
    layout = model_class(config.type).layout
    return build_registered_model(config, input_spec(num_dense, tables, layout, deep_hash_tables))


def build_network(
    config: ModelConfig,
    num_dense: int,
    tables: Sequence[EmbeddingTableConfig],
    deep_hash_tables: Sequence[DeepHashTableConfig] = (),
    seed: int = 0,
) -> DenseNetwork:
    """The model (:func:`build_model`) and the Deep Hash tables, as one :class:`DenseNetwork`;
    ``seed`` picks the tables' hash functions. Seed torch first: weights come from its RNG."""
    model = build_model(config, num_dense, tables, deep_hash_tables)
    return DenseNetwork(model, DeepHashCollection(deep_hash_tables, seed) if deep_hash_tables else None)


def build_dense_optimizer(config: TrainConfig, parameters: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimizer that trains the dense network, with ``train.weight_decay``."""
    rate, decay = config.dense_learning_rate, config.weight_decay
    # One fused kernel for all parameters rather than a Python loop over them: on small models
    # the loop's per-tensor overhead was a sixth of a training step.
    if config.dense_optimizer is DenseOptimizerType.ADAM:
        # Decoupled decay (AdamW): with Adam, L2 in the gradient is rescaled away per weight.
        return torch.optim.AdamW(parameters, lr=rate, weight_decay=decay, fused=True)
    if config.dense_optimizer is DenseOptimizerType.ADAGRAD:
        return torch.optim.Adagrad(parameters, lr=rate, weight_decay=decay, fused=True)
    return torch.optim.SGD(parameters, lr=rate, weight_decay=decay, fused=True)
