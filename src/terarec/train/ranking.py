"""Learning to rank: any model's scores compared within groups, by a ranking loss and per-group metrics.

Each batch holds whole groups (:class:`~terarec.data.GroupedBatchLoader`), so the losses compare
only rows of one group, with one mask over the batch (no loop over groups). Labels are relevance
grades; the gain of a row is :math:`2^y - 1`.

Losses (``train.ranking.loss``):

- ``pairwise_logistic`` (RankNet): the mean over pairs of one group with :math:`y_i > y_j` of
  :math:`\\log(1 + e^{-(s_i - s_j)})`;
- ``softmax``: per group, the cross-entropy of the softmax of the scores against the grades
  normalised to sum to one, averaged over groups with a positive grade;
- ``approx_ndcg`` (Qin et al., 2010): one minus NDCG computed with smooth ranks
  :math:`\\hat r_i = 1 + \\sum_{j \\ne i} \\sigma((s_j - s_i) / T)`, averaged over groups.

Metrics, each the mean over groups with a relevant row (grade > 0); the others are counted:
``ndcg@k`` (gains :math:`2^y - 1`), ``mrr`` (the first relevant row's reciprocal rank) and
``map`` (mean over relevant rows of the precision at their rank). Rows are ranked by score,
ties by position (a constant scorer earns nothing from them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from terarec.data import Batch, BatchLoader, ColumnarData, DataSplits, GroupedBatchLoader
from terarec.embedding import EmbeddingCollection
from terarec.train.config import RankingConfig, RankingLoss, StoppingMetric
from terarec.train.distributed import World
from terarec.train.evaluate import predict, predict_checkpoint
from terarec.train.network import DenseNetwork
from terarec.train.tasks import Task

__all__ = [
    "RankingTask",
    "approx_ndcg_loss",
    "evaluate_ranking_checkpoint",
    "group_ranking_metrics",
    "pairwise_logistic_loss",
    "ranking_summary",
    "softmax_loss",
]

RANKING_CUTOFFS = (1, 5, 10)


def _same_group(groups: torch.Tensor) -> torch.Tensor:
    return groups.unsqueeze(0) == groups.unsqueeze(1)


def pairwise_logistic_loss(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """RankNet's loss over the ordered pairs of each group (see the module docstring).

    Shape:
        - scores, labels, groups: :math:`(B)`
        - Output: scalar

    Example::

        >>> pairwise_logistic_loss(torch.tensor([2.0, 0.0, 5.0]), torch.tensor([1.0, 0.0, 3.0]), torch.tensor([0, 0, 1]))
        tensor(0.1269)
    """
    better = _same_group(groups) & (labels.unsqueeze(1) > labels.unsqueeze(0))
    if not better.any():
        return scores.sum() * 0.0
    margins = scores.unsqueeze(1) - scores.unsqueeze(0)
    return functional.softplus(-margins[better]).mean()


def softmax_loss(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Listwise softmax cross-entropy per group against its normalised grades (see the module docstring).

    Shape:
        - scores, labels, groups: :math:`(B)`
        - Output: scalar
    """
    same = _same_group(groups)
    masked = scores.unsqueeze(0).masked_fill(~same, float("-inf"))
    log_softmax = scores - torch.logsumexp(masked, dim=1)  # each row's log-probability within its group
    num_groups = int(groups.max()) + 1 if groups.numel() else 0
    totals = torch.zeros(num_groups, dtype=labels.dtype).index_add_(0, groups, labels)
    weights = labels / totals[groups].clamp_min(torch.finfo(labels.dtype).tiny)
    per_group = torch.zeros(num_groups, dtype=scores.dtype).index_add_(0, groups, -weights * log_softmax)
    relevant = totals > 0
    if not relevant.any():
        return scores.sum() * 0.0
    return per_group[relevant].mean()


def _discounted_gains(labels: torch.Tensor) -> torch.Tensor:
    return torch.pow(2.0, labels) - 1.0


def approx_ndcg_loss(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """One minus ApproxNDCG per group, averaged over groups with a positive grade.

    Shape:
        - scores, labels, groups: :math:`(B)`
        - Output: scalar
    """
    same = _same_group(groups)
    beaten_by = torch.sigmoid((scores.unsqueeze(0) - scores.unsqueeze(1)) / temperature) * same
    ranks = 1.0 + beaten_by.sum(dim=1) - 0.5  # the diagonal contributes sigmoid(0) = 0.5
    gains = _discounted_gains(labels)
    num_groups = int(groups.max()) + 1 if groups.numel() else 0
    dcg = torch.zeros(num_groups, dtype=scores.dtype).index_add_(0, groups, gains / torch.log2(1.0 + ranks))
    # The ideal DCG: each row's rank when its group is sorted by grade.
    ideal_rank = (same & (labels.unsqueeze(0) > labels.unsqueeze(1))).sum(dim=1) + 1
    ties_before = same & (labels.unsqueeze(0) == labels.unsqueeze(1))
    ideal_rank = ideal_rank + torch.tril(ties_before, diagonal=-1).sum(dim=1)
    ideal = torch.zeros(num_groups, dtype=scores.dtype).index_add_(0, groups, gains / torch.log2(1.0 + ideal_rank.to(scores.dtype)))
    relevant = ideal > 0
    if not relevant.any():
        return scores.sum() * 0.0
    return (1.0 - dcg[relevant] / ideal[relevant]).mean()


def group_ranking_metrics(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, cutoffs: Sequence[int] = RANKING_CUTOFFS
) -> dict[str, float]:
    """``ndcg@k``, ``mrr`` and ``map`` per group, averaged (see the module docstring), with ``groups``
    (ranked), ``groups_without_relevant`` and ``examples`` (rows).

    Shape:
        - labels, scores, groups: :math:`(R)`, a group's rows contiguous

    Example::

        >>> m = group_ranking_metrics(np.array([0, 2, 1, 0, 1.0]), np.array([0.9, 0.8, 0.1, 0.5, 0.7]),
        ...                           np.array([1, 1, 1, 2, 2]), cutoffs=(1,))
        >>> round(m["mrr"], 4), round(m["map"], 4), m["ndcg@1"], m["groups"]
        (0.75, 0.7917, 0.5, 2)
    """
    labels = np.asarray(labels, np.float64)
    scores = np.asarray(scores, np.float64)
    groups = np.asarray(groups)
    starts = np.concatenate([[0], np.flatnonzero(groups[1:] != groups[:-1]) + 1])
    group_of_row = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(groups))))
    position = np.arange(len(groups))
    # Rank within the group by score (descending), ties by position.
    order = np.lexsort((position, -scores, group_of_row))
    rank = np.empty(len(groups), np.int64)
    rank[order] = position - starts[group_of_row[order]] + 1
    ideal_order = np.lexsort((position, -labels, group_of_row))
    ideal_rank = np.empty(len(groups), np.int64)
    ideal_rank[ideal_order] = position - starts[group_of_row[ideal_order]] + 1
    num_groups = len(starts)
    relevant = labels > 0
    has_relevant = np.bincount(group_of_row, weights=relevant, minlength=num_groups) > 0
    kept = max(int(has_relevant.sum()), 1)
    gains = np.power(2.0, labels) - 1.0
    metrics: dict[str, float] = {}
    for k in cutoffs:
        dcg = np.bincount(group_of_row, weights=np.where(rank <= k, gains / np.log2(rank + 1.0), 0.0), minlength=num_groups)
        ideal = np.bincount(group_of_row, weights=np.where(ideal_rank <= k, gains / np.log2(ideal_rank + 1.0), 0.0), minlength=num_groups)
        metrics[f"ndcg@{k}"] = float((dcg[has_relevant] / ideal[has_relevant]).sum() / kept)
    first = np.full(num_groups, np.iinfo(np.int64).max)
    np.minimum.at(first, group_of_row[relevant], rank[relevant])
    metrics["mrr"] = float((1.0 / first[has_relevant]).sum() / kept)
    # Precision at each relevant row's rank: relevant rows ranked at or above it, over its rank.
    by_rank = np.lexsort((rank, group_of_row))  # group blocks stay where they are, each sorted by rank
    relevant_sorted = relevant[by_rank].astype(np.int64)
    seen = np.cumsum(relevant_sorted)
    before_group = (seen - relevant_sorted)[starts]
    precision = np.zeros(len(groups))
    precision[by_rank] = (seen - before_group[group_of_row[by_rank]]) / rank[by_rank]
    average_precision = np.bincount(group_of_row, weights=np.where(relevant, precision, 0.0), minlength=num_groups)
    counts = np.bincount(group_of_row, weights=relevant, minlength=num_groups)
    metrics["map"] = float((average_precision[has_relevant] / counts[has_relevant]).sum() / kept)
    metrics.update(groups=int(has_relevant.sum()), groups_without_relevant=int(num_groups - has_relevant.sum()),
                   examples=len(groups))
    return metrics


def ranking_summary(metrics: dict[str, float]) -> str:
    """:func:`group_ranking_metrics`' headline numbers in one line."""
    return (
        f"ndcg@5 {metrics['ndcg@5']:.4f} | ndcg@10 {metrics['ndcg@10']:.4f} | mrr {metrics['mrr']:.4f} | "
        f"map {metrics['map']:.4f} | {metrics['groups']:,} groups ranked ({metrics['groups_without_relevant']:,} "
        f"without a relevant row left out), {metrics['examples']:,} rows"
    )


class RankingTask(Task):
    """Learning to rank with any model: its logits compared within each group by
    ``train.ranking.loss``; ``ndcg@k``, ``mrr`` and ``map`` per group (see the module docstring).

    Args:
        splits (DataSplits): the run's grouped data.
        settings (RankingConfig): ``train.ranking``.
        batch_size (int): rows per evaluation batch.
        bf16 (bool): evaluate under bfloat16 autocast.
    """

    metric = StoppingMetric.NDCG_AT_10

    def __init__(self, splits: DataSplits, settings: RankingConfig, batch_size: int, bf16: bool) -> None:
        self.splits, self.settings, self.batch_size, self.bf16 = splits, settings, batch_size, bf16

    def batch_loader(self, data: ColumnarData, batch_size: int, **options: Any) -> BatchLoader:
        """Batches of whole groups (:class:`~terarec.data.GroupedBatchLoader`)."""
        return GroupedBatchLoader(data, batch_size, **options)

    def loss(self, network: DenseNetwork, trainable: nn.Module, batch: Batch, pooled: torch.Tensor) -> torch.Tensor:
        assert batch.groups is not None
        scores = trainable(batch.dense, pooled, batch.sparse).float()
        if self.settings.loss is RankingLoss.PAIRWISE_LOGISTIC:
            return pairwise_logistic_loss(scores, batch.labels, batch.groups)
        if self.settings.loss is RankingLoss.SOFTMAX:
            return softmax_loss(scores, batch.labels, batch.groups)
        return approx_ndcg_loss(scores, batch.labels, batch.groups, self.settings.temperature)

    def evaluate(
        self, network: DenseNetwork, collection: EmbeddingCollection, split: str, world: World
    ) -> dict[str, float]:
        data = self.splits.val if split == "val" else self.splits.eval
        assert data is not None and data.groups is not None
        labels, scores = predict(network, collection, data, self.batch_size, self.bf16, world)
        return group_ranking_metrics(labels, scores, np.asarray(data.groups))


def evaluate_ranking_checkpoint(checkpoint: Path, data_path: str | None = None) -> dict[str, float]:
    """The per-group metrics of a saved ranking model on ``data_path`` (read with the run's data
    settings, grouped by its ``data.group_col``), or on the run's own evaluation split."""
    labels, scores, data = predict_checkpoint(checkpoint, data_path)
    assert data.groups is not None
    return group_ranking_metrics(labels, scores, np.asarray(data.groups))
