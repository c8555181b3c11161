"""Scoring a dataset with a trained model, and the metrics of that scoring."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from terarec._dataclass_codec import from_mapping
from terarec.data import BatchLoader, ColumnarData, Schema, load_dataset, load_splits
from terarec.embedding import DeepHashTableConfig, EmbeddingCollection, EmbeddingTableConfig
from terarec.errors import DataError
from terarec.train.builders import build_network
from terarec.train.checkpoint import load_checkpoint, read_run_spec, resolve_checkpoint
from terarec.train.config import Config, DensePrecision
from terarec.train.distributed import World, gather_arrays
from terarec.train.metrics import ClickMetrics, compute_metrics
from terarec.train.network import DenseNetwork

__all__ = ["evaluate", "evaluate_checkpoint", "predict", "predict_checkpoint"]


def predict(
    network: DenseNetwork,
    collection: EmbeddingCollection,
    data: ColumnarData,
    batch_size: int,
    bf16: bool = False,
    world: World = World(),
) -> tuple[np.ndarray, np.ndarray]:
    """Click probabilities for every row of ``data`` (``bf16``: dense network under bfloat16 autocast).

    With several ranks (``world``), each scores its share of every batch of ``batch_size``
    rows, through a sharded ``collection``, and every rank gets all rows back, grouped
    rank by rank within each batch (one process: in order).

    Returns:
        tuple[np.ndarray, np.ndarray]: ``(labels, probabilities)``, both :math:`(R)`.
    """
    per_rank = -(-batch_size // world.size)
    loader = BatchLoader(data, per_rank, shuffle=False, rank=world.rank, world_size=world.size)
    labels: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    was_training, tables_were_training = network.training, collection.training
    network.eval()
    collection.eval()
    try:
        with torch.no_grad(), contextlib.closing(loader.iterate(epoch=0)) as batches:
            for batch in batches:
                # One batch at a time on this thread: prepare may use every core.
                pooled = collection.lookup(collection.prepare(batch.sparse, parallel=True))
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = network(batch.dense, pooled.values, batch.sparse).float()
                labels.append(batch.labels.numpy())
                probabilities.append(torch.sigmoid(logits).numpy())
    finally:
        network.train(was_training)
        collection.train(tables_were_training)
    if not labels:
        labels, probabilities = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    return gather_arrays(world, np.concatenate(labels), np.concatenate(probabilities))  # type: ignore[return-value]


def evaluate(
    network: DenseNetwork,
    collection: EmbeddingCollection,
    data: ColumnarData,
    batch_size: int,
    bf16: bool = False,
    world: World = World(),
) -> ClickMetrics:
    """AUC, log loss, NE and calibration of the model on ``data`` (every rank scores its share)."""
    labels, probabilities = predict(network, collection, data, batch_size, bf16, world)
    return compute_metrics(labels, probabilities)


def predict_checkpoint(
    checkpoint: Path, data_path: str | None = None, data_overrides: Mapping[str, object] | None = None
) -> tuple[np.ndarray, np.ndarray, ColumnarData]:
    """Rebuilds the model saved in ``checkpoint`` and scores data with it.

    Args:
        checkpoint (Path): a checkpoint directory, or a run directory (its best validated
            checkpoint, else its newest).
        data_path (str, optional): data to score, read with the run's data settings; ``None``
            scores the run's own evaluation split. Default: ``None``
        data_overrides (Mapping[str, object], optional): ``data`` config keys to change for
            reading (e.g. ``format``). Default: ``None``

    Returns:
        tuple[np.ndarray, np.ndarray, ColumnarData]: labels and click probabilities, both
        :math:`(R)`, and the data scored.

    Raises:
        DataError: when the data's columns differ from those the model was trained on.
    """
    spec = read_run_spec(checkpoint)
    config = Config.from_dict(spec["config"])  # type: ignore[arg-type]
    schema = Schema.from_dict(spec["schema"])  # type: ignore[arg-type]
    data_config = replace(config.data, **dict(data_overrides or {}))
    if data_path is None:
        data = load_splits(data_config).eval
    else:
        data = load_dataset(data_path, data_config)
    if data.schema != schema:
        raise DataError(
            f"{data_path}: columns differ from the training data's; the model expects label "
            f"{schema.label!r}, dense {list(schema.dense_features)}, sparse {list(schema.sparse_features)}"
        )
    tables = [from_mapping(EmbeddingTableConfig, raw) for raw in spec["tables"]]  # type: ignore[union-attr]
    hashed = [from_mapping(DeepHashTableConfig, raw) for raw in spec.get("deep_hash_tables", [])]  # type: ignore[union-attr]
    directory = resolve_checkpoint(checkpoint)
    # Tiered tables rebuild their files from the checkpoint into a scratch directory beside it.
    with tempfile.TemporaryDirectory(prefix=".eval-tables-", dir=directory.parent) as scratch:
        collection = EmbeddingCollection(tables, seed=config.train.seed, directory=Path(scratch))
        network = build_network(config.model, schema.num_dense, tables, hashed, config.train.seed)
        load_checkpoint(directory, network, collection)
        bf16 = config.train.dense_precision is DensePrecision.BF16
        labels, probabilities = predict(network, collection, data, config.train.eval_batch_size, bf16)
    return labels, probabilities, data


def evaluate_checkpoint(
    checkpoint: Path, data_path: str | None = None, data_overrides: Mapping[str, object] | None = None
) -> tuple[ClickMetrics, ColumnarData]:
    """:func:`predict_checkpoint`'s scores as metrics (same arguments)."""
    labels, probabilities, data = predict_checkpoint(checkpoint, data_path, data_overrides)
    return compute_metrics(labels, probabilities), data
