"""What a model sees: the dense features and each sparse feature's pooled embedding, by name.

Every model is built from an :class:`InputSpec` (the widths it will get) and called with a
:class:`ModelInput` (the tensors). The trainer, evaluation and the sharded path all build the
input with :meth:`ModelInput.from_pooled` from the embedding layer's one pooled leaf tensor, so
gradients flow back to the tables through that tensor whatever views the model takes.

A model that needs a per-ID scalar weight besides the embedding (the "wide" or first-order
term of LR, Wide & Deep, DeepFM, xDeepFM) says so with its :class:`EmbeddingLayout`: each of
its tables is then one column wider, and that column is the weight. One lookup serves both,
with no second table and no second pass over the IDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EmbeddingLayout", "InputSpec", "ModelInput"]


@dataclass(frozen=True)
class EmbeddingLayout:
    """Which columns a model reads from each feature's table row.

    Args:
        deep (bool, optional): the first ``D_f`` columns are the feature's embedding. Default: ``True``
        wide (bool, optional): one more column, the last, is the ID's scalar weight. Default: ``False``

    Example::

        >>> EmbeddingLayout(deep=True, wide=True).table_dim(16), EmbeddingLayout(deep=False, wide=True).table_dim(16)
        (17, 1)
    """

    deep: bool = True
    wide: bool = False

    def __post_init__(self) -> None:
        if not (self.deep or self.wide):
            raise ValueError("an EmbeddingLayout reads the embedding, the wide weight, or both")

    def table_dim(self, embedding_dim: int) -> int:
        """Columns of a table whose embedding has ``embedding_dim`` columns."""
        return (embedding_dim if self.deep else 0) + (1 if self.wide else 0)


@dataclass(frozen=True)
class InputSpec:
    """The widths a model is built for.

    Args:
        num_dense (int): dense features per example (may be 0).
        feature_names (tuple[str, ...]): the ``F`` sparse features, in input order.
        embedding_dims (tuple[int, ...]): ``D_f`` per feature: its embedding's width, without
            the wide column; ``0`` for every feature when the layout is not ``deep``.

    Example::

        >>> spec = InputSpec(13, ("user", "item"), (8, 16))
        >>> spec.num_sparse, spec.embedding_width, spec.common_dim()
        (2, 24, None)
    """

    num_dense: int
    feature_names: tuple[str, ...]
    embedding_dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.feature_names) != len(self.embedding_dims):
            raise ValueError(f"{len(self.feature_names)} feature names but {len(self.embedding_dims)} embedding dims")
        if self.num_dense < 0:
            raise ValueError(f"num_dense must be >= 0, got {self.num_dense}")

    @property
    def num_sparse(self) -> int:
        return len(self.feature_names)

    @property
    def embedding_width(self) -> int:
        """:math:`\\sum_f D_f`, the width of every embedding side by side."""
        return sum(self.embedding_dims)

    def common_dim(self) -> int | None:
        """The embedding dim every feature shares, or ``None`` when they differ (or there are none)."""
        dims = set(self.embedding_dims)
        return dims.pop() if len(dims) == 1 else None

    def column_starts(self, layout: EmbeddingLayout) -> list[int]:
        """Where each feature's columns begin in the pooled tensor ``layout`` describes.

        Example::

            >>> InputSpec(0, ("a", "b", "c"), (2, 3, 1)).column_starts(EmbeddingLayout(wide=True))
            [0, 3, 7]
        """
        starts, start = [], 0
        for dim in self.embedding_dims:
            starts.append(start)
            start += layout.table_dim(dim)
        return starts


@dataclass(frozen=True)
class ModelInput:
    """One batch as a model reads it.

    Args:
        dense (Tensor): the dense features.
        pooled (Tensor): every feature's pooled table row side by side, as the embedding
            layer returns it (with the wide column after each embedding when ``layout.wide``).
        spec (InputSpec): the widths.
        layout (EmbeddingLayout): which columns ``pooled`` holds per feature.

    Shape:
        - dense: :math:`(B, D_{dense})`
        - pooled: :math:`(B, \\sum_f W_f)`, ``W_f = layout.table_dim(D_f)``

    Example::

        >>> spec = InputSpec(1, ("a", "b"), (2, 3))
        >>> pooled = torch.arange(14.0).view(2, 7)  # per row: a0 a1 wa | b0 b1 b2 wb
        >>> inputs = ModelInput(torch.zeros(2, 1), pooled, spec, EmbeddingLayout(wide=True))
        >>> inputs.embeddings()["b"].tolist()
        [[3.0, 4.0, 5.0], [10.0, 11.0, 12.0]]
        >>> inputs.wide().tolist(), inputs.concatenated().shape
        ([[2.0, 6.0], [9.0, 13.0]], torch.Size([2, 5]))
    """

    dense: torch.Tensor
    pooled: torch.Tensor
    spec: InputSpec
    layout: EmbeddingLayout

    def __post_init__(self) -> None:
        expected = sum(self.layout.table_dim(d) for d in self.spec.embedding_dims)
        if self.pooled.dim() != 2 or self.pooled.shape[1] != expected:
            raise ValueError(f"pooled must be (B, {expected}) for {self.spec}, got {tuple(self.pooled.shape)}")
        if self.dense.dim() != 2 or self.dense.shape[1] != self.spec.num_dense:
            raise ValueError(f"dense must be (B, {self.spec.num_dense}), got {tuple(self.dense.shape)}")

    @property
    def batch_size(self) -> int:
        return self.pooled.shape[0]

    def embeddings(self) -> dict[str, torch.Tensor]:
        """Per feature its :math:`(B, D_f)` embedding (views of ``pooled``)."""
        if not self.layout.deep:
            raise ValueError("this model's layout reads no embeddings (EmbeddingLayout(deep=False))")
        return {
            name: self.pooled[:, start : start + dim]
            for name, dim, start in zip(self.spec.feature_names, self.spec.embedding_dims, self.spec.column_starts(self.layout))
        }

    def concatenated(self) -> torch.Tensor:
        """Every embedding side by side, :math:`(B, \\sum_f D_f)` (a view when there is no wide column)."""
        if not self.layout.wide:
            return self.pooled
        return torch.cat(list(self.embeddings().values()), dim=1)

    def dense_and_embeddings(self) -> torch.Tensor:
        """The dense features, then every embedding: :math:`(B, D_{dense} + \\sum_f D_f)`, the
        input of the MLP-style models."""
        if self.spec.num_dense == 0:
            return self.concatenated()
        return torch.cat([self.dense, self.concatenated()], dim=1)

    def stacked(self) -> torch.Tensor:
        """The embeddings as :math:`(B, F, D)`; every feature must share ``D``."""
        dim = self.spec.common_dim()
        if dim is None or not self.layout.deep:
            raise ValueError(f"stacked() needs one embedding dim for every feature, got {self.spec.embedding_dims}")
        width = self.layout.table_dim(dim)
        rows = self.pooled.view(self.batch_size, self.spec.num_sparse, width)
        return rows[:, :, :dim] if self.layout.wide else rows

    def wide(self) -> torch.Tensor:
        """Each feature's pooled scalar weight, :math:`(B, F)`."""
        if not self.layout.wide:
            raise ValueError("this model's layout has no wide column (EmbeddingLayout(wide=True))")
        columns = [start + self.layout.table_dim(dim) - 1 for dim, start in zip(self.spec.embedding_dims, self.spec.column_starts(self.layout))]
        return self.pooled[:, columns]
