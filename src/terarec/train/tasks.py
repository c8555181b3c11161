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

from terarec.data import Batch, BatchLoader, ColumnarData, DataSplits
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

    @abc.abstractmethod
    def evaluate(
        self, network: DenseNetwork, collection: EmbeddingCollection, split: str, world: World
    ) -> dict[str, float]:
        """The metrics of ``split`` (``"val"`` or ``"eval"``), with ``examples``: what was scored."""


class ClickTask(Task):
    """Click prediction: binary cross-entropy on the labels; AUC, log loss, NE and calibration.

    Args:
        splits (DataSplits): the run's data.
        batch_size (int): examples per evaluation batch.
        bf16 (bool): evaluate under bfloat16 autocast.
    """

    metric = StoppingMetric.AUC

    def __init__(self, splits: DataSplits, batch_size: int, bf16: bool) -> None:
        self.splits, self.batch_size, self.bf16 = splits, batch_size, bf16

    def loss(self, network: DenseNetwork, trainable: nn.Module, batch: Batch, pooled: torch.Tensor) -> torch.Tensor:
        logits = trainable(batch.dense, pooled, batch.sparse)
        return network.loss(logits.float(), batch.labels)

    def evaluate(
        self, network: DenseNetwork, collection: EmbeddingCollection, split: str, world: World
    ) -> dict[str, float]:
        data: ColumnarData | None = self.splits.val if split == "val" else self.splits.eval
        assert data is not None
        return evaluate(network, collection, data, self.batch_size, self.bf16, world).to_dict()
