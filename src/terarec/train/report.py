"""``terarec report``: PNG plots of a run: its learning curves and its calibration.

The curves come from ``OUT/metrics.json`` (the training loss at every report, the validation
metrics at every validation); the calibration (reliability) plot rescores the run's evaluation
split with its best checkpoint. Plotting needs matplotlib (``pip install 'terarec[plot]'``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terarec.errors import ConfigError, DataError
from terarec.train.evaluate import predict_checkpoint

__all__ = ["ReliabilityBin", "reliability_bins", "write_report"]


@dataclass(frozen=True)
class ReliabilityBin:
    """Examples whose predicted probability fell in one bin.

    Args:
        low (float): the bin's lower edge.
        high (float): its upper edge.
        count (int): examples in it.
        mean_prediction (float): their mean predicted probability.
        click_rate (float): the fraction of them that were clicks.
    """

    low: float
    high: float
    count: int
    mean_prediction: float
    click_rate: float


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, num_bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width bins of the predicted probability (empty bins left out): a calibrated model's
    click rate equals its mean prediction in every bin.

    Example::

        >>> bins = reliability_bins(np.array([0, 1, 1, 0]), np.array([0.05, 0.15, 0.85, 0.95]), num_bins=2)
        >>> [(b.count, round(b.mean_prediction, 2), b.click_rate) for b in bins]
        [(2, 0.1, 0.5), (2, 0.9, 0.5)]
    """
    if labels.shape != probabilities.shape or labels.ndim != 1:
        raise ValueError(f"labels and probabilities must be (R,) alike, got {labels.shape} and {probabilities.shape}")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.searchsorted(edges, probabilities, side="right") - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    predicted = np.bincount(index, weights=probabilities.astype(np.float64), minlength=num_bins)
    clicks = np.bincount(index, weights=labels.astype(np.float64), minlength=num_bins)
    return [
        ReliabilityBin(
            low=float(edges[b]),
            high=float(edges[b + 1]),
            count=int(counts[b]),
            mean_prediction=float(predicted[b] / counts[b]),
            click_rate=float(clicks[b] / counts[b]),
        )
        for b in range(num_bins)
        if counts[b]
    ]


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        from matplotlib import pyplot
    except ImportError:
        raise ConfigError("terarec report draws with matplotlib: pip install 'terarec[plot]'") from None
    return pyplot


def _save(figure, path: Path, pyplot) -> Path:  # type: ignore[no-untyped-def]
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def _curves(metrics: dict[str, object], out: Path, pyplot) -> Path:  # type: ignore[no-untyped-def]
    loss = np.array(metrics.get("train_loss") or [], dtype=np.float64).reshape(-1, 2)
    validation = metrics.get("validation") or []
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4))
    clicks = "auc" in metrics
    left.plot(loss[:, 0], loss[:, 1], label="training loss")
    left.set(xlabel="step", ylabel="binary cross-entropy" if clicks else "ranking loss", title="training loss")
    # Click prediction: validation log loss beside the training loss, AUC on the right; retrieval
    # and learning to rank: their ranking metrics.
    shown = ["auc"] if clicks else [name for name in ("ndcg@10", "recall@10") if name in metrics]
    if validation:
        steps = [v["step"] for v in validation]
        if clicks:
            left.plot(steps, [v["logloss"] for v in validation], "o-", label="validation log loss")
        for name in shown:
            right.plot(steps, [v[name] for v in validation], "o-", label=f"validation {name}")
        right.axvline(metrics["model_step"], linestyle="--", color="grey", label=f"best: step {metrics['model_step']}")
        right.legend()
    right.set(xlabel="step", ylabel=" / ".join(shown), title="validation" if validation else "no validation split")
    left.legend()
    return _save(figure, out / "curves.png", pyplot)


def _calibration(run_dir: Path, out: Path, pyplot) -> Path:  # type: ignore[no-untyped-def]
    labels, probabilities, _ = predict_checkpoint(run_dir)
    bins = reliability_bins(labels, probabilities)
    figure, axis = pyplot.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axis.plot([b.mean_prediction for b in bins], [b.click_rate for b in bins], "o-", label="model")
    for b in bins:
        # how many examples stand behind each point: the sparse high bins are noisy
        point = (b.mean_prediction, b.click_rate)
        axis.annotate(str(b.count), point, fontsize=7, xytext=(3, -9), textcoords="offset points")
    axis.set(xlabel="mean predicted click probability", ylabel="observed click rate", xlim=(0, 1), ylim=(0, 1),
             title=f"calibration on {labels.size:,} evaluation examples")
    axis.legend()
    return _save(figure, out / "calibration.png", pyplot)


def write_report(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Writes ``curves.png`` (training loss, validation log loss and AUC over steps, or a retrieval
    or ranking run's validation NDCG@10 (and recall@10); the best step marked) and, for click prediction,
    ``calibration.png`` (reliability of the best model on the run's evaluation data) into ``out``
    (default ``RUN/report``) and returns their paths.

    Raises:
        DataError: when ``run_dir`` holds no ``metrics.json`` or no checkpoint.
        ConfigError: when matplotlib is not installed.
    """
    run_dir = Path(run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except FileNotFoundError:
        raise DataError(f"{run_dir}: no metrics.json here (expected the --out directory of a finished run)") from None
    pyplot = _pyplot()
    out = Path(out) if out is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots = [_curves(metrics, out, pyplot)]
    if "auc" in metrics:  # click probabilities; retrieval and ranking scores are not probabilities
        plots.append(_calibration(run_dir, out, pyplot))
    return plots
