import json
from pathlib import Path

import pytest

from terarec.errors import ConfigError, PlanError
from terarec.train import fit

from tests.helpers import assert_bit_identical, checkpoint_weights, tiny_config


def test_same_seed_gives_bit_identical_weights_and_metrics(tmp_path: Path) -> None:
    first = fit(tiny_config(tmp_path / "a", train__steps=30))
    second = fit(tiny_config(tmp_path / "b", train__steps=30))
    assert_bit_identical(checkpoint_weights(first.checkpoint), checkpoint_weights(second.checkpoint))
    for key in ("auc", "logloss", "ne", "calibration"):
        assert first.metrics[key] == second.metrics[key]


def test_another_seed_gives_other_weights(tmp_path: Path) -> None:
    first = fit(tiny_config(tmp_path / "a", train__steps=5))
    second = fit(tiny_config(tmp_path / "b", train__steps=5, train__seed=1))
    with pytest.raises(AssertionError):
        assert_bit_identical(checkpoint_weights(first.checkpoint), checkpoint_weights(second.checkpoint))


def test_resume_continues_exactly(tmp_path: Path) -> None:
    # 47 batches per epoch at 12k examples / 256, so 60 steps cross an epoch boundary after resume.
    straight = fit(tiny_config(tmp_path / "straight", train__steps=60))
    fit(tiny_config(tmp_path / "resumed", train__steps=30))
    resumed = fit(tiny_config(tmp_path / "resumed", train__steps=60, train__resume=True))
    assert resumed.metrics["steps"] == 60
    assert_bit_identical(checkpoint_weights(straight.checkpoint), checkpoint_weights(resumed.checkpoint))
    assert resumed.metrics["auc"] == straight.metrics["auc"]


def test_metrics_json_has_the_promised_keys(tmp_path: Path) -> None:
    result = fit(tiny_config(tmp_path, train__steps=40))
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("auc", "logloss", "ne", "calibration", "examples_per_second", "train_examples", "eval_examples", "config"):
        assert key in written
    assert written["train_examples"] == 40 * 256
    assert written["eval_examples"] == 3_000
    assert written["config"]["train"]["batch_size"] == 256
    assert 0.5 < written["auc"] <= written["ground_truth_auc"] + 0.02
    assert written == json.loads(json.dumps(result.metrics))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*")), "tensorboard is a test extra: events expected"


def test_learns_the_synthetic_signal(tmp_path: Path) -> None:
    # One pass: click models overfit from the second epoch on (the "one-epoch phenomenon").
    result = fit(tiny_config(tmp_path, data__synthetic__num_examples=40_000))
    assert result.metrics["auc"] > 0.65
    assert result.metrics["ne"] < 1.0


def test_refuses_tables_that_do_not_fit(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, embedding__min_rows=10**11, embedding__max_rows=10**11)
    with pytest.raises(PlanError) as error:
        fit(config)
    assert "C1" in str(error.value)


def test_resume_without_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint"):
        fit(tiny_config(tmp_path, train__steps=2, train__resume=True))


def test_bf16_dense_network_is_deterministic_and_learns(tmp_path: Path) -> None:
    first = fit(tiny_config(tmp_path / "a", data__synthetic__num_examples=40_000, train__dense_precision="bf16"))
    second = fit(tiny_config(tmp_path / "b", data__synthetic__num_examples=40_000, train__dense_precision="bf16"))
    assert_bit_identical(checkpoint_weights(first.checkpoint), checkpoint_weights(second.checkpoint))
    assert first.metrics["auc"] > 0.65
