"""Retrieval: a two-tower model trained with in-batch negatives, measured by full ranking.

Each training row is a positive user-item event. A batch's loss is the sampled softmax of
:func:`~terarec.models.in_batch_softmax_loss`: every user against every item of the *global*
batch (with several ranks, item vectors are all-gathered, with gradients, so each rank's
negatives span all ranks' items), with the log-Q correction of each item's share of the
training events. With ``model.two_tower.uniform_negatives``, each batch also carries items drawn
uniformly from the catalogue (:class:`~terarec.data.NegativeSamplingLoader`): they are
negatives for every user, and the correction becomes the log of each candidate's expected count
among a step's candidates, drawn both ways. Evaluation embeds the whole catalogue with the item tower and each query's
user with the user tower, and ranks every item for every query
(:func:`~terarec.train.retrieval_metrics.full_ranking_metrics`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from torch import nn

from terarec.data import Batch, BatchLoader, ColumnarData, NegativeSamplingLoader, QuerySet, RetrievalData, load_splits
from terarec.embedding import EmbeddingCollection
from terarec.models import ModelType, TwoTower, TwoTowerConfig, in_batch_softmax_loss
from terarec.train.checkpoint import read_run_spec
from terarec.train.config import Config, DensePrecision, StoppingMetric
from terarec.train.distributed import World
from terarec.train.evaluate import map_rows, open_checkpoint
from terarec.train.network import DenseNetwork
from terarec.train.retrieval_metrics import full_ranking_metrics
from terarec.train.tasks import Task

__all__ = ["RetrievalTask", "embed_rows", "evaluate_retrieval_checkpoint", "is_retrieval_run", "run_config"]

# Scores held at once while ranking: queries per block times catalogue items.
_SCORES_PER_BLOCK = 1 << 23


def embed_rows(
    network: DenseNetwork,
    collection: EmbeddingCollection,
    data: ColumnarData,
    tower: str,
    batch_size: int,
    bf16: bool = False,
    world: World = World(),
) -> np.ndarray:
    """Every row's vector from one tower of a two-tower ``network``: ``tower`` is ``"user"`` or ``"item"``.

    Shape:
        - Output: :math:`(R, D_{out})`, ``float32``, in row order
    """
    model = network.model
    if not isinstance(model, TwoTower):
        raise TypeError(f"embed_rows needs a two-tower model, got {type(model).__name__}")
    vectors = model.user_vectors if tower == "user" else model.item_vectors

    def compute(batch: Batch, pooled: torch.Tensor) -> tuple[torch.Tensor]:
        return (vectors(network.inputs(batch.dense, pooled, batch.sparse)),)

    return map_rows(network, collection, data, batch_size, compute, bf16, world)[0]


class RetrievalTask(Task):
    """In-batch sampled softmax with log-Q correction; full-ranking ``recall@k``, ``ndcg@k``,
    ``hit@k`` and ``mrr`` (see the module docstring).

    Args:
        retrieval (RetrievalData): the catalogue, queries and item counts of the run's log.
        settings (TwoTowerConfig): ``model.two_tower`` (temperature, log-Q correction).
        batch_size (int): rows per evaluation batch.
        bf16 (bool): evaluate under bfloat16 autocast.
        world (World): the ranks; their batches' items are every rank's negatives.
    """

    metric = StoppingMetric.NDCG_AT_10

    def __init__(
        self, retrieval: RetrievalData, settings: TwoTowerConfig, batch_size: int, bf16: bool, world: World
    ) -> None:
        self.retrieval, self.settings, self.batch_size, self.bf16, self.world = retrieval, settings, batch_size, bf16, world
        self.item_feature = retrieval.item_features[0]
        self.sampled_rows = settings.uniform_negatives
        item_ids = np.asarray(retrieval.catalogue.sparse[self.item_feature].values, np.int64)
        order = np.argsort(item_ids)
        self._sorted_ids = item_ids[order]
        self._share = retrieval.item_counts[order] / retrieval.item_counts.sum()

    def batch_loader(self, data: ColumnarData, batch_size: int, **options: Any) -> BatchLoader:
        """Batches of training events, followed by ``uniform_negatives`` catalogue items when set."""
        if not self.settings.uniform_negatives:
            return super().batch_loader(data, batch_size, **options)
        return NegativeSamplingLoader(
            data, batch_size, negatives=self.retrieval.catalogue, num_negatives=self.settings.uniform_negatives, **options
        )

    def _positions(self, item_ids: np.ndarray) -> np.ndarray:
        positions = np.minimum(np.searchsorted(self._sorted_ids, item_ids), len(self._sorted_ids) - 1)
        if not np.array_equal(self._sorted_ids[positions], item_ids):
            raise ValueError("a training item is not in the catalogue")
        return positions

    def log_q(self, item_ids: np.ndarray, events: int = 1, sampled: int = 0) -> torch.Tensor:
        """The log of how often each item is expected among a step's candidates: ``events``
        drawn in proportion to the items' shares of the training events, and ``sampled`` drawn
        uniformly from the catalogue. Without ``sampled``, the log of each item's share (the
        same up to a constant, which a softmax ignores).

        Raises:
            ValueError: for an item that is not in the catalogue.
        """
        positions = self._positions(item_ids)
        if not sampled:
            return torch.from_numpy(np.log(self._share[positions]).astype(np.float32))
        expected = events * self._share[positions] + sampled / len(self._sorted_ids)
        return torch.from_numpy(np.log(expected).astype(np.float32))

    def loss(self, network: DenseNetwork, trainable: nn.Module, batch: Batch, pooled: torch.Tensor) -> torch.Tensor:
        users, items = trainable(batch.dense, pooled, batch.sparse, towers=True)
        # A batch is its events, then the sampled negatives, whose users are empty rows.
        sampled = self.sampled_rows
        events = users.shape[0] - sampled
        users = users[:events]
        ids = batch.sparse[self.item_feature].values
        positives = torch.arange(events)
        if self.world.size > 1:
            positives = positives + self.world.rank * items.shape[0]
            items = torch.cat(dist_functional.all_gather(items.contiguous()))
            gathered = [torch.empty_like(ids) for _ in range(self.world.size)]
            dist.all_gather(gathered, ids)
            ids = torch.cat(gathered)
        world_events, world_sampled = ids.shape[0] - sampled * self.world.size, sampled * self.world.size
        log_q = self.log_q(ids.numpy(), world_events, world_sampled) if self.settings.log_q_correction else None
        return in_batch_softmax_loss(users.float(), items.float(), ids, self.settings.temperature, log_q, positives)

    def evaluate(
        self, network: DenseNetwork, collection: EmbeddingCollection, split: str, world: World
    ) -> dict[str, float]:
        queries: QuerySet | None = self.retrieval.val if split == "val" else self.retrieval.eval
        assert queries is not None
        items = torch.from_numpy(
            embed_rows(network, collection, self.retrieval.catalogue, "item", self.batch_size, self.bf16, world)
        )
        users = torch.from_numpy(embed_rows(network, collection, queries.queries, "user", self.batch_size, self.bf16, world))
        block = max(1, _SCORES_PER_BLOCK // max(self.retrieval.num_items, 1))
        metrics = full_ranking_metrics(
            lambda rows: users[torch.from_numpy(rows)] @ items.T, queries.num_queries, queries.targets, queries.exclude, block=block
        )
        return metrics.to_dict()


def run_config(checkpoint: Path) -> Config:
    """The config a checkpoint (or the run directory holding it) was trained with."""
    return Config.from_dict(read_run_spec(checkpoint)["config"])  # type: ignore[arg-type]


def is_retrieval_run(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` (or the run directory holding it) trained a two-tower model."""
    return run_config(checkpoint).model.type is ModelType.TWO_TOWER


def evaluate_retrieval_checkpoint(checkpoint: Path) -> dict[str, float]:
    """The full-ranking metrics of a saved two-tower model on its run's evaluation queries (the
    run's data read again with its settings)."""
    with open_checkpoint(checkpoint) as (config, _, network, collection):
        splits = load_splits(config.data)
        assert splits.retrieval is not None
        bf16 = config.train.dense_precision is DensePrecision.BF16
        task = RetrievalTask(splits.retrieval, config.model.two_tower, config.train.eval_batch_size, bf16, World())
        return task.evaluate(network, collection, "eval", World())
