import math

import numpy as np
import pytest

from terarec.train.metrics import auc, calibration, compute_metrics, log_loss, normalized_entropy


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    positive = scores[labels == 1][:, None]
    negative = scores[labels == 0][None, :]
    return float(((positive > negative) + 0.5 * (positive == negative)).mean())


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 400)
    scores = rng.integers(0, 20, 400) / 20.0  # many ties
    assert auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_auc_extremes_and_single_class() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert math.isnan(auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_log_loss_ne_and_calibration_against_formulas() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000).astype(np.float64)
    probabilities = rng.uniform(0.01, 0.99, 1000)
    expected = -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    assert log_loss(labels, probabilities) == pytest.approx(expected)
    rate = labels.mean()
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    assert normalized_entropy(labels, probabilities) == pytest.approx(expected / entropy)
    assert calibration(labels, probabilities) == pytest.approx(probabilities.sum() / labels.sum())
    # Predicting the base rate everywhere has NE exactly 1.
    assert normalized_entropy(labels, np.full(1000, rate)) == pytest.approx(1.0)


def test_compute_metrics_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        compute_metrics(np.zeros(3), np.zeros(4))
