"""Dense models that consume pooled embeddings by feature name.

Every model is a :class:`RecModel`: built from a :class:`ModelConfig` and an
:class:`InputSpec`, called with a :class:`ModelInput`, returning one logit per example.
``model.type`` picks one of :data:`MODELS`: ``lr``, ``dnn``, ``dlrm``, ``dcnv2``, ``deepfm``,
``wide_deep``, ``xdeepfm``, ``finalmlp``, and the retrieval model ``two_tower``.
"""

from terarec.models.base import DenseCost, RecModel
from terarec.models.config import (
    Activation,
    DCNStructure,
    DCNv2Config,
    DeepFMConfig,
    DLRMConfig,
    DNNConfig,
    FinalMLPConfig,
    InteractionType,
    ModelConfig,
    ModelType,
    TwoTowerConfig,
    WideDeepConfig,
    XDeepFMConfig,
)
from terarec.models.dcnv2 import DCNv2
from terarec.models.deepfm import DeepFM
from terarec.models.dlrm import DLRM
from terarec.models.dnn import DNN
from terarec.models.finalmlp import FinalMLP
from terarec.models.inputs import EmbeddingLayout, InputSpec, ModelInput
from terarec.models.interactions import (
    CompressedInteraction,
    CrossNetV2,
    DotInteraction,
    FactorizationMachine,
    InteractionAggregation,
)
from terarec.models.layers import MLP, LinearTerm, SmeLU
from terarec.models.lr import LogisticRegression
from terarec.models.registry import MODELS, build_model, model_class
from terarec.models.two_tower import TwoTower, in_batch_softmax_loss
from terarec.models.wide_deep import WideDeep
from terarec.models.xdeepfm import XDeepFM

__all__ = [
    "DLRM",
    "DNN",
    "MLP",
    "MODELS",
    "Activation",
    "CompressedInteraction",
    "CrossNetV2",
    "DCNStructure",
    "DCNv2",
    "DCNv2Config",
    "DLRMConfig",
    "DNNConfig",
    "DeepFM",
    "DeepFMConfig",
    "DenseCost",
    "DotInteraction",
    "EmbeddingLayout",
    "FactorizationMachine",
    "FinalMLP",
    "FinalMLPConfig",
    "InputSpec",
    "InteractionAggregation",
    "InteractionType",
    "LinearTerm",
    "LogisticRegression",
    "ModelConfig",
    "ModelInput",
    "ModelType",
    "RecModel",
    "SmeLU",
    "TwoTower",
    "TwoTowerConfig",
    "WideDeep",
    "WideDeepConfig",
    "XDeepFM",
    "XDeepFMConfig",
    "build_model",
    "in_batch_softmax_loss",
    "model_class",
]
