"""Click-prediction metrics: AUC, log loss, normalized entropy and calibration.

All take NumPy arrays of 0/1 labels and predicted click probabilities, are vectorised, and
are exact (no binning), so two runs with bit-identical predictions report identical metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ClickMetrics", "auc", "calibration", "compute_metrics", "log_loss", "normalized_entropy"]

_PROBABILITY_CLIP = 1e-7


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores must have the same length, got {labels.size} and {scores.size}")
    if labels.size == 0:
        raise ValueError("metrics need at least one example")
    return labels, scores


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, with tied scores counted as half (Mann-Whitney U).

    Returns ``nan`` when only one class is present.

    Example::

        >>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
        >>> auc(np.array([0, 1]), np.array([0.5, 0.5]))
        0.5
    """
    labels, scores = _check(labels, scores)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # Average rank of each run of tied scores, so ties contribute one half.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    average_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(average_rank, ends - starts)
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy, with probabilities clipped to ``[1e-7, 1 - 1e-7]``.

    Example::

        >>> round(log_loss(np.array([1, 0]), np.array([0.5, 0.5])), 4)
        0.6931
    """
    labels, probabilities = _check(labels, probabilities)
    p = np.clip(probabilities, _PROBABILITY_CLIP, 1 - _PROBABILITY_CLIP)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def normalized_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Log loss divided by the entropy of the base click rate (He et al., 2014).

    Below 1 means the model beats always predicting the average click rate.

    Example::

        >>> normalized_entropy(np.array([1, 0, 0, 0]), np.array([0.25, 0.25, 0.25, 0.25]))
        1.0
    """
    labels, probabilities = _check(labels, probabilities)
    rate = float(np.clip(labels.mean(), _PROBABILITY_CLIP, 1 - _PROBABILITY_CLIP))
    base_entropy = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    return float(log_loss(labels, probabilities) / base_entropy)


def calibration(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Predicted clicks over observed clicks; 1 is perfectly calibrated.

    Example::

        >>> calibration(np.array([1, 0, 0, 0]), np.array([0.5, 0.5, 0.5, 0.5]))
        2.0
    """
    labels, probabilities = _check(labels, probabilities)
    observed = labels.sum()
    return float(probabilities.sum() / observed) if observed > 0 else float("nan")


@dataclass(frozen=True)
class ClickMetrics:
    """The metrics of one evaluation."""

    auc: float
    logloss: float
    ne: float
    calibration: float
    examples: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"AUC {self.auc:.4f} | log loss {self.logloss:.4f} | NE {self.ne:.4f} | "
            f"calibration {self.calibration:.3f} | {self.examples:,} examples"
        )


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray) -> ClickMetrics:
    """All of :func:`auc`, :func:`log_loss`, :func:`normalized_entropy`, :func:`calibration` at once."""
    return ClickMetrics(
        auc=auc(labels, probabilities),
        logloss=log_loss(labels, probabilities),
        ne=normalized_entropy(labels, probabilities),
        calibration=calibration(labels, probabilities),
        examples=int(np.asarray(labels).size),
    )
