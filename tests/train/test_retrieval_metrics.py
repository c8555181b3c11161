"""Full-ranking metrics against examples worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from terarec.data import JaggedColumn
from terarec.train.retrieval_metrics import full_ranking_metrics


def _jagged(bags: list[list[int]]) -> JaggedColumn:
    offsets = np.zeros(len(bags) + 1, np.int64)
    np.cumsum([len(b) for b in bags], out=offsets[1:])
    return JaggedColumn(np.array([v for b in bags for v in b], np.int64), offsets)


def _metrics(scores: list[list[float]], targets: list[list[int]], exclude: list[list[int]], cutoffs=(1, 3), block=256):
    table = torch.tensor(scores)
    return full_ranking_metrics(lambda q: table[torch.from_numpy(q)], len(scores), _jagged(targets), _jagged(exclude), cutoffs, block)


def test_single_targets() -> None:
    # query 0: target 3 ranks 2nd (item 0 is excluded, item 1 scores higher)
    # query 1: target 0 ranks 4th
    metrics = _metrics([[0.9, 0.8, 0.1, 0.5, 0.2], [0.1, 0.9, 0.8, 0.7, 0.0]], [[3], [0]], [[0], []])
    assert metrics.hit == {1: 0.0, 3: 0.5} and metrics.recall == {1: 0.0, 3: 0.5}
    assert metrics.ndcg[3] == pytest.approx((1 / math.log2(3)) / 2)
    assert metrics.mrr == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert metrics.queries == 2 and metrics.num_items == 5


def test_several_targets_share_the_ideal_ranking() -> None:
    # targets 1 and 2 rank 1st and 3rd; ideal DCG@3 with two targets is 1 + 1/log2(3)
    metrics = _metrics([[0.5, 0.9, 0.4, 0.6]], [[1, 2]], [[]])
    assert metrics.recall == {1: 0.5, 3: 0.5} and metrics.hit == {1: 1.0, 3: 1.0}
    dcg = 1.0
    assert metrics.ndcg[3] == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert metrics.mrr == 1.0
    four = _metrics([[0.5, 0.9, 0.4, 0.6]], [[1, 2]], [[]], cutoffs=(4,))
    assert four.recall[4] == 1.0 and four.ndcg[4] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))


def test_ties_rank_by_catalogue_position_so_a_constant_scorer_earns_nothing_from_them() -> None:
    metrics = _metrics([[1.0, 1.0, 1.0, 1.0]], [[2]], [[0]])
    assert metrics.mrr == pytest.approx(1 / 2)  # item 1 comes first, then the target
    assert metrics.hit[1] == 0.0


def test_blocks_do_not_change_the_result() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((37, 50)).tolist()
    targets = [list(rng.choice(50, size=rng.integers(1, 4), replace=False)) for _ in range(37)]
    exclude = [[int(i) for i in rng.choice(50, size=5, replace=False) if i not in t] for t in targets]
    whole = _metrics(scores, targets, exclude, block=256)
    pieces = _metrics(scores, targets, exclude, block=5)
    assert whole.recall == pytest.approx(pieces.recall) and whole.mrr == pytest.approx(pieces.mrr)


def test_bad_queries_are_refused() -> None:
    with pytest.raises(ValueError, match="query 1 has no target"):
        _metrics([[0.1, 0.2], [0.3, 0.4]], [[0], []], [[], []])
    with pytest.raises(ValueError, match="a target is also an excluded item"):
        _metrics([[0.1, 0.2]], [[0]], [[0]])
