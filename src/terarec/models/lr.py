"""Logistic regression over the sparse (and dense) features: the baseline, built in."""

from __future__ import annotations

from typing import ClassVar

import torch

from terarec.embedding import OptimizerConfig, OptimizerType
from terarec.models.base import RecModel
from terarec.models.config import ModelConfig
from terarec.models.inputs import EmbeddingLayout, InputSpec, ModelInput
from terarec.models.layers import LinearTerm

__all__ = ["LogisticRegression"]


class LogisticRegression(RecModel):
    """Logistic regression: one learned weight per ID (a table of one column per feature),
    summed over the features, plus a linear function of the dense features.

    With hashed IDs this is the classic hashed-feature CTR baseline (McMahan et al., "Ad Click
    Prediction: a View from the Trenches", KDD 2013); every deep model should beat it.

    Built from a :class:`~terarec.models.ModelConfig` (LR has no options of its own) and an
    :class:`~terarec.models.InputSpec` whose embedding dims are ``0``: it reads only the wide
    column. Arguments and shapes as :class:`~terarec.models.RecModel`.

    Example::

        >>> _ = torch.manual_seed(0)
        >>> spec = InputSpec(2, ("user", "item"), (0, 0))
        >>> model = LogisticRegression(ModelConfig(), spec)
        >>> model(ModelInput(torch.randn(4, 2), torch.randn(4, 2), spec, model.layout)).shape
        torch.Size([4])
    """

    layout: ClassVar[EmbeddingLayout] = EmbeddingLayout(deep=False, wide=True)
    # A weight per ID alone overfits the Criteo sample within two epochs at the deep models' 0.1.
    embedding_optimizer: ClassVar[OptimizerConfig] = OptimizerConfig(OptimizerType.ROWWISE_ADAGRAD, learning_rate=0.05)

    def __init__(self, config: ModelConfig, spec: InputSpec) -> None:
        super().__init__(spec)
        self.linear = LinearTerm(spec.num_dense)

    def forward(self, inputs: ModelInput) -> torch.Tensor:
        return self.linear(inputs).squeeze(1)
