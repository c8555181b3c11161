"""Scoring a dataset with a trained model, and the metrics of that scoring."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from terarec._dataclass_codec import from_mapping
from terarec.data import Batch, BatchLoader, ColumnarData, Schema, load_dataset, load_splits
from terarec.embedding import DeepHashTableConfig, EmbeddingCollection, EmbeddingTableConfig
from terarec.errors import DataError
from terarec.train.builders import build_network
from terarec.train.checkpoint import load_checkpoint, read_run_spec, resolve_checkpoint
from terarec.train.config import Config, DensePrecision
from terarec.train.distributed import World, gather_objects
from terarec.train.metrics import ClickMetrics, compute_metrics
from terarec.train.network import DenseNetwork

__all__ = ["evaluate", "evaluate_checkpoint", "map_rows", "open_checkpoint", "predict", "predict_checkpoint"]


def map_rows(
    network: DenseNetwork,
    collection: EmbeddingCollection,
    data: ColumnarData,
    batch_size: int,
    compute: Callable[[Batch, torch.Tensor], tuple[torch.Tensor, ...]],
    bf16: bool = False,
    world: World = World(),
) -> tuple[np.ndarray, ...]:
    """``compute(batch, pooled)`` over every row of ``data``, with the network and tables in
    evaluation mode and no gradients (``bf16``: under bfloat16 autocast).

    With several ranks (``world``), each computes its share of every batch of ``batch_size``
    rows, through a sharded ``collection``, and every rank gets all rows back.

    Returns:
        tuple[np.ndarray, ...]: ``compute``'s outputs, each :math:`(R, ...)` in row order.
    """
    per_rank = -(-batch_size // world.size)
    loader = BatchLoader(data, per_rank, shuffle=False, rank=world.rank, world_size=world.size)
    order = loader.order(0)
    outputs: list[tuple[np.ndarray, ...]] = []
    rows: list[np.ndarray] = []
    was_training, tables_were_training = network.training, collection.training
    network.eval()
    collection.eval()
    try:
        with torch.no_grad(), contextlib.closing(loader.iterate(epoch=0)) as batches:
            for index, batch in enumerate(batches):
                # One batch at a time on this thread: prepare may use every core.
                pooled = collection.lookup(collection.prepare(batch.sparse, parallel=True))
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    computed = compute(batch, pooled.values)
                outputs.append(tuple(tensor.float().numpy() for tensor in computed))
                rows.append(loader.rows_of(order, index))
    finally:
        network.train(was_training)
        collection.train(tables_were_training)
    local = (np.concatenate(rows), *(np.concatenate(parts) for parts in zip(*outputs))) if outputs else None
    parts = [part for part in gather_objects(world, local) if part is not None]
    if not parts:
        raise DataError(f"{data.source or 'the data'}: no rows to compute")
    row_ids, *arrays = (np.concatenate(columns) for columns in zip(*parts))
    placed = np.argsort(row_ids, kind="stable")
    return tuple(array[placed] for array in arrays)


def predict(
    network: DenseNetwork,
    collection: EmbeddingCollection,
    data: ColumnarData,
    batch_size: int,
    bf16: bool = False,
    world: World = World(),
) -> tuple[np.ndarray, np.ndarray]:
    """Click probabilities for every row of ``data`` (see :func:`map_rows` for the arguments).

    Returns:
        tuple[np.ndarray, np.ndarray]: ``(labels, probabilities)``, both :math:`(R)`, in row order.
    """

    def probabilities(batch: Batch, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.labels, torch.sigmoid(network(batch.dense, pooled, batch.sparse).float())

    labels, scores = map_rows(network, collection, data, batch_size, probabilities, bf16, world)
    return labels, scores


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
    with open_checkpoint(checkpoint) as (config, schema, network, collection):
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
        bf16 = config.train.dense_precision is DensePrecision.BF16
        labels, probabilities = predict(network, collection, data, config.train.eval_batch_size, bf16)
    return labels, probabilities, data


@contextlib.contextmanager
def open_checkpoint(checkpoint: Path) -> Iterator[tuple[Config, Schema, DenseNetwork, EmbeddingCollection]]:
    """The run config, data schema, network and tables saved in ``checkpoint`` (a checkpoint
    directory, or a run directory: its best validated checkpoint, else its newest), for use
    inside the ``with`` block: tiered tables are rebuilt into a scratch directory beside the
    checkpoint, removed afterwards."""
    spec = read_run_spec(checkpoint)
    config = Config.from_dict(spec["config"])  # type: ignore[arg-type]
    schema = Schema.from_dict(spec["schema"])  # type: ignore[arg-type]
    tables = [from_mapping(EmbeddingTableConfig, raw) for raw in spec["tables"]]  # type: ignore[union-attr]
    hashed = [from_mapping(DeepHashTableConfig, raw) for raw in spec.get("deep_hash_tables", [])]  # type: ignore[union-attr]
    directory = resolve_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(prefix=".eval-tables-", dir=directory.parent) as scratch:
        collection = EmbeddingCollection(tables, seed=config.train.seed, directory=Path(scratch))
        network = build_network(config.model, schema.num_dense, tables, hashed, config.train.seed)
        load_checkpoint(directory, network, collection)
        yield config, schema, network, collection


def evaluate_checkpoint(
    checkpoint: Path, data_path: str | None = None, data_overrides: Mapping[str, object] | None = None
) -> tuple[ClickMetrics, ColumnarData]:
    """:func:`predict_checkpoint`'s scores as metrics (same arguments)."""
    labels, probabilities, data = predict_checkpoint(checkpoint, data_path, data_overrides)
    return compute_metrics(labels, probabilities), data
