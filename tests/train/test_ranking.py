"""Learning to rank: losses against plain PyTorch written out group by group, metrics against hand
computation, grouped batches and splits, and a model trained with each loss on MovieLens-100k."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.cli.main import main
from terarec.data import ColumnarData, DataConfig, DataFormat, GroupedBatchLoader, JaggedColumn, Schema, load_splits
from terarec.errors import ConfigError, DataError
from terarec.train import fit, load_config
from terarec.train.ranking import approx_ndcg_loss, group_ranking_metrics, pairwise_logistic_loss, softmax_loss
from tests.helpers import SHARED_DATA

ML = SHARED_DATA / "movielens_100k" / "ml-100k.inter"


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    labels = torch.tensor([2.0, 0.0, 1.0, 0.0, 0.0, 3.0, 1.0, 1.0, 0.0, 4.0])
    return torch.randn(10, generator=generator), labels, groups


def _by_group(groups: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(groups == g).flatten().tolist() for g in range(int(groups.max()) + 1)]


def test_pairwise_logistic_matches_the_reference() -> None:
    scores, labels, groups = _batch()
    terms = [math.log1p(math.exp(-(float(scores[i]) - float(scores[j]))))
             for rows in _by_group(groups) for i in rows for j in rows if labels[i] > labels[j]]
    assert float(pairwise_logistic_loss(scores, labels, groups)) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_softmax_matches_the_reference() -> None:
    scores, labels, groups = _batch(1)
    losses = []
    for rows in _by_group(groups):
        total = float(labels[rows].sum())
        if total == 0:
            continue  # a group with no relevant row teaches nothing
        log_norm = math.log(sum(math.exp(float(scores[i])) for i in rows))
        losses.append(-sum(float(labels[i]) / total * (float(scores[i]) - log_norm) for i in rows))
    assert float(softmax_loss(scores, labels, groups)) == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_approx_ndcg_matches_the_reference_and_tends_to_ndcg() -> None:
    scores, labels, groups = _batch(2)
    temperature = 0.5
    losses = []
    for rows in _by_group(groups):
        gains = [2.0 ** float(labels[i]) - 1 for i in rows]
        ideal = sum(g / math.log2(2 + k) for k, g in enumerate(sorted(gains, reverse=True)))
        if ideal == 0:
            continue
        dcg = 0.0
        for i, gain in zip(rows, gains):
            rank = 1 + sum(1 / (1 + math.exp(-(float(scores[j]) - float(scores[i])) / temperature)) for j in rows if j != i)
            dcg += gain / math.log2(1 + rank)
        losses.append(1 - dcg / ideal)
    assert float(approx_ndcg_loss(scores, labels, groups, temperature)) == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    # With a small temperature the smooth ranks become the true ones: 1 - loss is NDCG.
    sharp = 1 - float(approx_ndcg_loss(scores, labels, groups, 1e-4))
    exact = group_ranking_metrics(labels.numpy(), scores.numpy(), groups.numpy(), cutoffs=(10,))["ndcg@10"]
    assert sharp == pytest.approx(exact, abs=1e-4)


@pytest.mark.parametrize("loss", [pairwise_logistic_loss, softmax_loss, approx_ndcg_loss])
def test_losses_have_gradients_and_ignore_other_groups(loss) -> None:
    scores, labels, groups = _batch(3)
    scores.requires_grad_(True)
    loss(scores, labels, groups).backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    assert scores.grad[3:5].abs().sum() == 0  # group 1 has no relevant row
    shifted = scores.detach().clone()
    shifted[5:9] += 7.0  # a constant per group changes no within-group comparison
    assert float(loss(shifted, labels, groups)) == pytest.approx(float(loss(scores.detach(), labels, groups)), rel=1e-5)


def test_metrics_by_hand() -> None:
    # group a: grades [3, 0, 1] scored [0.2, 0.9, 0.5] -> order: row1 (0), row2 (1), row0 (3)
    # group b: grades [0, 0] -> no relevant row: left out and counted
    labels = np.array([3.0, 0.0, 1.0, 0.0, 0.0])
    scores = np.array([0.2, 0.9, 0.5, 0.1, 0.3])
    metrics = group_ranking_metrics(labels, scores, np.array([5, 5, 5, 9, 9]), cutoffs=(2, 3))
    dcg3 = 0 + 1 / math.log2(3) + 7 / math.log2(4)
    ideal3 = 7 + 1 / math.log2(3)
    assert metrics["ndcg@3"] == pytest.approx(dcg3 / ideal3)
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3)) / ideal3)
    assert metrics["mrr"] == pytest.approx(1 / 2)
    assert metrics["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert (metrics["groups"], metrics["groups_without_relevant"], metrics["examples"]) == (1, 1, 5)


def _grouped(groups: list[int]) -> ColumnarData:
    n = len(groups)
    return ColumnarData(Schema("y", (), ("item",)), np.arange(n, dtype=np.float32), np.zeros((n, 0), np.float32),
                        {"item": JaggedColumn(np.arange(n), np.arange(n + 1))}, source="g", groups=np.array(groups))


def test_grouped_batches_hold_whole_groups() -> None:
    data = _grouped([1, 1, 2, 2, 2, 3, 4, 4])
    loader = GroupedBatchLoader(data, batch_size=4, seed=1)
    assert loader.num_batches == 3  # [1 1] [2 2 2 3] [4 4]... packed greedily: [1 1], [2 2 2 3], [4 4]
    seen = []
    for batch in loader.iterate(epoch=0):
        rows = batch.labels.long().tolist()
        seen.extend(rows)
        groups = data.groups[rows]
        assert batch.groups.tolist() == list(np.cumsum(np.r_[0, groups[1:] != groups[:-1]]))
    assert sorted(seen) == list(range(8))
    assert [b.labels.tolist() for b in loader.iterate(epoch=0)] == [b.labels.tolist() for b in loader.iterate(epoch=0)]
    with pytest.raises(DataError, match="the group starting at row 3 has 3 rows, more than a batch of 2"):
        GroupedBatchLoader(data, batch_size=2)


def _ranking_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ranked.csv"
    path.write_text("query,doc,grade\nq1,a,2\nq2,b,0\nq1,c,0\nq3,a,1\nq2,d,3\nq3,e,0\nq4,a,4\nq4,b,0\n")
    return path


def test_grouped_csv_splits_between_groups(tmp_path: Path) -> None:
    config = DataConfig(path=str(_ranking_csv(tmp_path)), format=DataFormat.CSV, label="grade", group_col="query",
                        eval_fraction=0.25, val_fraction=0.3)
    splits = load_splits(config)
    assert splits.train.schema.sparse_features == ("doc",)
    # rows regrouped: q1 q1 q2 q2 q3 q3 q4 q4; the tail cut moves to a group start
    assert splits.eval.num_rows == 2 and splits.val.num_rows == 2 and splits.train.num_rows == 4
    assert splits.train.labels.tolist() == [2.0, 0.0, 0.0, 3.0]
    with pytest.raises(DataError, match="expected a relevance grade >= 0"):
        (tmp_path / "bad.csv").write_text("query,doc,grade\nq1,a,-1\n")
        load_splits(DataConfig(path=str(tmp_path / "bad.csv"), format=DataFormat.CSV, label="grade", group_col="query"))
    with pytest.raises(ConfigError, match="data.group_col 'grade' is also the label"):
        DataConfig(label="grade", group_col="grade")


def _movielens_ranking(out: Path, **extra: object):
    keys = {"data.path": str(ML), "data.format": "csv", "data.delimiter": "\t", "data.label": "rating:float",
            "data.group_col": "user_id:token", "data.ignore": ["timestamp:float"], "model.type": "dnn",
            "train.batch_size": 1024, "train.out": str(out), "train.progress": False, "train.num_threads": 2,
            **{k.replace("__", "."): v for k, v in extra.items()}}
    return load_config(overrides=list(keys.items()))


@pytest.mark.parametrize("loss", ["softmax", "pairwise_logistic", "approx_ndcg"])
def test_each_loss_ranks_movielens_ratings_better_than_file_order(tmp_path: Path, loss: str) -> None:
    config = _movielens_ranking(tmp_path, train__ranking__loss=loss, train__epochs=2)
    metrics = fit(config).metrics
    splits = load_splits(config.data)
    unranked = group_ranking_metrics(splits.eval.labels, np.zeros(splits.eval.num_rows), splits.eval.groups)
    assert metrics["groups"] == unranked["groups"] > 80 and metrics["examples"] == splits.eval.num_rows
    assert metrics["ndcg@10"] > unranked["ndcg@10"] + 0.02, (metrics["ndcg@10"], unranked["ndcg@10"])
    assert metrics["validation"] and "ndcg@10" in metrics["validation"][0]


def test_the_task_must_fit_the_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.task=ranking needs data.group_col"):
        fit(load_config(overrides=[("data.synthetic.num_examples", 1000), ("data.synthetic.num_eval_examples", 100),
                                   ("train.task", "ranking"), ("train.out", str(tmp_path / "x"))]))


def test_command_line_trains_and_evaluates_a_ranking_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code = main(["train", "--data", str(ML), "--format", "csv", "--delimiter", "\t", "--label", "rating:float",
                 "--group-col", "user_id:token", "--ignore", "timestamp:float", "--model", "dnn", "--task", "ranking",
                 "--ranking-loss", "pairwise_logistic", "--steps", "20", "--batch-size", "1024", "--out", str(run),
                 "--no-progress", "--threads", "2"])
    assert code == 0
    assert "eval: ndcg@5 " in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run), "--json", str(tmp_path / "m.json")]) == 0
    trained = json.loads((run / "metrics.json").read_text())
    assert json.loads((tmp_path / "m.json").read_text())["ndcg@10"] == pytest.approx(trained["ndcg@10"], abs=1e-9)
    assert main(["report", str(run)]) == 0
    assert sorted(p.name for p in (run / "report").iterdir()) == ["curves.png"]
