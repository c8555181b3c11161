"""A plain MLP over the dense features and every embedding side by side."""

from __future__ import annotations

import torch

from terarec.models.base import RecModel
from terarec.models.config import ModelConfig
from terarec.models.inputs import InputSpec, ModelInput
from terarec.models.layers import logit_head

__all__ = ["DNN"]


class DNN(RecModel):
    """The embedding-and-MLP model (as in Covington et al., "Deep Neural Networks for YouTube
    Recommendations", RecSys 2016): dense features and embeddings concatenated, then an MLP of
    ``model.dnn.mlp`` hidden widths and a logit. Features may have different embedding dims.

    Options: ``model.dnn`` and the MLP options of :class:`~terarec.models.ModelConfig`.
    Arguments and shapes as :class:`~terarec.models.RecModel`.

    Example::

        >>> _ = torch.manual_seed(0)
        >>> spec = InputSpec(3, ("user", "item"), (4, 8))
        >>> model = DNN(ModelConfig(), spec)
        >>> model(ModelInput(torch.randn(5, 3), torch.randn(5, 12), spec, model.layout)).shape
        torch.Size([5])
    """

    def __init__(self, config: ModelConfig, spec: InputSpec) -> None:
        super().__init__(spec)
        self.mlp = logit_head(config, spec.num_dense + spec.embedding_width, config.dnn.mlp)

    def forward(self, inputs: ModelInput) -> torch.Tensor:
        return self.mlp(inputs.dense_and_embeddings()).squeeze(1)
