"""Full-ranking retrieval metrics: every catalogue item is ranked for every query.

A query has targets (the held-out items) and excluded items (those the user is known to have
had, left out of its ranking). The rank of a target is one plus the number of ranked items
that score higher, or equal and come earlier in the catalogue (ties are broken by position,
so a constant scorer gets no credit from ties). Per query:

- ``hit@k``: 1 if some target ranks within ``k``;
- ``recall@k``: the share of its targets ranked within ``k``;
- ``ndcg@k``: :math:`\\sum_{t: r_t \\le k} 1 / \\log_2(r_t + 1)` over the ideal
  :math:`\\sum_{i=1}^{\\min(|T|, k)} 1 / \\log_2(i + 1)`;
- ``mrr``: one over the best target's rank (no cut-off).

Each is the mean over queries. Any scorer plugs in (a two-tower model, a baseline) through a
function that scores a block of queries against the whole catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from terarec.data import JaggedColumn

__all__ = ["DEFAULT_CUTOFFS", "RetrievalMetrics", "full_ranking_metrics", "retrieval_summary"]

DEFAULT_CUTOFFS = (10, 50)
"""The ``k`` of ``recall@k`` reported by default; ``ndcg`` and ``hit`` use the first."""


@dataclass(frozen=True)
class RetrievalMetrics:
    """Full-ranking metrics, each the mean over queries.

    Args:
        recall (dict[int, float]): ``recall@k`` per cut-off.
        ndcg (dict[int, float]): ``ndcg@k`` per cut-off.
        hit (dict[int, float]): ``hit@k`` per cut-off.
        mrr (float): mean reciprocal rank of each query's best target.
        queries (int): queries ranked.
        num_items (int): catalogue size.
    """

    recall: dict[int, float]
    ndcg: dict[int, float]
    hit: dict[int, float]
    mrr: float
    queries: int
    num_items: int

    def to_dict(self) -> dict[str, float]:
        """``recall@10``, ``ndcg@10``, ``hit@10``, ... ``mrr``, and ``examples`` (the queries)."""
        out: dict[str, float] = {}
        for name, values in (("recall", self.recall), ("ndcg", self.ndcg), ("hit", self.hit)):
            out.update({f"{name}@{k}": v for k, v in values.items()})
        return {**out, "mrr": self.mrr, "examples": self.queries, "num_items": self.num_items}


def retrieval_summary(metrics: dict[str, float]) -> str:
    """:meth:`RetrievalMetrics.to_dict`'s headline numbers in one line."""
    return (
        f"recall@10 {metrics['recall@10']:.4f} | recall@50 {metrics['recall@50']:.4f} | ndcg@10 {metrics['ndcg@10']:.4f} | "
        f"mrr {metrics['mrr']:.4f} | hit@10 {metrics['hit@10']:.4f} | {metrics['examples']:,} queries ranked over "
        f"{metrics['num_items']:,} items (full ranking)"
    )


def _target_ranks(scores: torch.Tensor, query_of_target: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The rank of each target among its query's scores (excluded items scored ``-inf``)."""
    target_scores = scores[query_of_target, targets].unsqueeze(1)
    rows = scores[query_of_target]
    positions = torch.arange(scores.shape[1]).unsqueeze(0)
    ahead = (rows > target_scores) | ((rows == target_scores) & (positions < targets.unsqueeze(1)))
    return ahead.sum(dim=1) + 1


def full_ranking_metrics(
    score: Callable[[np.ndarray], torch.Tensor],
    num_queries: int,
    targets: JaggedColumn,
    exclude: JaggedColumn,
    cutoffs: Sequence[int] = DEFAULT_CUTOFFS,
    block: int = 256,
) -> RetrievalMetrics:
    """Ranks the whole catalogue for every query and measures where the targets land.

    Args:
        score (Callable[[np.ndarray], Tensor]): given query indices :math:`(Q_b)`, their scores
            against every item, :math:`(Q_b, N)`; higher ranks first.
        num_queries (int): the queries, ``0 .. num_queries - 1``.
        targets (JaggedColumn): per query, the catalogue positions to find (at least one).
        exclude (JaggedColumn): per query, catalogue positions left out of its ranking.
        cutoffs (Sequence[int], optional): the ``k`` of each ``@k`` metric. Default: ``(10, 50)``
        block (int, optional): queries scored at once. Default: ``256``

    Raises:
        ValueError: when a query has no target, or a target is also excluded.

    Example::

        >>> scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
        >>> targets = JaggedColumn(np.array([2, 0, 3]), np.array([0, 1, 3]))
        >>> exclude = JaggedColumn(np.array([0]), np.array([0, 1, 1]))
        >>> m = full_ranking_metrics(lambda q: scores[q], 2, targets, exclude, cutoffs=(1, 2))
        >>> m.hit, m.recall, m.mrr  # query 0: item 2 ranks 1st (item 0 excluded); query 1: items 3, 0 rank 2nd, 4th
        ({1: 0.5, 2: 1.0}, {1: 0.5, 2: 0.75}, 0.75)
    """
    target_offsets = np.asarray(targets.offsets, np.int64)
    target_counts = np.diff(target_offsets)
    if (target_counts < 1).any():
        raise ValueError(f"query {int(np.flatnonzero(target_counts < 1)[0])} has no target")
    exclude_offsets = np.asarray(exclude.offsets, np.int64)
    recall = {k: 0.0 for k in cutoffs}
    ndcg = {k: 0.0 for k in cutoffs}
    hit = {k: 0.0 for k in cutoffs}
    reciprocal = 0.0
    discounts = 1.0 / np.log2(np.arange(2, max(cutoffs) + 2))
    num_items = 0
    for start in range(0, num_queries, block):
        stop = min(start + block, num_queries)
        scores = score(np.arange(start, stop)).float().clone()
        num_items = scores.shape[1]
        excluded = exclude.values[exclude_offsets[start] : exclude_offsets[stop]]
        excluded_rows = np.repeat(np.arange(stop - start), np.diff(exclude_offsets[start : stop + 1]))
        scores[torch.from_numpy(excluded_rows), torch.from_numpy(np.asarray(excluded, np.int64))] = float("-inf")
        counts = target_counts[start:stop]
        query_of_target = np.repeat(np.arange(stop - start), counts)
        block_targets = np.asarray(targets.values[target_offsets[start] : target_offsets[stop]], np.int64)
        if torch.isinf(scores[query_of_target, block_targets]).any():
            raise ValueError("a target is also an excluded item of its query")
        ranks = _target_ranks(scores, torch.from_numpy(query_of_target), torch.from_numpy(block_targets)).numpy()
        best = np.full(stop - start, np.iinfo(np.int64).max)
        np.minimum.at(best, query_of_target, ranks)
        reciprocal += float((1.0 / best).sum())
        for k in cutoffs:
            within = ranks <= k
            found = np.bincount(query_of_target, weights=within, minlength=stop - start)
            gain = np.bincount(query_of_target, weights=np.where(within, 1.0 / np.log2(ranks + 1.0), 0.0), minlength=stop - start)
            ideal = np.cumsum(discounts[:k])[np.minimum(counts, k) - 1]
            recall[k] += float((found / counts).sum())
            hit[k] += float((found > 0).sum())
            ndcg[k] += float((gain / ideal).sum())
    scale = 1.0 / max(num_queries, 1)
    return RetrievalMetrics(
        recall={k: v * scale for k, v in recall.items()},
        ndcg={k: v * scale for k, v in ndcg.items()},
        hit={k: v * scale for k, v in hit.items()},
        mrr=reciprocal * scale,
        queries=num_queries,
        num_items=num_items,
    )
