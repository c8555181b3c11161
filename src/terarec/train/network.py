"""The dense network: what the dense optimizer trains and DistributedDataParallel replicates."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from terarec.embedding import DeepHashCollection
from terarec.models import EmbeddingLayout, InputSpec, ModelInput, RecModel
from terarec.sparse import JaggedTensor

__all__ = ["DenseNetwork"]


class DenseNetwork(nn.Module):
    """A model and the Deep Hash tables that feed it.

    The row tables pool outside autograd into one leaf tensor; the Deep Hash tables
    (:class:`~terarec.embedding.DeepHashCollection`) are layers, trained by the dense optimizer
    beside the model. Their features' embeddings follow the row tables' in the model's input.

    Args:
        model (RecModel): the model, built for the row tables' features then the Deep Hash ones.
        deep_hash (DeepHashCollection, optional): the Deep Hash tables. Default: none

    Shape:
        - dense: :math:`(B, D_{dense})`
        - pooled: :math:`(B, W)`, the row tables' pooled output
        - Output: :math:`(B)` logits

    Example::

        >>> from terarec.models import ModelConfig, ModelType, build_model
        >>> _ = torch.manual_seed(0)
        >>> model = build_model(ModelConfig(type=ModelType.DNN), InputSpec(2, ("a",), (4,)))
        >>> DenseNetwork(model)(torch.randn(3, 2), torch.randn(3, 4), {}).shape
        torch.Size([3])
    """

    def __init__(self, model: RecModel, deep_hash: DeepHashCollection | None = None) -> None:
        super().__init__()
        self.model = model
        self.deep_hash = deep_hash if deep_hash is not None else DeepHashCollection()
        hashed = len(self.deep_hash.feature_names)
        if hashed and model.spec.feature_names[-hashed:] != self.deep_hash.feature_names:
            raise ValueError(
                f"the model's last features {model.spec.feature_names[-hashed:]} must be the Deep Hash "
                f"tables' {self.deep_hash.feature_names}"
            )

    @property
    def spec(self) -> InputSpec:
        return self.model.spec

    @property
    def layout(self) -> EmbeddingLayout:
        return self.model.layout

    def inputs(self, dense: torch.Tensor, pooled: torch.Tensor, sparse: Mapping[str, JaggedTensor]) -> ModelInput:
        """The model's input: the row tables' ``pooled`` output (scaled by the IDs' weights where
        the bags have them), then the Deep Hash embeddings."""
        pooled = self._scaled_by_weights(pooled, sparse)
        if len(self.deep_hash):
            pooled = torch.cat([pooled, self.deep_hash(sparse).to(pooled.dtype)], dim=1)
        return ModelInput(dense, pooled, self.spec, self.layout)

    def _scaled_by_weights(self, pooled: torch.Tensor, sparse: Mapping[str, JaggedTensor]) -> torch.Tensor:
        """``pooled`` with each weighted feature's columns times its ID's weight. The row tables
        pool without weights, so this is exact for bags of at most one ID, and refused beyond."""
        names = self.spec.feature_names[: len(self.spec.feature_names) - len(self.deep_hash.feature_names)]
        weighted = [i for i, name in enumerate(names) if name in sparse and sparse[name].weights is not None]
        if not weighted:
            return pooled
        starts = self.spec.column_starts(self.layout)
        scale = torch.ones_like(pooled)
        for i in weighted:
            jagged = sparse[names[i]]
            lengths = jagged.lengths()
            if lengths.numel() and int(lengths.max()) > 1:
                raise ValueError(
                    f"sparse feature {names[i]!r}: a bag of {int(lengths.max())} IDs carries weights; a table scales "
                    "the embedding of a bag of one ID only (give each weighted index a field of its own, or make "
                    "the feature's table kind 'dhe', which weighs every ID)"
                )
            single = lengths == 1
            per_bag = torch.zeros(lengths.numel())
            per_bag[single] = jagged.weights[jagged.offsets[:-1][single]]  # type: ignore[index]
            width = self.layout.table_dim(self.spec.embedding_dims[i])
            scale[:, starts[i] : starts[i] + width] = per_bag.unsqueeze(1)
        return pooled * scale

    def forward(
        self, dense: torch.Tensor, pooled: torch.Tensor, sparse: Mapping[str, JaggedTensor], towers: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The model's logits; with ``towers``, a two-tower model's user and item vectors
        (through ``forward``, so DistributedDataParallel sees the call)."""
        inputs = self.inputs(dense, pooled, sparse)
        if towers:
            return self.model.towers(inputs)  # type: ignore[operator]
        return self.model(inputs)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The model's loss (:meth:`~terarec.models.RecModel.loss`)."""
        return self.model.loss(logits, labels)
