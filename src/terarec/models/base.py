"""The interface every dense model implements, and what a model costs per example."""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional
from torch.utils.flop_counter import FlopCounterMode

from terarec.embedding import OptimizerConfig, OptimizerType, PoolingType
from terarec.models.config import ModelConfig
from terarec.models.inputs import EmbeddingLayout, InputSpec, ModelInput

__all__ = ["DenseCost", "RecModel"]


@dataclass(frozen=True)
class DenseCost:
    """What a dense model costs, as the planner reads it.

    Args:
        num_parameters (int): trainable numbers of the dense network.
        flops_per_example (float): forward plus backward floating-point operations per example.
    """

    num_parameters: int
    flops_per_example: float


class RecModel(nn.Module, abc.ABC):
    """A dense model over named inputs: dense features and per-feature pooled embeddings.

    Subclasses set :attr:`layout` (which table columns they read), are built from a
    :class:`~terarec.models.ModelConfig` and an :class:`~terarec.models.InputSpec`
    (``Model(config, spec)``), and map a :class:`~terarec.models.ModelInput` to one logit per
    example. Embedding tables are not part of the module: they update themselves outside
    autograd and hand their pooled rows in.

    Args:
        config (ModelConfig): the ``model`` section: ``type``, the MLP options, and the model's
            own section (``model.dcnv2``, ...).
        spec (InputSpec): the widths of the inputs the model will get.

    Attributes:
        layout (EmbeddingLayout): class-level; the columns each table row holds for this model.
        embedding_optimizer (OptimizerConfig): class-level; the tables' optimizer when the
            config leaves ``embedding.optimizer`` unset: row-wise Adagrad at 0.1; 0.05 for the
            per-ID weights of logistic regression and Wide & Deep; 0.01 for models whose logit
            multiplies embeddings directly (DeepFM, xDeepFM).
        default_embedding_dim (int): class-level; the tables' embedding dim when the config leaves
            ``embedding.embedding_dim`` unset: 16; 64 for the two-tower model.
        default_pooling (PoolingType): class-level; how the tables pool a bag when the config
            leaves ``embedding.pooling`` unset: sum; mean for the two-tower model.
        spec (InputSpec): the widths the model was built for.

    Shape:
        - Input: :class:`~terarec.models.ModelInput`: dense :math:`(B, D_{dense})`, pooled
          :math:`(B, \\sum_f W_f)`
        - Output: :math:`(B)` logits

    Raises:
        ConfigError: when the model cannot work with these inputs, naming the key to change.
    """

    layout: ClassVar[EmbeddingLayout] = EmbeddingLayout()
    embedding_optimizer: ClassVar[OptimizerConfig] = OptimizerConfig(OptimizerType.ROWWISE_ADAGRAD, learning_rate=0.1)
    default_embedding_dim: ClassVar[int] = 16
    default_pooling: ClassVar[PoolingType] = PoolingType.SUM

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec

    @classmethod
    def from_config(cls, config: ModelConfig, spec: InputSpec) -> RecModel:
        """Builds the model ``config`` describes for inputs of ``spec``'s widths.

        Raises:
            ConfigError: when the model cannot work with these inputs (naming the key to change).
        """
        return cls(config, spec)  # type: ignore[call-arg]

    @abc.abstractmethod
    def forward(self, inputs: ModelInput) -> torch.Tensor:
        """Logits, :math:`(B)`."""

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch: binary cross-entropy for click prediction.

        Shape:
            - logits, labels: :math:`(B)`
            - Output: scalar, the batch mean
        """
        return functional.binary_cross_entropy_with_logits(logits.float(), labels)

    def dense_cost(self) -> DenseCost:
        """Parameters and FLOPs (forward and backward) per example, counted on a copy of the
        model over a small zero batch, so the count follows whatever the model computes."""
        batch = 4
        probe = copy.deepcopy(self)
        probe.train()
        spec = self.spec
        width = sum(self.layout.table_dim(d) for d in spec.embedding_dims)
        pooled = torch.zeros(batch, width, requires_grad=True)
        inputs = ModelInput(torch.zeros(batch, spec.num_dense), pooled, spec, self.layout)
        with torch.random.fork_rng(), FlopCounterMode(display=False) as counter:
            probe(inputs).sum().backward()
        parameters = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return DenseCost(num_parameters=parameters, flops_per_example=counter.get_total_flops() / batch)
