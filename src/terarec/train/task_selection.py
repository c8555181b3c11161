"""Which task a run learns, from its data: retrieval for an interaction log, else click prediction."""

from __future__ import annotations

from dataclasses import replace

from terarec.data import DataSplits
from terarec.errors import ConfigError
from terarec.models import ModelType
from terarec.train.config import Config, DensePrecision
from terarec.train.distributed import World
from terarec.train.retrieval import RetrievalTask
from terarec.train.tasks import ClickTask, Task

__all__ = ["build_task", "configure_for_data"]


def configure_for_data(config: Config, splits: DataSplits) -> Config:
    """``config`` with what the data decides: the towers' features of a two-tower model trained on
    an interaction log, where the config leaves them empty.

    Raises:
        ConfigError: when the model and the data do not go together (a two-tower model learns
            from an interaction log; an interaction log trains a two-tower model).
    """
    two_tower = config.model.type is ModelType.TWO_TOWER
    if splits.retrieval is None:
        if two_tower:
            raise ConfigError("model.type=two_tower learns from an interaction log: set data.format=interactions")
        return config
    if not two_tower:
        raise ConfigError(
            f"data.format=interactions trains a retrieval model: set model.type=two_tower (got {config.model.type.value!r})"
        )
    towers = config.model.two_tower
    towers = replace(
        towers,
        user_features=towers.user_features or splits.retrieval.user_features,
        item_features=towers.item_features or splits.retrieval.item_features,
    )
    return replace(config, model=replace(config.model, two_tower=towers))


def build_task(config: Config, splits: DataSplits, world: World) -> Task:
    """The task of a run on ``splits``: retrieval for an interaction log, else click prediction."""
    bf16 = config.train.dense_precision is DensePrecision.BF16
    if splits.retrieval is None:
        return ClickTask(splits, config.train.eval_batch_size, bf16)
    return RetrievalTask(splits.retrieval, config.model.two_tower, config.train.eval_batch_size, bf16, world)
