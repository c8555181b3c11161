"""DLRM: the dense half of Meta's Deep Learning Recommendation Model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from terarec.models.config import ModelConfig
from terarec.models.layers import MLP, DotInteraction

__all__ = ["DLRM"]


class DLRM(nn.Module):
    """The dense network of DLRM (Naumov et al., 2019), fed with pooled embeddings.

    A bottom MLP maps the dense features to one ``D``-wide vector; it and the ``F`` pooled
    embeddings interact through pairwise dot products (:class:`DotInteraction`); a top MLP maps
    the bottom vector and the interactions to one logit. Embedding tables are not part of this
    module: they live in :class:`terarec.embedding.EmbeddingCollection`, update themselves, and
    hand their pooled rows in as ``sparse``. With no dense features the bottom MLP is skipped.

    Args:
        num_dense (int): dense features per example (may be 0).
        num_sparse (int): ``F``, sparse features per example.
        embedding_dim (int): ``D``, shared by every table (dot products need equal widths).
        bottom_mlp (Sequence[int]): hidden widths of the bottom MLP (``D`` is appended).
        top_mlp (Sequence[int]): hidden widths of the top MLP (the one-unit logit layer is appended).

    Shape:
        - dense: :math:`(B, D_{dense})`
        - sparse: :math:`(B, F, D)`
        - Output: :math:`(B)` logits

    Example::

        >>> _ = torch.manual_seed(0)
        >>> model = DLRM(num_dense=13, num_sparse=26, embedding_dim=8, bottom_mlp=[16], top_mlp=[32])
        >>> model(torch.randn(4, 13), torch.randn(4, 26, 8)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        num_dense: int,
        num_sparse: int,
        embedding_dim: int,
        bottom_mlp: Sequence[int],
        top_mlp: Sequence[int],
    ) -> None:
        super().__init__()
        if num_sparse < 1 and num_dense < 1:
            raise ValueError("DLRM needs at least one dense or sparse feature")
        self.num_dense = num_dense
        self.num_sparse = num_sparse
        self.embedding_dim = embedding_dim
        self.bottom = MLP(num_dense, [*bottom_mlp, embedding_dim]) if num_dense > 0 else None
        num_vectors = num_sparse + (1 if self.bottom is not None else 0)
        self.interaction = DotInteraction(num_vectors)
        interaction_width = self.interaction.num_pairs + (embedding_dim if self.bottom is not None else 0)
        self.top = MLP(interaction_width, [*top_mlp, 1], final_activation=False)

    @classmethod
    def from_config(cls, config: ModelConfig, num_dense: int, num_sparse: int, embedding_dim: int) -> DLRM:
        """Builds the model that ``config`` describes for the given input widths."""
        return cls(num_dense, num_sparse, embedding_dim, config.bottom_mlp, config.top_mlp)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        if self.bottom is None:
            interactions = self.interaction(sparse)[:, self.embedding_dim :]
            return self.top(interactions).squeeze(1)
        bottom = self.bottom(dense)
        vectors = torch.cat([bottom.unsqueeze(1), sparse], dim=1)
        return self.top(self.interaction(vectors)).squeeze(1)

    def extra_repr(self) -> str:
        return f"num_dense={self.num_dense}, num_sparse={self.num_sparse}, embedding_dim={self.embedding_dim}"
