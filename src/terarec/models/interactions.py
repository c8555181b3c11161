"""Feature-interaction layers: what distinguishes one CTR architecture from another."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "CompressedInteraction",
    "CrossNetV2",
    "DotInteraction",
    "FactorizationMachine",
    "InteractionAggregation",
]


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


class FactorizationMachine(nn.Module):
    """The second-order term of a factorisation machine (Rendle, 2010): the sum of every pairwise
    dot product of the ``F`` embeddings, in :math:`O(F D)` as
    :math:`\\frac12 \\sum_d ((\\sum_f v_{fd})^2 - \\sum_f v_{fd}^2)`.

    Shape:
        - Input: :math:`(B, F, D)`
        - Output: :math:`(B, 1)`

    Example::

        >>> FactorizationMachine()(torch.ones(1, 3, 2)).tolist()  # 3 pairs x <1,1>=2
        [[6.0]]
    """

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        square_of_sum = vectors.sum(dim=1).square()
        sum_of_squares = vectors.square().sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)


class CrossNetV2(nn.Module):
    """DCN-v2's cross network (Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021).

    Each layer computes :math:`x_{l+1} = x_0 \\odot (W_l x_l + b_l) + x_l`: explicit feature
    crosses whose degree grows by one per layer. With ``low_rank`` the weight is factorised,
    :math:`W = U V^T` (MLPerf's DLRM-DCNv2 uses this); with ``num_experts > 1`` each layer mixes
    low-rank experts :math:`x_0 \\odot (U_i \\tanh(C_i \\tanh(V_i^T x_l)) + b_i)` by a softmax gate
    over :math:`x_l`, the paper's DCN-Mix.

    Args:
        width (int): ``H``, the input width (every layer keeps it).
        num_layers (int): cross layers.
        low_rank (int, optional): rank of the factorised weights; ``None`` for full ``H x H``
            matrices. Default: ``None``
        num_experts (int, optional): low-rank experts per layer. Default: ``1``

    Shape:
        - Input: :math:`(B, H)`
        - Output: :math:`(B, H)`

    Example::

        >>> _ = torch.manual_seed(0)
        >>> CrossNetV2(6, num_layers=2, low_rank=2, num_experts=3)(torch.randn(4, 6)).shape
        torch.Size([4, 6])
    """

    def __init__(self, width: int, num_layers: int, low_rank: int | None = None, num_experts: int = 1) -> None:
        super().__init__()
        if num_experts > 1 and low_rank is None:
            raise ValueError("a mixture of experts needs low_rank")
        self.width, self.num_layers, self.low_rank, self.num_experts = width, num_layers, low_rank, num_experts
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(num_layers))
        if low_rank is None:
            self.weights = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(num_layers))
            return
        shape = (num_layers, num_experts)
        self.down = nn.Parameter(torch.empty(*shape, width, low_rank))  # V
        self.up = nn.Parameter(torch.empty(*shape, low_rank, width))  # U^T
        parameters = [self.down, self.up]
        if num_experts > 1:
            self.core = nn.Parameter(torch.empty(*shape, low_rank, low_rank))  # C
            parameters.append(self.core)
        for parameter in parameters:
            for matrix in parameter.view(-1, *parameter.shape[-2:]):
                nn.init.xavier_normal_(matrix)
        if num_experts > 1:
            self.gates = nn.ModuleList(nn.Linear(width, num_experts, bias=False) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in range(self.num_layers):
            bias = self.biases[layer]
            if self.low_rank is None:
                x = x0 * (self.weights[layer](x) + bias) + x
            elif self.num_experts == 1:
                x = x0 * ((x @ self.down[layer, 0]) @ self.up[layer, 0] + bias) + x
            else:
                low = torch.tanh(torch.einsum("bh,ehr->ber", x, self.down[layer]))
                low = torch.tanh(torch.einsum("ber,ers->bes", low, self.core[layer]))
                experts = x0.unsqueeze(1) * (torch.einsum("bes,esh->beh", low, self.up[layer]) + bias)
                gate = torch.softmax(self.gates[layer](x), dim=1)
                x = torch.einsum("be,beh->bh", gate, experts) + x
        return x

    def extra_repr(self) -> str:
        return (
            f"width={self.width}, num_layers={self.num_layers}, low_rank={self.low_rank}, "
            f"num_experts={self.num_experts}"
        )


class CompressedInteraction(nn.Module):
    """xDeepFM's compressed interaction network, CIN (Lian et al., KDD 2018).

    Layer ``k`` forms every product of a field of :math:`X^0` with a feature map of
    :math:`X^{k-1}` (element-wise over ``D``) and compresses the :math:`F H_{k-1}` products into
    :math:`H_k` maps by a learned weighting (a 1-wide convolution); each layer's maps, summed
    over ``D``, are the output. With ``split_half`` all layers but the last pass only half their
    maps on and output the other half, as in the paper.

    Args:
        num_fields (int): ``F``.
        layer_sizes (tuple[int, ...]): :math:`H_k` per layer.
        split_half (bool, optional): Default: ``True``

    Shape:
        - Input: :math:`(B, F, D)`
        - Output: :math:`(B, H_{out})`, ``H_out = out_features``

    Example::

        >>> _ = torch.manual_seed(0)
        >>> cin = CompressedInteraction(5, (8, 6))
        >>> cin(torch.randn(2, 5, 4)).shape, cin.out_features
        (torch.Size([2, 10]), 10)
    """

    def __init__(self, num_fields: int, layer_sizes: tuple[int, ...], split_half: bool = True) -> None:
        super().__init__()
        self.num_fields, self.layer_sizes, self.split_half = num_fields, tuple(layer_sizes), split_half
        self.convs = nn.ModuleList()
        maps, out = num_fields, 0
        for index, size in enumerate(self.layer_sizes):
            self.convs.append(nn.Conv1d(num_fields * maps, size, kernel_size=1))
            last = index == len(self.layer_sizes) - 1
            maps = size // 2 if split_half and not last else size
            out += size - maps if split_half and not last else size
        self.out_features = out

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        batch, fields, dim = x0.shape
        hidden, outputs = x0, []
        for index, conv in enumerate(self.convs):
            products = (x0.unsqueeze(2) * hidden.unsqueeze(1)).reshape(batch, -1, dim)
            maps = conv(products)
            if self.split_half and index < len(self.convs) - 1:
                hidden, output = maps.split(maps.shape[1] // 2, dim=1)
            else:
                hidden = output = maps
            outputs.append(output.sum(dim=2))
        return torch.cat(outputs, dim=1)

    def extra_repr(self) -> str:
        return f"num_fields={self.num_fields}, layer_sizes={self.layer_sizes}, split_half={self.split_half}"


class InteractionAggregation(nn.Module):
    """FinalMLP's multi-head bilinear fusion of two streams (Mao et al., AAAI 2023):
    :math:`w_x^T x + w_y^T y + \\sum_h x_h^T W_h y_h + b`, each stream split into ``num_heads``
    chunks.

    Args:
        x_features (int): width of ``x``.
        y_features (int): width of ``y``.
        num_heads (int, optional): must divide both widths. Default: ``1``

    Shape:
        - x: :math:`(B, H_x)`, y: :math:`(B, H_y)`
        - Output: :math:`(B, 1)`

    Example::

        >>> _ = torch.manual_seed(0)
        >>> InteractionAggregation(8, 4, num_heads=2)(torch.randn(3, 8), torch.randn(3, 4)).shape
        torch.Size([3, 1])
    """

    def __init__(self, x_features: int, y_features: int, num_heads: int = 1) -> None:
        super().__init__()
        if x_features % num_heads or y_features % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide both widths ({x_features}, {y_features})")
        self.num_heads = num_heads
        self.linear_x = nn.Linear(x_features, 1)
        self.linear_y = nn.Linear(y_features, 1, bias=False)
        self.bilinear = nn.Parameter(torch.empty(num_heads, x_features // num_heads, y_features // num_heads))
        nn.init.xavier_normal_(self.bilinear)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        heads_x = x.view(x.shape[0], self.num_heads, -1)
        heads_y = y.view(y.shape[0], self.num_heads, -1)
        bilinear = torch.einsum("bhi,hij,bhj->b", heads_x, self.bilinear, heads_y).unsqueeze(1)
        return self.linear_x(x) + self.linear_y(y) + bilinear

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"
