"""Configuration of the dense models."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ModelConfig", "ModelType"]


class ModelType(enum.Enum):
    """Dense architectures on top of the pooled embeddings."""

    DLRM = "dlrm"


@dataclass(frozen=True)
class ModelConfig:
    """Which dense model to build and how wide.

    Args:
        type (ModelType, optional): the architecture. Default: ``ModelType.DLRM``
        bottom_mlp (tuple[int, ...], optional): hidden widths of the dense-feature MLP; a final
            layer projecting to the embedding dim is appended. Default: ``(64,)``
        top_mlp (tuple[int, ...], optional): hidden widths of the MLP over the interaction; a
            final one-unit layer (the logit) is appended. Default: ``(128, 64)``
    """

    type: ModelType = ModelType.DLRM
    bottom_mlp: tuple[int, ...] = (64,)
    top_mlp: tuple[int, ...] = (128, 64)

    def __post_init__(self) -> None:
        for name in ("bottom_mlp", "top_mlp"):
            sizes = getattr(self, name)
            if any(size < 1 for size in sizes):
                raise ValueError(f"model.{name} widths must be >= 1, got {list(sizes)}")
