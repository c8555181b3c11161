"""Validation-driven training: the split, early stopping, the best model kept and restored,
automatic batch size and epochs, regularisation and the learning-rate schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from terarec.cli import main
from terarec.train import fit
from terarec.train.builders import build_dense_optimizer
from terarec.train.checkpoint import TrainerState, best_checkpoint, checkpoint_step, resolve_checkpoint
from terarec.train.config import EarlyStoppingConfig, LRDecay, StoppingMetric, TrainConfig
from terarec.train.schedule import auto_batch_size, auto_epochs, set_learning_rate
from terarec.train.validation import record_validation, should_stop
from tests.helpers import CRITEO, assert_bit_identical, checkpoint_weights, tiny_config

CRITEO_DATA = [
    "--data", str(CRITEO / "train.tsv"),
    "--eval-data", f"{CRITEO / 'dev.tsv'},{CRITEO / 'test.tsv'}",
    "--format", "criteo", "--threads", "2", "--no-progress",
]  # fmt: skip


def _validations(values: list[float], metric: StoppingMetric, patience: int = 2) -> TrainerState:
    settings = TrainConfig(early_stopping=EarlyStoppingConfig(metric=metric, patience=patience))
    state = TrainerState()
    for step, value in enumerate(values, start=1):
        state, _ = record_validation(TrainerState(**{**state.__dict__, "step": step * 10}), {metric.value: value}, settings, metric)
    return state


def test_the_best_validation_is_kept_and_patience_counts_rounds_since() -> None:
    state = _validations([0.70, 0.72, 0.71, 0.715], StoppingMetric.AUC)
    assert (state.best_step, state.best_value, state.stale_validations) == (20, 0.72, 2)
    assert [v["step"] for v in state.validations] == [10, 20, 30, 40]
    assert should_stop(state, TrainConfig()) and not should_stop(state, TrainConfig(early_stopping=EarlyStoppingConfig(patience=3)))
    loss = _validations([0.50, 0.48, 0.49], StoppingMetric.LOG_LOSS)  # lower is better
    assert (loss.best_step, loss.stale_validations) == (20, 1)
    assert not should_stop(state, TrainConfig(early_stopping=EarlyStoppingConfig(patience=0)))


def test_automatic_batch_size_and_epochs_follow_the_row_count() -> None:
    sizes = [auto_batch_size(rows) for rows in (100, 7_000, 100_000, 10**9)]
    assert sizes == sorted(sizes) and sizes[0] == 64 and sizes[-1] == 2048
    assert all(s & (s - 1) == 0 for s in sizes)  # powers of two
    epochs = [auto_epochs(rows) for rows in (100, 7_000, 100_000, 10**9)]
    assert epochs == sorted(epochs, reverse=True) and epochs[-1] == 1
    assert auto_epochs(100_000) * 100_000 >= 1_000_000  # enough passes to see a million examples


def test_learning_rate_warms_up_and_decays_along_the_schedule() -> None:
    settings = TrainConfig(dense_learning_rate=0.1, warmup_steps=2, lr_decay=LRDecay.COSINE)
    optimizer = build_dense_optimizer(settings, [torch.nn.Parameter(torch.zeros(1))])
    rates = []
    for step in range(6):
        set_learning_rate(optimizer, settings, step, 6)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[:3] == pytest.approx([0.05, 0.1, 0.1])
    assert rates[2] > rates[3] > rates[4] > rates[5] > 0


def test_weight_decay_reaches_the_dense_optimizer() -> None:
    optimizer = build_dense_optimizer(TrainConfig(weight_decay=0.01), [torch.nn.Parameter(torch.zeros(1))])
    assert optimizer.param_groups[0]["weight_decay"] == 0.01


def test_criteo_defaults_stop_early_restore_the_best_and_beat_logistic_regression(tmp_path: Path, capsys) -> None:
    assert main(["train", *CRITEO_DATA, "--out", str(tmp_path / "default")]) == 0
    printed = capsys.readouterr().out
    assert "batch size 64" in printed and "chosen from the row count" in printed and "stops early" in printed
    metrics = json.loads((tmp_path / "default" / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["val_rows"] == 720 and metrics["train_rows"] == 6480
    aucs = {v["step"]: v["auc"] for v in metrics["validation"]}
    assert metrics["model_step"] == max(aucs, key=aucs.get) < metrics["steps"]
    assert metrics["best_validation_auc"] == max(aucs.values())
    assert checkpoint_step(resolve_checkpoint(tmp_path / "default")) == metrics["model_step"]
    # `terarec eval` of the run scores the best model, as training's final evaluation did
    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "default"), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["auc"] == metrics["auc"]
    # the built-in baseline on the same split
    assert main(["train", *CRITEO_DATA, "--model", "lr", "--out", str(tmp_path / "lr")]) == 0
    baseline = json.loads((tmp_path / "lr" / "metrics.json").read_text())
    assert metrics["auc"] > baseline["auc"] + 0.01, (metrics["auc"], baseline["auc"])


@pytest.mark.parametrize("model", ["lr", "dnn", "dlrm", "dcnv2", "deepfm", "wide_deep", "xdeepfm", "finalmlp"])
def test_every_model_trains_from_the_command_line(model: str, tmp_path: Path) -> None:
    assert main(["train", *CRITEO_DATA, "--model", model, "--epochs", "1", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["model"]["type"] == model and metrics["steps"] == 102
    assert metrics["auc"] > 0.66, metrics["auc"]  # one pass; chance is 0.5, the defaults reach 0.73


def test_resume_continues_validation_and_early_stopping_exactly(tmp_path: Path) -> None:
    common = {"data__val_fraction": 0.1, "train__eval_every": 10, "train__checkpoint_every": 20, "train__steps": 60}
    straight = fit(tiny_config(tmp_path / "straight", **common))
    fit(tiny_config(tmp_path / "resumed", **{**common, "train__steps": 20}))
    resumed = fit(tiny_config(tmp_path / "resumed", **common, train__resume=True))
    assert resumed.metrics["validation"] == straight.metrics["validation"]
    assert resumed.metrics["model_step"] == straight.metrics["model_step"]
    assert_bit_identical(checkpoint_weights(straight.checkpoint), checkpoint_weights(resumed.checkpoint))


def test_a_fresh_run_replaces_an_earlier_runs_checkpoints(tmp_path: Path) -> None:
    fit(tiny_config(tmp_path, train__steps=30, data__val_fraction=0.1, train__eval_every=10))
    again = fit(tiny_config(tmp_path, train__steps=10, data__val_fraction=0.1))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best", "step-000000010"] and best_checkpoint(tmp_path) == again.checkpoint


def test_embedding_l2_shrinks_the_rows_a_batch_touches(tmp_path: Path) -> None:
    def table_norm(out: Path, l2: float) -> float:
        result = fit(tiny_config(out, train__steps=30, train__embedding_l2=l2))
        weights = checkpoint_weights(result.checkpoint)
        return sum(float((w.astype("float64") ** 2).sum()) for k, w in weights.items() if k.endswith("weights.npy"))

    assert table_norm(tmp_path / "l2", 1.0) < 0.9 * table_norm(tmp_path / "plain", 0.0)


def test_report_plots_the_curves_and_the_calibration_of_the_best_model(tmp_path: Path, capsys) -> None:
    fit(tiny_config(tmp_path / "run", train__steps=40, data__val_fraction=0.1, train__eval_every=10, train__log_every=5))
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "plots")]) == 0
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert written == ["calibration.png", "curves.png"]
    assert all((tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in written)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [step for step, _ in metrics["train_loss"]] == list(range(5, 41, 5))


def test_reliability_bins_against_a_hand_count() -> None:
    import numpy as np

    from terarec.train.report import reliability_bins

    labels = np.array([0, 0, 1, 1, 1, 0], dtype=np.float32)
    scores = np.array([0.05, 0.12, 0.18, 0.55, 0.58, 0.99], dtype=np.float32)
    bins = reliability_bins(labels, scores, num_bins=5)  # edges 0, .2, .4, .6, .8, 1
    assert [(b.low, b.count) for b in bins] == [(0.0, 3), (0.4, 2), (0.8, 1)]
    assert bins[0].click_rate == pytest.approx(1 / 3) and bins[1].click_rate == 1.0 and bins[2].click_rate == 0.0
    assert bins[0].mean_prediction == pytest.approx((0.05 + 0.12 + 0.18) / 3)
