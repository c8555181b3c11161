"""Which task a run learns, from its data: retrieval for an interaction log, learning to rank for
grouped rows, else click prediction (``train.task`` may name it; it must agree)."""

from __future__ import annotations

from dataclasses import replace

from terarec.data import DataSplits
from terarec.errors import ConfigError
from terarec.models import ModelType
from terarec.train.config import Config, DensePrecision, TaskType
from terarec.train.distributed import World
from terarec.train.ranking import RankingTask
from terarec.train.retrieval import RetrievalTask
from terarec.train.tasks import ClickTask, Task

__all__ = ["build_task", "configure_for_data", "task_of"]


def task_of(config: Config, splits: DataSplits) -> TaskType:
    """The task ``splits`` call for.

    Raises:
        ConfigError: when ``train.task`` names another.
    """
    if splits.retrieval is not None:
        task = TaskType.RETRIEVAL
    elif splits.train.groups is not None:
        task = TaskType.RANKING
    else:
        task = TaskType.CLICK
    wanted = config.train.task
    if wanted is not None and wanted is not task:
        needs = {TaskType.RETRIEVAL: "data.format=interactions", TaskType.RANKING: "data.group_col (--group-col)",
                 TaskType.CLICK: "labels 0/1 without data.group_col"}
        raise ConfigError(f"train.task={wanted.value} needs {needs[wanted]}; this data is for {task.value}")
    return task


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
    """The task of a run on ``splits`` (:func:`task_of`).

    Raises:
        ConfigError: for learning to rank on several ranks (a batch holds whole groups on one process).
    """
    bf16 = config.train.dense_precision is DensePrecision.BF16
    task = task_of(config, splits)
    if task is TaskType.RETRIEVAL:
        assert splits.retrieval is not None
        return RetrievalTask(splits.retrieval, config.model.two_tower, config.train.eval_batch_size, bf16, world)
    if task is TaskType.RANKING:
        if world.size > 1:
            raise ConfigError("learning to rank (data.group_col) trains on one process; drop --nproc-per-node")
        return RankingTask(splits, config.train.ranking, config.train.eval_batch_size, bf16)
    return ClickTask(splits.val, splits.eval, config.train.eval_batch_size, bf16)
