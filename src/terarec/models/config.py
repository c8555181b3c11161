"""Configuration of the dense models: one section shared by every model, one small section each.

``model.type`` picks the architecture; ``model.dropout``, ``model.batch_norm`` and
``model.activation`` shape every MLP of it; ``model.<type>`` holds what only that model has
(``model.dcnv2.num_layers``). Unused sections keep their defaults and cost nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from terarec._checks import as_names
from terarec.errors import ConfigError

__all__ = [
    "Activation",
    "DCNStructure",
    "DCNv2Config",
    "DLRMConfig",
    "DNNConfig",
    "DeepFMConfig",
    "FinalMLPConfig",
    "InteractionType",
    "ModelConfig",
    "ModelType",
    "TwoTowerConfig",
    "WideDeepConfig",
    "XDeepFMConfig",
]


class ModelType(enum.Enum):
    """Dense architectures on top of the pooled embeddings (see :mod:`terarec.models`)."""

    LR = "lr"
    DNN = "dnn"
    DLRM = "dlrm"
    DCNV2 = "dcnv2"
    DEEPFM = "deepfm"
    WIDE_DEEP = "wide_deep"
    XDEEPFM = "xdeepfm"
    FINALMLP = "finalmlp"
    TWO_TOWER = "two_tower"


class Activation(enum.Enum):
    """Hidden-layer activation of every MLP. ``SMELU`` is Smooth ReLU (Shamir et al., 2022),
    which Google's work on irreproducibility in recommenders found to make runs agree better."""

    RELU = "relu"
    SMELU = "smelu"


class InteractionType(enum.Enum):
    """How DLRM combines its vectors: pairwise dot products, or plain concatenation."""

    DOT = "dot"
    CAT = "cat"


class DCNStructure(enum.Enum):
    """DCN-v2's two layouts: the MLP after the cross network, or beside it."""

    STACKED = "stacked"
    PARALLEL = "parallel"


def _check_widths(key: str, widths: tuple[int, ...], allow_empty: bool = True) -> None:
    if not isinstance(widths, tuple) or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ConfigError(f"{key} must be a list of widths >= 1, got {widths!r}")
    if not allow_empty and not widths:
        raise ConfigError(f"{key} needs at least one width")


def _as_tuple(config: object, name: str) -> tuple[int, ...]:
    value = getattr(config, name)
    if isinstance(value, list):
        value = tuple(value)
        object.__setattr__(config, name, value)
    return value


@dataclass(frozen=True)
class DNNConfig:
    """``model.dnn``: an MLP over the dense features and every embedding side by side.

    Args:
        mlp (tuple[int, ...], optional): hidden widths. Default: ``(256, 128)``
    """

    mlp: tuple[int, ...] = (256, 128)

    def __post_init__(self) -> None:
        _check_widths("model.dnn.mlp", _as_tuple(self, "mlp"), allow_empty=False)


@dataclass(frozen=True)
class DLRMConfig:
    """``model.dlrm``: Meta's DLRM.

    Args:
        bottom_mlp (tuple[int, ...], optional): hidden widths of the dense-feature MLP; a final
            layer projecting to the embedding dim is appended. Default: ``(64,)``
        top_mlp (tuple[int, ...], optional): hidden widths of the MLP over the interaction; a
            final one-unit layer (the logit) is appended. Default: ``(128, 64)``
        interaction (InteractionType, optional): ``dot`` products or ``cat``. Default: ``InteractionType.DOT``
    """

    bottom_mlp: tuple[int, ...] = (64,)
    top_mlp: tuple[int, ...] = (128, 64)
    interaction: InteractionType = InteractionType.DOT

    def __post_init__(self) -> None:
        _check_widths("model.dlrm.bottom_mlp", _as_tuple(self, "bottom_mlp"))
        _check_widths("model.dlrm.top_mlp", _as_tuple(self, "top_mlp"))


@dataclass(frozen=True)
class DCNv2Config:
    """``model.dcnv2``: DCN-v2's cross network and an MLP.

    Args:
        num_layers (int, optional): cross layers. Default: ``3``
        structure (DCNStructure, optional): MLP after (``stacked``) or beside (``parallel``) the
            cross network. Default: ``DCNStructure.PARALLEL``
        low_rank (int, optional): rank of each expert's factorised cross weight (``U V^T``);
            ``None`` uses full matrices. Default: ``64``
        num_experts (int, optional): low-rank experts mixed by a gate (the paper's DCN-Mix, as
            in MLPerf's DLRM-DCNv2); more than one needs ``low_rank``. Default: ``1``
        mlp (tuple[int, ...], optional): hidden widths of the MLP. Default: ``(256, 128)``
    """

    num_layers: int = 3
    structure: DCNStructure = DCNStructure.PARALLEL
    low_rank: int | None = 64
    num_experts: int = 1
    mlp: tuple[int, ...] = (256, 128)

    def __post_init__(self) -> None:
        _check_widths("model.dcnv2.mlp", _as_tuple(self, "mlp"))
        if self.num_layers < 1:
            raise ConfigError(f"model.dcnv2.num_layers must be >= 1, got {self.num_layers}")
        if self.low_rank is not None and self.low_rank < 1:
            raise ConfigError(f"model.dcnv2.low_rank must be >= 1 or null, got {self.low_rank}")
        if self.num_experts < 1:
            raise ConfigError(f"model.dcnv2.num_experts must be >= 1, got {self.num_experts}")
        if self.num_experts > 1 and self.low_rank is None:
            raise ConfigError("model.dcnv2.num_experts > 1 mixes low-rank experts: set model.dcnv2.low_rank too")
        if self.structure is DCNStructure.STACKED and not self.mlp:
            raise ConfigError("model.dcnv2.structure=stacked needs model.dcnv2.mlp widths")


@dataclass(frozen=True)
class DeepFMConfig:
    """``model.deepfm``: DeepFM's factorisation machine and MLP.

    Args:
        mlp (tuple[int, ...], optional): hidden widths. Default: ``(256, 128)``
    """

    mlp: tuple[int, ...] = (256, 128)

    def __post_init__(self) -> None:
        _check_widths("model.deepfm.mlp", _as_tuple(self, "mlp"))


@dataclass(frozen=True)
class WideDeepConfig:
    """``model.wide_deep``: Wide & Deep.

    Args:
        mlp (tuple[int, ...], optional): hidden widths of the deep part. Default: ``(256, 128)``
    """

    mlp: tuple[int, ...] = (256, 128)

    def __post_init__(self) -> None:
        _check_widths("model.wide_deep.mlp", _as_tuple(self, "mlp"), allow_empty=False)


@dataclass(frozen=True)
class XDeepFMConfig:
    """``model.xdeepfm``: xDeepFM's compressed interaction network (CIN) and MLP.

    Args:
        cin_layers (tuple[int, ...], optional): feature maps per CIN layer. Default: ``(64, 64)``
        split_half (bool, optional): each CIN layer but the last sends half its maps to the
            output and half to the next layer, as in the paper. Default: ``True``
        mlp (tuple[int, ...], optional): hidden widths. Default: ``(256, 128)``
    """

    cin_layers: tuple[int, ...] = (64, 64)
    split_half: bool = True
    mlp: tuple[int, ...] = (256, 128)

    def __post_init__(self) -> None:
        _check_widths("model.xdeepfm.cin_layers", _as_tuple(self, "cin_layers"), allow_empty=False)
        _check_widths("model.xdeepfm.mlp", _as_tuple(self, "mlp"))
        if self.split_half and any(w % 2 for w in self.cin_layers[:-1]):
            raise ConfigError(
                f"model.xdeepfm.split_half needs even cin_layers widths (all but the last), got {list(self.cin_layers)}"
            )


@dataclass(frozen=True)
class FinalMLPConfig:
    """``model.finalmlp``: FinalMLP's two gated MLP streams and their bilinear fusion.

    Args:
        mlp1 (tuple[int, ...], optional): hidden widths of the first stream. Default: ``(256, 128)``
        mlp2 (tuple[int, ...], optional): hidden widths of the second stream. Default: ``(256, 128)``
        num_heads (int, optional): heads of the bilinear aggregation; must divide both streams'
            output widths. Default: ``1``
        feature_selection (bool, optional): gate each stream's input by a learned function of
            the features, as in the paper. Default: ``True``
    """

    mlp1: tuple[int, ...] = (256, 128)
    mlp2: tuple[int, ...] = (256, 128)
    num_heads: int = 1
    feature_selection: bool = True

    def __post_init__(self) -> None:
        _check_widths("model.finalmlp.mlp1", _as_tuple(self, "mlp1"), allow_empty=False)
        _check_widths("model.finalmlp.mlp2", _as_tuple(self, "mlp2"), allow_empty=False)
        if self.num_heads < 1 or self.mlp1[-1] % self.num_heads or self.mlp2[-1] % self.num_heads:
            raise ConfigError(
                f"model.finalmlp.num_heads ({self.num_heads}) must be >= 1 and divide the last widths of "
                f"mlp1 ({self.mlp1[-1]}) and mlp2 ({self.mlp2[-1]})"
            )


@dataclass(frozen=True)
class TwoTowerConfig:
    """``model.two_tower``: a user tower and an item tower, each an MLP over its features' embeddings
    ending in an L2-normalised vector; a pair's score is their dot product over ``temperature``.

    Args:
        user_features (tuple[str, ...], optional): the user tower's features; empty takes them from
            the interaction log (the user column, its side features and ``history``). Default: ``()``
        item_features (tuple[str, ...], optional): the item tower's features; empty takes them from
            the log (the item column and its side features). Default: ``()``
        mlp (tuple[int, ...], optional): hidden widths of each tower; none makes each tower one
            linear map of its embeddings. Default: ``()``
        output_dim (int, optional): the width of the user and item vectors. Default: ``64``
        temperature (float, optional): divides the cosine similarity of a pair. Default: ``0.2``
        log_q_correction (bool, optional): subtract the log of each item's sampling probability
            from its in-batch logit (Yi et al., RecSys 2019), so popular items are not
            over-penalised as negatives. Default: ``True``
        uniform_negatives (int, optional): items drawn uniformly from the catalogue for each
            batch (on each rank) and added to the in-batch negatives, so that tail items are
            pushed away from users too (mixed negative sampling, Yang et al., WWW 2020); the
            log-Q correction then counts both ways an item enters a batch. Default: ``0``

    Example::

        >>> TwoTowerConfig(temperature=0)
        Traceback (most recent call last):
        ...
        terarec.errors.ConfigError: model.two_tower.temperature must be > 0, got 0
    """

    user_features: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()
    mlp: tuple[int, ...] = ()
    output_dim: int = 64
    temperature: float = 0.2
    log_q_correction: bool = True
    uniform_negatives: int = 0

    def __post_init__(self) -> None:
        for name in ("user_features", "item_features"):
            as_names(self, name, f"model.two_tower.{name}")
        both = set(self.user_features) & set(self.item_features)
        if both:
            raise ConfigError(f"model.two_tower: {sorted(both)} are in both user_features and item_features")
        _check_widths("model.two_tower.mlp", _as_tuple(self, "mlp"))
        if isinstance(self.output_dim, bool) or not isinstance(self.output_dim, int) or self.output_dim < 1:
            raise ConfigError(f"model.two_tower.output_dim must be an integer >= 1, got {self.output_dim!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ConfigError(f"model.two_tower.temperature must be > 0, got {self.temperature!r}")
        if isinstance(self.uniform_negatives, bool) or not isinstance(self.uniform_negatives, int) or self.uniform_negatives < 0:
            raise ConfigError(f"model.two_tower.uniform_negatives must be an integer >= 0, got {self.uniform_negatives!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Which dense model to build, and how its MLPs look.

    Args:
        type (ModelType, optional): the architecture. Default: ``ModelType.DCNV2``
        dropout (float, optional): dropout after every hidden layer of every MLP, in ``[0, 1)``.
            Default: ``0.0``
        batch_norm (bool, optional): batch normalisation before every hidden activation.
            Default: ``False``
        activation (Activation, optional): hidden activation. Default: ``Activation.RELU``
        smelu_beta (float, optional): half-width of SmeLU's quadratic region. Default: ``1.0``
        dnn (DNNConfig, optional): see :class:`DNNConfig`.
        dlrm (DLRMConfig, optional): see :class:`DLRMConfig`.
        dcnv2 (DCNv2Config, optional): see :class:`DCNv2Config`.
        deepfm (DeepFMConfig, optional): see :class:`DeepFMConfig`.
        wide_deep (WideDeepConfig, optional): see :class:`WideDeepConfig`.
        xdeepfm (XDeepFMConfig, optional): see :class:`XDeepFMConfig`.
        finalmlp (FinalMLPConfig, optional): see :class:`FinalMLPConfig`.
        two_tower (TwoTowerConfig, optional): see :class:`TwoTowerConfig`.

    Example::

        >>> ModelConfig(type=ModelType.DLRM).dlrm.top_mlp
        (128, 64)
    """

    type: ModelType = ModelType.DCNV2
    dropout: float = 0.0
    batch_norm: bool = False
    activation: Activation = Activation.RELU
    smelu_beta: float = 1.0
    dnn: DNNConfig = field(default_factory=DNNConfig)
    dlrm: DLRMConfig = field(default_factory=DLRMConfig)
    dcnv2: DCNv2Config = field(default_factory=DCNv2Config)
    deepfm: DeepFMConfig = field(default_factory=DeepFMConfig)
    wide_deep: WideDeepConfig = field(default_factory=WideDeepConfig)
    xdeepfm: XDeepFMConfig = field(default_factory=XDeepFMConfig)
    finalmlp: FinalMLPConfig = field(default_factory=FinalMLPConfig)
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.smelu_beta > 0:
            raise ConfigError(f"model.smelu_beta must be > 0, got {self.smelu_beta!r}")
