"""Two-tower retrieval end to end on MovieLens-100k: it learns more than popularity, deterministically,
resumes exactly, evaluates and indexes from its checkpoint, and refuses what cannot work."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.cli.main import main
from terarec.data import NegativeSamplingLoader, load_splits
from terarec.errors import ConfigError
from terarec.models import in_batch_softmax_loss
from terarec.serve import ItemIndex, index_run
from terarec.train import fit, load_config
from terarec.train.retrieval_metrics import full_ranking_metrics
from terarec.train.distributed import World
from terarec.train.retrieval import RetrievalTask, evaluate_retrieval_checkpoint
from tests.helpers import CRITEO, SHARED_DATA, assert_bit_identical, checkpoint_weights

ML = SHARED_DATA / "movielens_100k"
RETRIEVAL = {
    "data.path": str(ML / "ml-100k.inter"),
    "data.format": "interactions",
    "model.type": "two_tower",
    "train.num_threads": 2,
    "train.progress": False,
}


def _config(out: Path, **extra: object):
    keys = {**RETRIEVAL, "train.out": str(out), **{k.replace("__", "."): v for k, v in extra.items()}}
    return load_config(overrides=list(keys.items()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two_tower")
    fit(_config(out, train__epochs=4, train__eval_every=0))
    return out


def _metrics(run: Path) -> dict[str, object]:
    return json.loads((run / "metrics.json").read_text())


def test_two_tower_learns_more_than_popularity(trained: Path) -> None:
    metrics = _metrics(trained)
    retrieval = load_splits(_config(trained).data).retrieval
    counts = torch.from_numpy(retrieval.item_counts.astype(np.float32))
    queries = retrieval.eval
    popularity = full_ranking_metrics(lambda q: counts.expand(len(q), -1), queries.num_queries, queries.targets, queries.exclude)
    for key in ("recall@10", "recall@50", "ndcg@10", "mrr", "hit@10"):
        assert key in metrics
    assert metrics["recall@10"] > popularity.recall[10] + 0.03, (metrics["recall@10"], popularity.recall[10])
    assert metrics["ndcg@10"] > popularity.ndcg[10]
    assert metrics["examples"] == queries.num_queries == 940 and metrics["num_items"] == 1678
    assert metrics["data_report"]["eval_queries"] == 940
    assert metrics["config"]["model"]["two_tower"]["item_features"] == ["item_id"]


def test_the_checkpoint_ranks_as_training_did_and_indexes(trained: Path, tmp_path: Path) -> None:
    ranked = evaluate_retrieval_checkpoint(trained)
    assert ranked == {k: _metrics(trained)[k] for k in ranked}
    report = index_run(trained, tmp_path / "index")
    assert report["num_items"] == 1678 and report["recall@10"] > 0.95 and report["queries_per_second"] > 0
    index = ItemIndex.load(tmp_path / "index")
    vectors = np.load(tmp_path / "index" / "vectors.npy")
    catalogue = load_splits(_config(trained).data).retrieval.items.to_pylist()
    assert index.items.tolist() == catalogue and vectors.shape == (1678, 64)
    positions, scores = index.search(vectors[:3], k=1)
    assert positions[:, 0].tolist() == [0, 1, 2]  # each item is its own nearest neighbour
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    saved = json.loads((tmp_path / "index" / "index.json").read_text())
    assert saved["report"]["recall@100"] == report["recall@100"]


@pytest.mark.parametrize("negatives", [0, pytest.param(64, marks=pytest.mark.slow)], ids=["in_batch", "uniform_negatives"])
def test_two_tower_training_is_deterministic_and_resumes_exactly(tmp_path: Path, negatives: int) -> None:
    settings = {"train__steps": 40, "data__val_fraction": 0, "model__two_tower__uniform_negatives": negatives}
    straight = fit(_config(tmp_path / "a", **settings))
    again = fit(_config(tmp_path / "b", **settings))
    assert_bit_identical(checkpoint_weights(straight.checkpoint), checkpoint_weights(again.checkpoint))
    fit(_config(tmp_path / "c", **{**settings, "train__steps": 20}))
    resumed = fit(_config(tmp_path / "c", **settings, train__resume=True))
    assert_bit_identical(checkpoint_weights(straight.checkpoint), checkpoint_weights(resumed.checkpoint))
    assert resumed.metrics["recall@10"] == straight.metrics["recall@10"]
    assert straight.metrics["train_examples"] == 40 * straight.metrics["batch_size"]  # sampled rows are not examples


def test_uniform_negatives_join_the_softmax_with_the_mixed_log_q(tmp_path: Path) -> None:
    config = _config(tmp_path, model__two_tower__uniform_negatives=5)
    splits = load_splits(config.data)
    retrieval = splits.retrieval
    task = RetrievalTask(retrieval, config.model.two_tower, 64, False, World())
    loader = task.batch_loader(splits.train, 8, seed=0, prefetch=0)
    assert isinstance(loader, NegativeSamplingLoader) and task.sampled_rows == 5
    batch = next(iter(loader.iterate(0)))
    ids = batch.sparse["item_id"].values
    assert batch.batch_size == 13 and batch.labels.tolist() == [1.0] * 8 + [0.0] * 5
    catalogue = np.asarray(retrieval.catalogue.sparse["item_id"].values)
    share = {int(i): c / retrieval.item_counts.sum() for i, c in zip(catalogue, retrieval.item_counts)}
    by_hand = [math.log(8 * share[int(i)] + 5 / len(catalogue)) for i in ids]
    assert task.log_q(ids.numpy(), 8, 5).tolist() == pytest.approx(by_hand, rel=1e-6)
    assert task.log_q(ids.numpy()).tolist() == pytest.approx([math.log(share[int(i)]) for i in ids], rel=1e-6)

    generator = torch.Generator().manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(13, 4, generator=generator), dim=1)
    items = torch.nn.functional.normalize(torch.randn(13, 4, generator=generator), dim=1)

    class Towers(torch.nn.Module):
        def forward(self, dense, pooled, sparse, towers):  # type: ignore[no-untyped-def]
            return users, items

    loss = task.loss(None, Towers(), batch, torch.empty(0))  # type: ignore[arg-type]
    expected = in_batch_softmax_loss(users[:8], items, ids, 0.2, task.log_q(ids.numpy(), 8, 5))
    assert torch.equal(loss, expected)
    with pytest.raises(ValueError, match="not in the catalogue"):
        task.log_q(np.array([12345], np.int64), 8, 5)


def test_model_and_data_must_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="model.type=two_tower learns from an interaction log"):
        fit(load_config(overrides=[("data.path", str(CRITEO / "train.tsv")), ("model.type", "two_tower"),
                                   ("train.out", str(tmp_path / "x"))]))
    with pytest.raises(ConfigError, match="data.format=interactions trains a retrieval model: set model.type=two_tower"):
        fit(_config(tmp_path / "y", model__type="dcnv2"))
    assert main(["prepare", "--data", str(ML / "ml-100k.inter"), "--out", str(tmp_path / "p")]) == 2
    assert "an interaction log becomes retrieval examples" in capsys.readouterr().err


def test_command_line_trains_evaluates_and_indexes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code = main(["train", "--data", str(ML / "ml-100k.inter"), "--model", "two_tower", "--steps", "30",
                 "--item-features", str(ML / "ml-100k.item"), "--out", str(run), "--no-progress", "--threads", "2"])
    output = capsys.readouterr().out
    assert code == 0
    assert "interactions: events 100,000" in output and "rows without item features 0" in output
    assert "eval: recall@10 " in output and "queries ranked over 1,678 items (full ranking)" in output
    assert main(["eval", "--checkpoint", str(run), "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["recall@10"] == _metrics(run)["recall@10"]
    assert main(["index", str(run)]) == 0
    assert "indexed 1,678 items x 64 (ivf" in capsys.readouterr().out
    assert (run / "index" / "index.faiss").is_file()
    assert main(["eval", "--checkpoint", str(run), "--data", str(ML / "ml-100k.inter")]) == 2
    assert "data flags do not apply" in capsys.readouterr().err
    assert main(["report", str(run)]) == 0  # learning curves; no calibration plot for retrieval scores
    assert sorted(p.name for p in (run / "report").iterdir()) == ["curves.png"]


@pytest.mark.slow
def test_two_ranks_gather_negatives_across_ranks(tmp_path: Path) -> None:
    config = tmp_path / "two.yaml"
    # Sampled negatives too: each rank's positives sit after the other ranks' events and samples.
    config.write_text(_config(tmp_path / "two", train__epochs=3, model__two_tower__uniform_negatives=32).to_yaml())
    command = [sys.executable, "-m", "terarec", "train", "--config", str(config), "--nproc-per-node", "2"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stdout + process.stderr
    metrics = _metrics(tmp_path / "two")
    assert metrics["world_size"] == 2 and metrics["recall@10"] > 0.11
    ranked = evaluate_retrieval_checkpoint(tmp_path / "two")
    assert ranked["recall@10"] == pytest.approx(metrics["recall@10"], abs=1e-6)


def test_plan_sizes_a_two_tower_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "two_tower.yaml"
    config.write_text(_config(tmp_path / "run").to_yaml())
    assert main(["plan", "--config", str(config)]) == 0
    assert "predicted step" in capsys.readouterr().out
