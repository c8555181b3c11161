"""Building blocks shared by the dense models: the MLP, its activations, the linear term."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from terarec.errors import ConfigError
from terarec.models.config import Activation, ModelConfig
from terarec.models.inputs import InputSpec, ModelInput

__all__ = ["MLP", "LinearTerm", "SmeLU", "logit_head", "require_common_dim"]


class SmeLU(nn.Module):
    """Smooth ReLU (Shamir, Lin and Coviello, "Smooth activations and reproducibility in deep
    networks", 2020): zero below ``-beta``, the identity above ``beta``, and the quadratic
    ``(x + beta)^2 / (4 beta)`` between, so its gradient is continuous. Google found that
    smooth activations make recommendation models trained twice agree far better than ReLU.

    Args:
        beta (float, optional): half-width of the quadratic region. Default: ``1.0``

    Shape:
        - Input: any; Output: the same

    Example::

        >>> SmeLU(1.0)(torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])).tolist()
        [0.0, 0.0, 0.25, 1.0, 2.0]
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quadratic = (x + self.beta).square() / (4 * self.beta)
        return torch.where(x <= -self.beta, torch.zeros_like(x), torch.where(x >= self.beta, x, quadratic))

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class MLP(nn.Sequential):
    """Linear layers, each followed by (batch norm,) an activation (and dropout).

    The last layer gets the same treatment unless ``final_activation`` is off, which makes it a
    plain linear output layer (a logit).

    Args:
        in_features (int): input width.
        layer_sizes (Sequence[int]): output width of each linear layer.
        final_activation (bool, optional): treat the last layer as a hidden one. Default: ``True``
        dropout (float, optional): dropout probability after each hidden activation. Default: ``0.0``
        batch_norm (bool, optional): batch normalisation before each hidden activation. Default: ``False``
        activation (Activation, optional): the hidden activation. Default: ``Activation.RELU``
        smelu_beta (float, optional): SmeLU's ``beta``. Default: ``1.0``

    Shape:
        - Input: :math:`(B, H_{in})`
        - Output: :math:`(B, H_{out})`, ``H_out = layer_sizes[-1]``

    Example::

        >>> _ = torch.manual_seed(0)
        >>> MLP(13, [32, 8])(torch.randn(4, 13)).shape
        torch.Size([4, 8])
        >>> MLP(13, [32, 1], final_activation=False, batch_norm=True, dropout=0.1)
        MLP(
          (0): Linear(in_features=13, out_features=32, bias=True)
          (1): BatchNorm1d(32, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
          (2): ReLU()
          (3): Dropout(p=0.1, inplace=False)
          (4): Linear(in_features=32, out_features=1, bias=True)
        )
    """

    def __init__(
        self,
        in_features: int,
        layer_sizes: Sequence[int],
        final_activation: bool = True,
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: Activation = Activation.RELU,
        smelu_beta: float = 1.0,
    ) -> None:
        if not layer_sizes:
            raise ValueError("layer_sizes must hold at least one layer")
        layers: list[nn.Module] = []
        width = in_features
        for index, size in enumerate(layer_sizes):
            layers.append(nn.Linear(width, size))
            if final_activation or index < len(layer_sizes) - 1:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(size))
                layers.append(nn.ReLU() if activation is Activation.RELU else SmeLU(smelu_beta))
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            width = size
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = width

    @classmethod
    def from_config(
        cls, config: ModelConfig, in_features: int, layer_sizes: Sequence[int], final_activation: bool = True
    ) -> MLP:
        """An MLP with ``config``'s dropout, batch norm and activation."""
        return cls(
            in_features,
            layer_sizes,
            final_activation=final_activation,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            activation=config.activation,
            smelu_beta=config.smelu_beta,
        )


def logit_head(config: ModelConfig, in_features: int, hidden: Sequence[int]) -> nn.Module:
    """``hidden`` layers (possibly none) and a one-unit output layer: :math:`(B, H) \\to (B, 1)`."""
    return MLP.from_config(config, in_features, [*hidden, 1], final_activation=False)


class LinearTerm(nn.Module):
    """The first-order ("wide") term: each sparse feature's pooled scalar weight, summed, plus a
    linear function of the dense features and a bias. It is logistic regression's logit, and the
    wide half of Wide & Deep, DeepFM and xDeepFM.

    Args:
        num_dense (int): dense features.

    Shape:
        - Input: a :class:`~terarec.models.ModelInput` whose layout has the wide column
        - Output: :math:`(B, 1)`
    """

    def __init__(self, num_dense: int) -> None:
        super().__init__()
        self.dense = nn.Linear(num_dense, 1) if num_dense > 0 else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, inputs: ModelInput) -> torch.Tensor:
        logit = inputs.wide().sum(dim=1, keepdim=True) + self.bias
        return logit if self.dense is None else logit + self.dense(inputs.dense)


def require_common_dim(model: str, spec: InputSpec, reason: str) -> int:
    """The embedding dim all features share; a :class:`~terarec.errors.ConfigError` naming the keys otherwise."""
    dim = spec.common_dim()
    if dim is None or dim < 1:
        raise ConfigError(
            f"model.type={model} needs one embedding_dim for every feature ({reason}), got "
            f"{dict(zip(spec.feature_names, spec.embedding_dims))}; set embedding.embedding_dim and leave "
            f"embedding.tables[i].embedding_dim unset"
        )
    return dim
