"""Building blocks shared by the dense models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "DotInteraction"]


class MLP(nn.Sequential):
    """Linear layers with ReLU between them (and after the last one unless ``final_activation`` is off).

    Args:
        in_features (int): input width.
        layer_sizes (Sequence[int]): output width of each linear layer.
        final_activation (bool, optional): apply ReLU after the last layer too. Default: ``True``

    Shape:
        - Input: :math:`(B, H_{in})`
        - Output: :math:`(B, H_{out})`, ``H_out = layer_sizes[-1]``

    Example::

        >>> _ = torch.manual_seed(0)
        >>> MLP(13, [32, 8])(torch.randn(4, 13)).shape
        torch.Size([4, 8])
    """

    def __init__(self, in_features: int, layer_sizes: Sequence[int], final_activation: bool = True) -> None:
        if not layer_sizes:
            raise ValueError("layer_sizes must hold at least one layer")
        layers: list[nn.Module] = []
        width = in_features
        for index, size in enumerate(layer_sizes):
            layers.append(nn.Linear(width, size))
            if final_activation or index < len(layer_sizes) - 1:
                layers.append(nn.ReLU())
            width = size
        super().__init__(*layers)
        self.out_features = width


class DotInteraction(nn.Module):
    """DLRM's pairwise dot-product interaction.

    Stacks the ``F`` input vectors, takes every pairwise dot product ``<x_i, x_j>`` with ``i > j``
    (the strict lower triangle of the Gram matrix, so each pair appears once and no vector meets
    itself) and concatenates them after the first vector (the bottom MLP's output in DLRM).

    Args:
        num_vectors (int): ``F``, how many vectors interact.

    Shape:
        - Input: :math:`(B, F, D)`
        - Output: :math:`(B, D + F (F - 1) / 2)`

    Example::

        >>> x = torch.ones(2, 3, 4)
        >>> DotInteraction(3)(x).tolist()[0]
        [1.0, 1.0, 1.0, 1.0, 4.0, 4.0, 4.0]
    """

    def __init__(self, num_vectors: int) -> None:
        super().__init__()
        self.num_vectors = num_vectors
        rows, cols = torch.tril_indices(num_vectors, num_vectors, offset=-1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)

    @property
    def num_pairs(self) -> int:
        return self.num_vectors * (self.num_vectors - 1) // 2

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(vectors, vectors.transpose(1, 2))
        pairs = gram[:, self.pair_rows, self.pair_cols]
        return torch.cat([vectors[:, 0], pairs], dim=1)

    def extra_repr(self) -> str:
        return f"num_vectors={self.num_vectors}, num_pairs={self.num_pairs}"
