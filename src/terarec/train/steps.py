"""One training step and what every training driver shares: threads, cache checks, the
embedding update policy, the run's description in its checkpoints.

:func:`~terarec.train.fit` (a dataset known up front) and the streaming driver
(:mod:`terarec.train.stream`, files as they arrive) run the same step on the same objects, so a
model trains alike whichever feeds it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numba
import torch
from torch import nn

from terarec._background import iterate_in_background
from terarec._dataclass_codec import to_mapping
from terarec.data import Batch, Schema
from terarec.embedding import DeepHashTableConfig, EmbeddingTableConfig, PooledEmbeddings
from terarec.errors import ConfigError
from terarec.sharding import TrainingMode
from terarec.train.checkpoint import TrainerState
from terarec.train.config import Config, DensePrecision
from terarec.train.distributed import World
from terarec.train.network import DenseNetwork
from terarec.train.placement import Placement
from terarec.train.schedule import set_learning_rate
from terarec.train.tasks import Task
from terarec.train.updates import EmbeddingUpdates, HybridUpdates, SyncUpdates, check_hybrid_tables

__all__ = [
    "PREPARE_AHEAD",
    "StepOutput",
    "TrainResult",
    "TrainingStep",
    "advance",
    "build_updates",
    "check_cache_sizes",
    "configure_threads",
    "forward_backward",
    "prepare_in_background",
    "run_spec",
]

PREPARE_AHEAD = 1  # batches whose IDs are mapped and de-duplicated ahead of training


def configure_threads(num_threads: int | None) -> int:
    """Sets torch's and numba's thread counts (both default to every core) and returns the count."""
    count = num_threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    return count


def check_cache_sizes(tables: list[EmbeddingTableConfig], batch_size: int) -> None:
    """Refuses a tiered table whose cache cannot hold two batches' rows (the pipeline keeps the
    previous batch resident), counting one distinct row per bag in the worst case."""
    for table in tables:
        if table.tiered is None:
            continue
        cache_rows = table.tiered.cache_bytes // table.row_bytes
        needed = min(table.num_embeddings, 2 * batch_size * len(table.feature_names))
        if cache_rows < needed:
            raise ConfigError(
                f"table {table.name!r}: cache_bytes={table.tiered.cache_bytes} holds {cache_rows} rows of "
                f"{table.row_bytes} bytes, but two batches of {batch_size} examples over "
                f"{len(table.feature_names)} feature(s) may need {needed} rows; set embedding.tiered.cache_bytes "
                f">= {needed * table.row_bytes} (or lower train.batch_size / train.eval_batch_size)"
            )


def build_updates(config: Config, collection: object, tables: list[EmbeddingTableConfig]) -> EmbeddingUpdates:
    """How the run applies embedding gradients: at once (``sync``) or Persia's bounded-stale ``hybrid``."""
    if config.sharding.mode is TrainingMode.HYBRID:
        check_hybrid_tables(tables)
        return HybridUpdates(collection, config.sharding.staleness)  # type: ignore[arg-type]
    return SyncUpdates(collection)  # type: ignore[arg-type]


def run_spec(
    config: Config,
    schema: Schema,
    tables: list[EmbeddingTableConfig],
    deep_hash_tables: list[DeepHashTableConfig],
    world: World,
    placement: Placement,
    **extra: object,
) -> dict[str, object]:
    """What a checkpoint records of its run (see :func:`~terarec.train.checkpoint.read_run_spec`):
    the config, the data schema, the tables, the world size and placement, and ``extra`` keys."""
    return {
        "config": config.to_dict(),
        "schema": schema.to_dict(),
        "tables": [to_mapping(table) for table in tables],
        "deep_hash_tables": [to_mapping(table) for table in deep_hash_tables],
        "world_size": world.size,
        "placement": placement,
        **extra,
    }


def advance(state: TrainerState, batch_size: int, batches_per_epoch: int) -> TrainerState:
    """The state after one more step; the only place the step counter changes."""
    next_batch = state.batch_in_epoch + 1
    rolls_over = next_batch >= batches_per_epoch
    return replace(
        state,
        step=state.step + 1,
        epoch=state.epoch + 1 if rolls_over else state.epoch,
        batch_in_epoch=0 if rolls_over else next_batch,
        examples_seen=state.examples_seen + batch_size,
    )


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit` measured; the same content is written to ``OUT/metrics.json``."""

    metrics: dict[str, object]
    run_dir: Path
    checkpoint: Path


@dataclass(frozen=True)
class StepOutput:
    """What one step leaves: its ``loss``, the ``scores`` of its examples from before the update
    (``None`` when the task has none), and how many ``examples`` it trained on."""

    loss: torch.Tensor
    scores: torch.Tensor | None
    examples: int


def forward_backward(
    task: Task,
    network: DenseNetwork,
    trainable: nn.Module,
    batch: Batch,
    pooled: PooledEmbeddings,
    bf16: bool,
    embedding_l2: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The task's loss of one batch (and its scores, see :meth:`Task.scored_loss`), with gradients
    left on the dense parameters and on ``pooled.values``.

    ``trainable`` is ``network`` itself, or its DistributedDataParallel wrapper.
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, scores = task.scored_loss(network, trainable, batch, pooled.values)
        loss = loss.float()
    if embedding_l2 > 0:
        loss = loss + embedding_l2 * pooled.values.square().sum() / pooled.values.shape[0]
    loss.backward()
    return loss.detach(), scores


class TrainingStep:
    """One optimizer step over a prepared batch: lookup, forward, backward, the embedding and dense
    updates, with the dense learning rate a pure function of the step (so resume is exact).

    Args:
        config (Config): the run's config (its ``train`` section's rate, precision and L2).
        task (Task): the loss.
        network (DenseNetwork): the dense network.
        trainable (nn.Module): ``network`` or its DistributedDataParallel wrapper.
        optimizer (torch.optim.Optimizer): the dense optimizer.
        collection (Any): the tables (an embedding collection, sharded or not).
        updates (EmbeddingUpdates): how embedding gradients are applied.
        world (World): this rank's place in the run.
    """

    def __init__(
        self,
        config: Config,
        task: Task,
        network: DenseNetwork,
        trainable: nn.Module,
        optimizer: torch.optim.Optimizer,
        collection: Any,
        updates: EmbeddingUpdates,
        world: World,
    ) -> None:
        self.settings, self.task, self.network, self.trainable = config.train, task, network, trainable
        self.optimizer, self.collection, self.updates, self.world = optimizer, collection, updates, world
        self.bf16 = config.train.dense_precision is DensePrecision.BF16

    def __call__(self, batch: Batch, prepared: Any, step: int, total_steps: int) -> StepOutput:
        """Trains on ``batch`` (``prepared`` by the collection) as step ``step`` of ``total_steps``."""
        set_learning_rate(self.optimizer, self.settings, step, total_steps)
        self.updates.before_lookup()
        pooled = self.collection.lookup(prepared)
        self.updates.after_lookup()
        loss, scores = forward_backward(
            self.task, self.network, self.trainable, batch, pooled, self.bf16, self.settings.embedding_l2
        )
        self.updates.apply(prepared, pooled.values.grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        examples = prepared.global_batch_size - self.task.sampled_rows * self.world.size
        return StepOutput(loss, scores, examples)


def prepare_in_background(collection: Any, batches: Iterable[Batch]) -> Iterator[tuple[Batch, Any]]:
    """``batches`` with their lookups prepared by the collection on a second thread,
    :data:`PREPARE_AHEAD` batches ahead (mapping, de-duplicating and, for tiered tables, loading
    rows while the previous batch trains). Results are the same as without it."""
    return iterate_in_background(
        ((batch, collection.prepare(batch.sparse)) for batch in batches), depth=PREPARE_AHEAD, name="terarec-prepare"
    )
