"""Schedules as pure functions of the data size and the step: batch size, epochs, learning rate.

The automatic batch size and epoch count make the defaults work from a few thousand rows to
billions: a small file gets small batches and many passes (early stopping ends them once
validation stops improving), a large one large batches and one pass.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from terarec.train.config import LRDecay, TrainConfig

__all__ = ["MAX_AUTO_EPOCHS", "auto_batch_size", "auto_epochs", "lr_scale", "resolve_auto", "set_learning_rate"]

MIN_AUTO_BATCH = 64
MAX_AUTO_BATCH = 2048
ROWS_PER_BATCH_UNIT = 128  # the automatic batch is about rows / this: 50+ steps an epoch below the cap
AUTO_EXAMPLES = 1_000_000  # examples the automatic epoch count aims to show the model
MAX_AUTO_EPOCHS = 50


def auto_batch_size(num_rows: int) -> int:
    """The power of two nearest below ``num_rows / 128``, within ``[64, 2048]``.

    Example::

        >>> auto_batch_size(7_200), auto_batch_size(80_000), auto_batch_size(2_000_000)
        (64, 512, 2048)
    """
    target = max(num_rows // ROWS_PER_BATCH_UNIT, 1)
    return int(min(MAX_AUTO_BATCH, max(MIN_AUTO_BATCH, 1 << (target.bit_length() - 1))))


def auto_epochs(num_rows: int) -> int:
    """Enough passes to show the model about a million examples, within ``[1, 50]``.

    Example::

        >>> auto_epochs(7_200), auto_epochs(80_000), auto_epochs(2_000_000)
        (50, 13, 1)
    """
    return int(min(MAX_AUTO_EPOCHS, max(1, math.ceil(AUTO_EXAMPLES / max(num_rows, 1)))))


def lr_scale(step: int, total_steps: int, warmup_steps: int, decay: LRDecay) -> float:
    """The factor on the dense learning rate at ``step`` (0-based): a linear warm-up over
    ``warmup_steps``, then ``decay`` to zero at ``total_steps``.

    Example::

        >>> [round(lr_scale(s, 10, 2, LRDecay.LINEAR), 3) for s in (0, 1, 2, 6, 9)]
        [0.5, 1.0, 1.0, 0.5, 0.125]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay is LRDecay.NONE or total_steps <= warmup_steps:
        return 1.0
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    if decay is LRDecay.LINEAR:
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_auto(config: TrainConfig, num_rows: int) -> TrainConfig:
    """``config`` with an unset ``batch_size`` and ``epochs`` chosen for ``num_rows`` training rows.

    Example::

        >>> resolved = resolve_auto(TrainConfig(epochs=3), 7_200)
        >>> resolved.batch_size, resolved.epochs
        (64, 3)
    """
    return replace(
        config,
        batch_size=config.batch_size or auto_batch_size(num_rows),
        epochs=config.epochs or auto_epochs(num_rows),
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, settings: TrainConfig, step: int, total_steps: int) -> None:
    """The dense learning rate of ``step``: a pure function of the step, so resume is exact."""
    rate = settings.dense_learning_rate * lr_scale(step, total_steps, settings.warmup_steps, settings.lr_decay)
    for group in optimizer.param_groups:
        group["lr"] = rate
