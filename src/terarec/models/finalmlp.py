"""FinalMLP: two gated MLP streams fused by a bilinear interaction."""

from __future__ import annotations

import torch
from torch import nn

from terarec.models.base import RecModel
from terarec.models.config import ModelConfig
from terarec.models.inputs import InputSpec, ModelInput
from terarec.models.interactions import InteractionAggregation
from terarec.models.layers import MLP

__all__ = ["FeatureGate", "FinalMLP"]

CONTEXT_WIDTH = 16  # the learned context vector a gate starts from (FuxiCTR's fs_ctx_bias)
GATE_HIDDEN = 64  # the gate MLP's hidden width, the paper's setting


class FeatureGate(nn.Module):
    """FinalMLP's feature selection: scales each input column by :math:`2 \\sigma(g)`, where
    ``g`` comes from an MLP over a learned context vector, so each stream learns which
    features to emphasise (1 is neutral).

    Args:
        width (int): ``H``, the input width.

    Shape:
        - Input: :math:`(B, H)`; Output: the same
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.context = nn.Parameter(torch.zeros(1, CONTEXT_WIDTH))
        self.gate = MLP(CONTEXT_WIDTH, [GATE_HIDDEN, width], final_activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (2 * torch.sigmoid(self.gate(self.context)))


class FinalMLP(RecModel):
    """FinalMLP (Mao et al., "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction",
    AAAI 2023): two MLPs over the dense features and embeddings, each behind its own
    :class:`FeatureGate`, fused by a multi-head bilinear :class:`InteractionAggregation`.
    Features may have different embedding dims.

    Options: ``model.finalmlp`` and the MLP options of :class:`~terarec.models.ModelConfig`.
    Arguments and shapes as :class:`~terarec.models.RecModel`.

    Example::

        >>> _ = torch.manual_seed(0)
        >>> spec = InputSpec(2, ("user", "item"), (4, 8))
        >>> model = FinalMLP(ModelConfig(), spec)
        >>> model(ModelInput(torch.randn(3, 2), torch.randn(3, 12), spec, model.layout)).shape
        torch.Size([3])
    """

    def __init__(self, config: ModelConfig, spec: InputSpec) -> None:
        super().__init__(spec)
        options = config.finalmlp
        width = spec.num_dense + spec.embedding_width
        self.gates = (
            nn.ModuleList([FeatureGate(width), FeatureGate(width)]) if options.feature_selection else None
        )
        self.stream1 = MLP.from_config(config, width, options.mlp1)
        self.stream2 = MLP.from_config(config, width, options.mlp2)
        self.fusion = InteractionAggregation(self.stream1.out_features, self.stream2.out_features, options.num_heads)

    def forward(self, inputs: ModelInput) -> torch.Tensor:
        x = inputs.dense_and_embeddings()
        x1, x2 = (x, x) if self.gates is None else (self.gates[0](x), self.gates[1](x))
        return self.fusion(self.stream1(x1), self.stream2(x2)).squeeze(1)
