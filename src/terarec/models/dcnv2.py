"""DCN-v2: explicit feature crosses beside (or before) an MLP."""

from __future__ import annotations

import torch
from torch import nn

from terarec.models.base import RecModel
from terarec.models.config import DCNStructure, ModelConfig
from terarec.models.inputs import InputSpec, ModelInput
from terarec.models.interactions import CrossNetV2
from terarec.models.layers import MLP, logit_head

__all__ = ["DCNv2"]


class DCNv2(RecModel):
    """Deep & Cross Network v2 (Wang et al., WWW 2021).

    The dense features and every embedding, side by side (:math:`x_0`), go through a
    :class:`CrossNetV2` of ``model.dcnv2.num_layers`` layers. ``parallel`` (the default) runs an
    MLP on :math:`x_0` beside it and maps both outputs to the logit; ``stacked`` runs the MLP on
    the cross network's output. ``low_rank`` and ``num_experts`` select the factorised and
    mixture-of-experts cross layers. Features may have different embedding dims.

    Options: ``model.dcnv2`` and the MLP options of :class:`~terarec.models.ModelConfig`.
    Arguments and shapes as :class:`~terarec.models.RecModel`.

    Example::

        >>> from terarec.models.config import DCNv2Config
        >>> _ = torch.manual_seed(0)
        >>> spec = InputSpec(2, ("user", "item"), (4, 4))
        >>> config = ModelConfig(dcnv2=DCNv2Config(structure=DCNStructure.STACKED, low_rank=2))
        >>> model = DCNv2(config, spec)
        >>> model(ModelInput(torch.randn(3, 2), torch.randn(3, 8), spec, model.layout)).shape
        torch.Size([3])
    """

    def __init__(self, config: ModelConfig, spec: InputSpec) -> None:
        super().__init__(spec)
        options = config.dcnv2
        width = spec.num_dense + spec.embedding_width
        self.structure = options.structure
        self.cross = CrossNetV2(width, options.num_layers, options.low_rank, options.num_experts)
        if options.structure is DCNStructure.STACKED:
            self.head: nn.Module = logit_head(config, width, options.mlp)
            self.mlp: MLP | None = None
        else:
            self.mlp = MLP.from_config(config, width, options.mlp) if options.mlp else None
            self.head = nn.Linear(width + (self.mlp.out_features if self.mlp else 0), 1)

    def forward(self, inputs: ModelInput) -> torch.Tensor:
        x0 = inputs.dense_and_embeddings()
        crossed = self.cross(x0)
        if self.structure is DCNStructure.PARALLEL and self.mlp is not None:
            crossed = torch.cat([crossed, self.mlp(x0)], dim=1)
        return self.head(crossed).squeeze(1)

    def extra_repr(self) -> str:
        return f"structure={self.structure.value}"
