"""DLRM: the dense half of Meta's Deep Learning Recommendation Model."""

from __future__ import annotations

import torch

from terarec.models.base import RecModel
from terarec.models.config import InteractionType, ModelConfig
from terarec.models.inputs import InputSpec, ModelInput
from terarec.models.interactions import DotInteraction
from terarec.models.layers import MLP, logit_head, require_common_dim

__all__ = ["DLRM"]


class DLRM(RecModel):
    """The dense network of DLRM (Naumov et al., 2019), fed with pooled embeddings.

    A bottom MLP maps the dense features to one ``D``-wide vector; it and the ``F`` pooled
    embeddings interact through pairwise dot products (:class:`DotInteraction`), or are simply
    concatenated (``model.dlrm.interaction=cat``); a top MLP maps the result to one logit. With
    no dense features the bottom MLP is skipped. Dot interactions need one embedding dim.

    Options: ``model.dlrm`` and the MLP options of :class:`~terarec.models.ModelConfig`.
    Arguments and shapes as :class:`~terarec.models.RecModel`.

    Example::

        >>> _ = torch.manual_seed(0)
        >>> spec = InputSpec(13, tuple(f"C{i}" for i in range(26)), (8,) * 26)
        >>> model = DLRM(ModelConfig(), spec)
        >>> model(ModelInput(torch.randn(4, 13), torch.randn(4, 208), spec, model.layout)).shape
        torch.Size([4])
    """

    def __init__(self, config: ModelConfig, spec: InputSpec) -> None:
        super().__init__(spec)
        options = config.dlrm
        self.interaction_type = options.interaction
        if options.interaction is InteractionType.DOT:
            dim = require_common_dim("dlrm", spec, "dot interactions; or set model.dlrm.interaction=cat")
        else:
            dim = spec.common_dim() or max(spec.embedding_dims, default=1)
        self.bottom = MLP.from_config(config, spec.num_dense, [*options.bottom_mlp, dim]) if spec.num_dense else None
        has_bottom = self.bottom is not None
        if options.interaction is InteractionType.DOT:
            self.interaction: DotInteraction | None = DotInteraction(spec.num_sparse + int(has_bottom))
            width = self.interaction.num_pairs + (dim if has_bottom else 0)
        else:
            self.interaction = None
            width = spec.embedding_width + (dim if has_bottom else 0)
        self.top = logit_head(config, width, options.top_mlp)

    def forward(self, inputs: ModelInput) -> torch.Tensor:
        if self.interaction is None:
            parts = [inputs.concatenated()]
            if self.bottom is not None:
                parts.insert(0, self.bottom(inputs.dense))
            return self.top(torch.cat(parts, dim=1)).squeeze(1)
        vectors = inputs.stacked()
        if self.bottom is None:
            interactions = self.interaction(vectors)[:, vectors.shape[2] :]
            return self.top(interactions).squeeze(1)
        vectors = torch.cat([self.bottom(inputs.dense).unsqueeze(1), vectors], dim=1)
        return self.top(self.interaction(vectors)).squeeze(1)

    def extra_repr(self) -> str:
        return f"interaction={self.interaction_type.value}"
