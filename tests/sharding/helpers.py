"""Small tables whose costs are known by hand, shared by the sharding tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from terarec.embedding import (
    EmbeddingCollection,
    EmbeddingTableConfig,
    OptimizerConfig,
    OptimizerType,
)
from terarec.sharding import TableWorkload
from terarec.sparse import JaggedTensor


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


def one_process_run(
    tables: Sequence[EmbeddingTableConfig],
    steps: int,
    global_batch: Callable[[int], tuple[Mapping[str, JaggedTensor], torch.Tensor]],
) -> tuple[np.ndarray, EmbeddingCollection]:
    """What the sharded tests compare with: ``tables`` trained in one process (seed 3) on the
    global batches, and the pooled output of every step, stacked."""
    collection = EmbeddingCollection(tables, seed=3)
    outputs = []
    for step in range(steps):
        sparse, grad = global_batch(step)
        prepared = collection.prepare(sparse)
        outputs.append(collection.lookup(prepared).values.detach().numpy())
        collection.apply_gradients(prepared, grad)
    return np.stack(outputs), collection


def load_unsharded(tables: Sequence[EmbeddingTableConfig], directory: Path) -> EmbeddingCollection:
    """What a sharded run saved, loaded into one process."""
    collection = EmbeddingCollection(tables, seed=0)
    collection.load(directory)
    return collection


def random_global_batch(
    seed: int, size: int, features: Sequence[str], width: int
) -> tuple[dict[str, JaggedTensor], torch.Tensor]:
    """A global batch of ``size`` examples (bags of 0 to 3 IDs, some empty, per feature) and a
    gradient for its ``(size, width)`` pooled rows, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    sparse = {}
    for feature in features:
        lengths = torch.from_numpy(rng.integers(0, 4, size))
        values = torch.from_numpy(rng.integers(-(2**40), 2**40, int(lengths.sum())))
        sparse[feature] = JaggedTensor.from_lengths(values, lengths)
    return sparse, torch.from_numpy(rng.standard_normal((size, width)).astype(np.float32))


def rendezvous_file(directory: Path) -> str:
    """A fresh file for the ranks of one process group to meet in: no TCP port to pick, free and
    then bind again (another process may take it in between)."""
    return str(Path(directory) / f"rendezvous-{uuid.uuid4().hex}")
