"""Dense models that consume pooled embeddings."""

from terarec.models.config import ModelConfig, ModelType
from terarec.models.dlrm import DLRM
from terarec.models.layers import MLP, DotInteraction

__all__ = ["DLRM", "MLP", "DotInteraction", "ModelConfig", "ModelType"]
