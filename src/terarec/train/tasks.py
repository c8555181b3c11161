"""What a run learns: the task brings the loss of a batch and the metrics of a split.

The loop knows no model and no metric: it asks its :class:`Task` for a batch's loss and for a
split's metrics. :class:`ClickTask` is click prediction (binary cross-entropy, AUC);
:class:`~terarec.train.retrieval.RetrievalTask` is retrieval (in-batch sampled softmax,
full-ranking recall and NDCG); :class:`~terarec.train.ranking.RankingTask` is learning to rank
(pairwise, listwise or ApproxNDCG losses; NDCG, MRR and MAP per group).
:func:`~terarec.train.task_selection.build_task` picks one from the run's data.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn

from terarec.data import Batch, BatchLoader, ColumnarData
from terarec.embedding import EmbeddingCollection
from terarec.train.config import StoppingMetric
from terarec.train.distributed import World
from terarec.train.evaluate import evaluate
from terarec.train.network import DenseNetwork

__all__ = ["ClickTask", "Task"]


class Task(abc.ABC):
    """A run's loss and metrics.

    Attributes:
        metric (StoppingMetric): the validation metric that picks the best model when
            ``train.early_stopping.metric`` is unset.
        sampled_rows (int): rows of each training batch that the task's loader adds to the
            examples (sampled negatives); they are not counted as examples.
    """

    metric: StoppingMetric
    sampled_rows: int = 0

    def batch_loader(self, data: ColumnarData, batch_size: int, **options: Any) -> BatchLoader:
        """The loader of the training batches: a :class:`~terarec.data.BatchLoader` over
        ``data``; ``options`` are its keyword arguments (shuffle, seed, ranks)."""
        return BatchLoader(data, batch_size, **options)

    @abc.abstractmethod
    def loss(self, network: DenseNetwork, trainable: nn.Module, batch: Batch, pooled: torch.Tensor) -> torch.Tensor:
        """The loss of a batch, from ``trainable`` (``network`` or its DistributedDataParallel
        wrapper, which every forward must go through) and the tables' ``pooled`` output."""

    def scored_loss(
        self, network: DenseNetwork, trainable: nn.Module, batch: Batch, pooled: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`loss`, and the scores of the batch's examples the loss came from (logits, one
        per example) where the task has them, else ``None``: a progressive validation scores
        each example before training on it."""
        return self.loss(network, trainable, batch, pooled), None

    @abc.abstractmethod
    def evaluate(
        self, network: DenseNetwork, collection: EmbeddingCollection, split: str, world: World
    ) -> dict[str, float]:
        """The metrics of ``split`` (``"val"`` or ``"eval"``), with ``examples``: what was scored."""


class ClickTask(Task):
    """Click prediction: binary cross-entropy on the labels; AUC, log loss, NE and calibration.

    Args:
        val (ColumnarData, optional): the validation split, or ``None``.
        eval (ColumnarData, optional): the evaluation split, or ``None`` (a stream without one).
        batch_size (int): examples per evaluation batch.
        bf16 (bool): evaluate under bfloat16 autocast.
    """

    metric = StoppingMetric.AUC

    def __init__(self, val: ColumnarData | None, eval: ColumnarData | None, batch_size: int, bf16: bool) -> None:
        self.splits = {"val": val, "eval": eval}
        self.batch_size, self.bf16 = batch_size, bf16

    def loss(self, network: DenseNetwork, trainable: nn.Module, batch: Batch, pooled: torch.Tensor) -> torch.Tensor:
        return self.scored_loss(network, trainable, batch, pooled)[0]

    def scored_loss(
        self, network: DenseNetwork, trainable: nn.Module, batch: Batch, pooled: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = trainable(batch.dense, pooled, batch.sparse).float()
        return network.loss(logits, batch.labels), logits.detach()

    def evaluate(
        self, network: DenseNetwork, collection: EmbeddingCollection, split: str, world: World
    ) -> dict[str, float]:
        data = self.splits[split]
        assert data is not None
        return evaluate(network, collection, data, self.batch_size, self.bf16, world).to_dict()
