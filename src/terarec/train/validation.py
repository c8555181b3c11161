"""Validation rounds: which one is the best so far, and when training should stop."""

from __future__ import annotations

from dataclasses import replace

from terarec.train.checkpoint import TrainerState
from terarec.train.config import StoppingMetric, TrainConfig

__all__ = ["record_validation", "should_stop"]


def record_validation(
    state: TrainerState, metrics: dict[str, float], settings: TrainConfig, metric: StoppingMetric
) -> tuple[TrainerState, bool]:
    """The state after a validation at ``state.step`` measured by ``metric``, and whether it is the best so far."""
    stopping = settings.early_stopping
    value = float(metrics[metric.value])
    sign = 1.0 if metric.higher_is_better else -1.0
    improved = state.best_value is None or sign * (value - state.best_value) > stopping.min_delta
    history = (*state.validations, {"step": state.step, **metrics})
    if improved:
        return replace(state, best_step=state.step, best_value=value, stale_validations=0, validations=history), True
    return replace(state, stale_validations=state.stale_validations + 1, validations=history), False


def should_stop(state: TrainerState, settings: TrainConfig) -> bool:
    """Whether validation has stopped improving for ``train.early_stopping.patience`` rounds."""
    patience = settings.early_stopping.patience
    return patience > 0 and state.stale_validations >= patience
