"""Models by name: ``model.type`` to the class that builds it."""

from __future__ import annotations

from terarec.models.base import RecModel
from terarec.models.config import ModelConfig, ModelType
from terarec.models.dcnv2 import DCNv2
from terarec.models.deepfm import DeepFM
from terarec.models.dlrm import DLRM
from terarec.models.dnn import DNN
from terarec.models.finalmlp import FinalMLP
from terarec.models.inputs import InputSpec
from terarec.models.lr import LogisticRegression
from terarec.models.two_tower import TwoTower
from terarec.models.wide_deep import WideDeep
from terarec.models.xdeepfm import XDeepFM

__all__ = ["MODELS", "build_model", "model_class"]

MODELS: dict[ModelType, type[RecModel]] = {
    ModelType.LR: LogisticRegression,
    ModelType.DNN: DNN,
    ModelType.DLRM: DLRM,
    ModelType.DCNV2: DCNv2,
    ModelType.DEEPFM: DeepFM,
    ModelType.WIDE_DEEP: WideDeep,
    ModelType.XDEEPFM: XDeepFM,
    ModelType.FINALMLP: FinalMLP,
    ModelType.TWO_TOWER: TwoTower,
}
"""Every built-in model, by its ``model.type``."""


def model_class(model_type: ModelType) -> type[RecModel]:
    """The class of ``model.type``; its ``layout`` says how wide the tables must be."""
    return MODELS[model_type]


def build_model(config: ModelConfig, spec: InputSpec) -> RecModel:
    """The model ``config`` describes for inputs of ``spec``'s widths. Seed torch first: the
    weights come from its RNG.

    Example::

        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> build_model(ModelConfig(type=ModelType.LR), InputSpec(13, ("C1",), (0,)))
        LogisticRegression(
          (linear): LinearTerm(
            (dense): Linear(in_features=13, out_features=1, bias=True)
          )
        )
    """
    return model_class(config.type).from_config(config, spec)
