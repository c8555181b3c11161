"""The training loop, its metrics, checkpoints and configuration."""

from terarec.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from terarec.train.config import (
    Config,
    DenseOptimizerType,
    DensePrecision,
    EmbeddingConfig,
    TableSpec,
    TrainConfig,
    load_config,
)
from terarec.train.evaluate import evaluate, evaluate_checkpoint, predict, predict_checkpoint
from terarec.train.loop import TrainResult, fit
from terarec.train.metrics import (
    ClickMetrics,
    auc,
    calibration,
    compute_metrics,
    log_loss,
    normalized_entropy,
)

__all__ = [
    "ClickMetrics",
    "Config",
    "DenseOptimizerType",
    "DensePrecision",
    "EmbeddingConfig",
    "TableSpec",
    "TrainConfig",
    "TrainResult",
    "TrainerState",
    "auc",
    "calibration",
    "compute_metrics",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "log_loss",
    "normalized_entropy",
    "predict",
    "predict_checkpoint",
    "save_checkpoint",
]
