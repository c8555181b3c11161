"""The root configuration of a training run, and how it is loaded.

One typed tree, ``Config``, with a section per layer: ``data`` (:class:`~terarec.data.DataConfig`),
``embedding`` (:class:`EmbeddingConfig`), ``model`` (:class:`~terarec.models.ModelConfig`),
``sharding`` (:class:`~terarec.sharding.ShardingConfig`) and ``train`` (:class:`TrainConfig`).
It loads from a YAML file, then dotted command-line overrides apply on top
(``train.batch_size=4096``); every field has a working default, so an empty config trains on
synthetic data.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from terarec._dataclass_codec import from_mapping, to_mapping, with_override
from terarec.data import DataConfig
from terarec.embedding import (
    DataType,
    DeepHashConfig,
    DynamicConfig,
    InitConfig,
    OptimizerConfig,
    PoolingType,
    TieredConfig,
)
from terarec.errors import ConfigError
from terarec.models import ModelConfig
from terarec.sharding import ShardingConfig

__all__ = [
    "Config",
    "DenseOptimizerType",
    "DensePrecision",
    "EarlyStoppingConfig",
    "EmbeddingConfig",
    "LRDecay",
    "RankingConfig",
    "RankingLoss",
    "StreamConfig",
    "StoppingMetric",
    "TableKind",
    "TableSpec",
    "TaskType",
    "TrainConfig",
    "load_config",
]


class DenseOptimizerType(enum.Enum):
    """torch optimizers for the dense network."""

    ADAM = "adam"
    ADAGRAD = "adagrad"
    SGD = "sgd"


class DensePrecision(enum.Enum):
    """Arithmetic of the dense network. ``BF16`` runs it under ``torch.autocast`` in bfloat16
    (its weights and optimizer stay float32; embedding tables store what
    ``embedding.weights_dtype`` and ``embedding.state_dtype`` say)."""

    FP32 = "fp32"
    BF16 = "bf16"


class LRDecay(enum.Enum):
    """How the dense learning rate falls after warm-up: not at all, linearly to zero at the
    last step, or along a half cosine to zero."""

    NONE = "none"
    LINEAR = "linear"
    COSINE = "cosine"


class StoppingMetric(enum.Enum):
    """The validation metric that picks the best model: AUC, or for retrieval and ranking NDCG@10
    (and recall@10 for retrieval) (higher is better), or log loss (lower is better)."""

    AUC = "auc"
    LOG_LOSS = "logloss"
    NDCG_AT_10 = "ndcg@10"
    RECALL_AT_10 = "recall@10"

    @property
    def higher_is_better(self) -> bool:
        return self is not StoppingMetric.LOG_LOSS


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """``train.early_stopping``: validation picks the model, and stops training once it stops improving.

    Args:
        metric (StoppingMetric, optional): the validation metric that picks the best model:
            ``auc``, ``logloss``, ``ndcg@10``, or for retrieval ``recall@10``; ``None`` takes the
            task's own: ``auc`` for click prediction, ``ndcg@10`` for retrieval and ranking.
            Default: ``None``
        patience (int, optional): validations without improvement before training stops;
            ``0`` never stops early (the best model is still kept). Default: ``2``
        min_delta (float, optional): improvement that counts. Default: ``0.0``
        restore_best (bool, optional): evaluate, and leave as the run's model, the best
            validated checkpoint rather than the last. Default: ``True``
    """

    metric: StoppingMetric | None = None
    patience: int = 2
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ConfigError(f"train.early_stopping.patience must be >= 0, got {self.patience}")
        if not self.min_delta >= 0:
            raise ConfigError(f"train.early_stopping.min_delta must be >= 0, got {self.min_delta}")


class TaskType(enum.Enum):
    """What a run learns: click prediction, retrieval (an interaction log) or learning to rank
    (grouped rows, ``data.group_col``)."""

    CLICK = "click"
    RETRIEVAL = "retrieval"
    RANKING = "ranking"


class RankingLoss(enum.Enum):
    """Learning-to-rank losses over the rows of a group (as TF-Ranking names them): pairwise
    logistic (RankNet), softmax (listwise cross-entropy against the grades), ApproxNDCG."""

    PAIRWISE_LOGISTIC = "pairwise_logistic"
    SOFTMAX = "softmax"
    APPROX_NDCG = "approx_ndcg"


@dataclass(frozen=True)
class RankingConfig:
    """``train.ranking``: the loss of learning to rank.

    Args:
        loss (RankingLoss, optional): the loss. Default: ``RankingLoss.SOFTMAX``
        temperature (float, optional): ApproxNDCG's smoothing of ranks: a row's rank is one plus
            the sum over the others of ``sigmoid((s_j - s_i) / temperature)``. Default: ``0.1``
    """

    loss: RankingLoss = RankingLoss.SOFTMAX
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ConfigError(f"train.ranking.temperature must be > 0, got {self.temperature!r}")


class TableKind(enum.Enum):
    """What holds a feature's embeddings: rows of a table, or a Deep Hash Embedding network."""

    TABLE = "table"
    DHE = "dhe"


def _check_kind(key: str, kind: TableKind, deep_hash: DeepHashConfig | None, row_settings: Mapping[str, object]) -> None:
    """Refuses settings the table's kind would ignore."""
    if kind is TableKind.TABLE and deep_hash is not None:
        raise ConfigError(f"{key}.deep_hash is set but {key}.kind is 'table'; set {key}.kind=dhe to use it")
    if kind is TableKind.DHE:
        ignored = [name for name, value in row_settings.items() if value is not None]
        if ignored:
            raise ConfigError(
                f"{key}.kind is 'dhe' (no rows: an MLP trained by the dense optimizer), so "
                f"{', '.join(f'{key}.{name}' for name in ignored)} cannot apply; remove it or use kind 'table'"
            )


@dataclass(frozen=True)
class TableSpec:
    """An explicitly configured table; unset fields take :class:`EmbeddingConfig`'s defaults.

    Args:
        name (str): table name.
        feature_names (tuple[str, ...]): sparse features that share this table.
        num_embeddings (int, optional): rows; ``None`` sizes it from the data. Default: ``None``
        embedding_dim (int, optional): columns of its embedding. Default: ``None``
        optimizer (OptimizerConfig, optional): Default: ``None``
        pooling (PoolingType, optional): how a bag's rows combine. Default: ``None``
        init (InitConfig, optional): Default: ``None``
        dynamic (DynamicConfig, optional): a collisionless table with admission and eviction;
            ``num_embeddings`` is then its capacity. Default: ``None``
        tiered (TieredConfig, optional): rows on disk behind a RAM cache. Default: ``None``
        weights_dtype (DataType, optional): storage of the weights. Default: ``None``
        state_dtype (DataType, optional): storage of the optimizer state. Default: ``None``
        kind (TableKind, optional): ``table``, or ``dhe`` for Deep Hash Embeddings (no rows;
            the row settings above then must stay unset). Default: ``None`` (``embedding.kind``)
        deep_hash (DeepHashConfig, optional): a ``dhe`` table's encoder and decoder.
            Default: ``None`` (``embedding.deep_hash``)
    """

    name: str
    feature_names: tuple[str, ...]
    num_embeddings: int | None = None
    embedding_dim: int | None = None
    optimizer: OptimizerConfig | None = None
    pooling: PoolingType | None = None
    init: InitConfig | None = None
    dynamic: DynamicConfig | None = None
    tiered: TieredConfig | None = None
    weights_dtype: DataType | None = None
    state_dtype: DataType | None = None
    kind: TableKind | None = None
    deep_hash: DeepHashConfig | None = None

    def check_kind(self, key: str, default: TableKind) -> TableKind:
        """This table's kind (``default`` when unset), after refusing settings it would ignore."""
        kind = self.kind or default
        rows = {name: getattr(self, name) for name in ("num_embeddings", "optimizer", "init", "dynamic", "tiered")}
        rows.update(weights_dtype=self.weights_dtype, state_dtype=self.state_dtype)
        _check_kind(key, kind, self.deep_hash, rows)
        return kind


@dataclass(frozen=True)
class EmbeddingConfig:
    """How the trainer builds embedding tables.

    Every sparse feature not named in ``tables`` gets a table of its own, named after it.
    A table's rows, unless set, are ``rows_per_distinct_id`` times the distinct IDs seen in
    the training data (fewer hash collisions), at least ``min_rows`` and at most ``max_rows``.

    Args:
        embedding_dim (int, optional): columns of every embedding; ``None`` takes the model's
            (:attr:`~terarec.models.RecModel.default_embedding_dim`: 16, 64 for ``two_tower``).
            Default: ``None``
        max_rows (int, optional): most rows of a table sized from the data. Default: ``1_000_000``
        min_rows (int, optional): fewest rows of a table sized from the data. Default: ``16``
        rows_per_distinct_id (float, optional): rows per distinct ID: with ``k``, about
            ``1 - exp(-1/k)`` of the IDs share their row with another (1.6% at 64, 39% at 2),
            which costs real data AUC. Default: ``64.0``
        pooling (PoolingType, optional): how a bag's rows combine, ``sum`` or ``mean``; ``None``
            takes the model's (sum, mean for ``two_tower``). Default: ``None``
        optimizer (OptimizerConfig, optional): every table's sparse optimizer; ``None`` takes the
            model's (:attr:`~terarec.models.RecModel.embedding_optimizer`: row-wise Adagrad at
            ``0.1``, ``0.05`` for LR and Wide & Deep, ``0.01`` for DeepFM and xDeepFM); setting any of its keys
            (``embedding.optimizer.learning_rate=0.1``) starts from row-wise Adagrad at ``0.05``.
            Default: ``None``
        init (InitConfig, optional): Default: uniform ``±sqrt(1/R)``
        dynamic (DynamicConfig, optional): make every table not in ``tables`` collisionless,
            with admission and eviction (``embedding.dynamic.min_count=2``). Default: ``None``
        tiered (TieredConfig, optional): keep every table not in ``tables`` on disk behind a RAM
            cache of ``cache_bytes`` each (``embedding.tiered.cache_bytes=2e9``). Default: ``None``
        weights_dtype (DataType, optional): storage of every table's weights: ``fp32``, or
            ``bf16`` for half the bytes with stochastic rounding (``embedding.weights_dtype=bf16``).
            Default: ``DataType.FP32``
        state_dtype (DataType, optional): storage of the optimizer state, likewise.
            Default: ``DataType.FP32``
        tables (tuple[TableSpec, ...], optional): explicit tables. Default: ``()``
        kind (TableKind, optional): what embeds every feature not in ``tables``: rows of a
            ``table``, or ``dhe``, Deep Hash Embeddings (Kang et al., KDD 2021): hashes and an
            MLP trained with the dense network, parameters independent of the IDs
            (``embedding.kind=dhe``). Default: ``TableKind.TABLE``
        deep_hash (DeepHashConfig, optional): the ``dhe`` tables' encoder and decoder
            (``embedding.deep_hash.num_hashes=1024``). Default: ``None`` (``DeepHashConfig()``)
    """

    embedding_dim: int | None = None
    max_rows: int = 1_000_000
    min_rows: int = 16
    rows_per_distinct_id: float = 64.0
    pooling: PoolingType | None = None
    optimizer: OptimizerConfig | None = None
    init: InitConfig = field(default_factory=InitConfig)
    dynamic: DynamicConfig | None = None
    tiered: TieredConfig | None = None
    weights_dtype: DataType = DataType.FP32
    state_dtype: DataType = DataType.FP32
    tables: tuple[TableSpec, ...] = ()
    kind: TableKind = TableKind.TABLE
    deep_hash: DeepHashConfig | None = None

    def __post_init__(self) -> None:
        kinds = [spec.check_kind(f"embedding.tables[{index}]", self.kind) for index, spec in enumerate(self.tables)]
        # embedding.deep_hash is also the default of the tables declared 'dhe'.
        deep_hash = None if TableKind.DHE in kinds else self.deep_hash
        _check_kind("embedding", self.kind, deep_hash, {"dynamic": self.dynamic, "tiered": self.tiered})
        if self.embedding_dim is not None and self.embedding_dim < 1:
            raise ConfigError(f"embedding.embedding_dim must be >= 1, got {self.embedding_dim}")
        if not 1 <= self.min_rows <= self.max_rows:
            raise ConfigError(
                f"embedding.min_rows and embedding.max_rows need 1 <= min_rows <= max_rows, "
                f"got {self.min_rows} and {self.max_rows}"
            )
        if not self.rows_per_distinct_id > 0:
            raise ConfigError(f"embedding.rows_per_distinct_id must be > 0, got {self.rows_per_distinct_id}")
        if self.tiered is not None and self.weights_dtype is not self.state_dtype:
            raise ConfigError(
                f"embedding.tiered keeps weights and state in one dtype, but embedding.weights_dtype="
                f"{self.weights_dtype.value} and embedding.state_dtype={self.state_dtype.value}"
            )


@dataclass(frozen=True)
class StreamConfig:
    """``train.stream``: continuous training on data files as they arrive in a directory.

    Each file is trained once, in name order (see :mod:`terarec.train.stream`); a writer
    adds a file by writing it under a hidden or ``.tmp`` name and renaming it in.

    Args:
        path (str, optional): the directory to follow; ``None`` trains on ``data.path`` as
            usual. Default: ``None``
        poll_seconds (float, optional): how often to look for a new file. Default: ``1.0``
        idle_seconds (float, optional): stop, after a final checkpoint, once no new file has
            arrived for this long; ``None`` follows the directory until SIGTERM or SIGINT.
            Default: ``None``

    Example::

        >>> StreamConfig(path="incoming/", idle_seconds=600).poll_seconds
        1.0
        >>> StreamConfig(poll_seconds=0)
        Traceback (most recent call last):
        ...
        terarec.errors.ConfigError: train.stream.poll_seconds must be a number > 0, got 0
    """

    path: str | None = None
    poll_seconds: float = 1.0
    idle_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.path is not None and (not isinstance(self.path, str) or not self.path.strip()):
            raise ConfigError(f"train.stream.path must be a non-empty string or null, got {self.path!r}")
        for name in ("poll_seconds", "idle_seconds"):
            value = getattr(self, name)
            if value is None and name == "idle_seconds":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"train.stream.{name} must be a number > 0, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings.

    Args:
        out (str, optional): run directory (metrics, checkpoints, TensorBoard). Default: ``"runs/train"``
        seed (int, optional): seeds tables, the dense network and data order. Default: ``0``
        batch_size (int, optional): examples per step; ``None`` chooses it from the training
            rows (:func:`~terarec.train.schedule.auto_batch_size`). Default: ``None``
        epochs (int, optional): most passes over the training data; ``None`` chooses it from
            the training rows (:func:`~terarec.train.schedule.auto_epochs`), early stopping
            ends sooner. Default: ``None``
        steps (int, optional): stop after this many steps instead of ``epochs``. Default: ``None``
        eval_every (int, optional): steps between validations; ``0`` validates after every
            epoch. Default: ``0``
        early_stopping (EarlyStoppingConfig, optional): see :class:`EarlyStoppingConfig`.
        task (TaskType, optional): what the run learns; ``None`` follows the data: ``retrieval``
            for ``data.format=interactions``, ``ranking`` with ``data.group_col``, else ``click``.
            Default: ``None``
        ranking (RankingConfig, optional): see :class:`RankingConfig`.
        embedding_l2 (float, optional): adds ``embedding_l2`` times the squared norm of each
            example's pooled embeddings (batch mean) to the loss: an L2 penalty on the rows a
            batch touches, each as often as it is looked up. Default: ``0.0``
        weight_decay (float, optional): L2 penalty of the dense network's weights. Default: ``0.0``
        warmup_steps (int, optional): steps over which the dense learning rate rises linearly
            from zero. Default: ``0``
        lr_decay (LRDecay, optional): the dense learning rate after warm-up. Embedding tables
            keep their own fixed rate (``embedding.optimizer.learning_rate``). Default: ``LRDecay.NONE``
        shuffle (bool, optional): reshuffle every epoch (seeded). Default: ``True``
        dense_optimizer (DenseOptimizerType, optional): the torch optimizer of the dense network
            (and of Deep Hash tables). Default: ``DenseOptimizerType.ADAM``
        dense_learning_rate (float, optional): its learning rate. Default: ``1e-3``
        dense_precision (DensePrecision, optional): ``fp32``, or ``bf16`` to run the dense
            network under bfloat16 autocast. Default: ``DensePrecision.FP32``
        eval_batch_size (int, optional): examples per batch when validating and evaluating.
            Default: ``16384``
        checkpoint_every (int, optional): steps between checkpoints; ``0`` writes only the final one.
            Default: ``0``
        checkpoint_seconds (float, optional): also checkpoint once this many seconds have passed
            since the last checkpoint; ``0`` never by time. Default: ``0.0``
        keep_checkpoints (int, optional): newest checkpoints kept. Default: ``2``
        resume (bool, optional): continue from the newest checkpoint in ``out``. Default: ``False``
        log_every (int, optional): steps between progress/TensorBoard updates. Default: ``20``
        progress (bool, optional): show a progress bar. Default: ``True``
        num_threads (int, optional): torch and numba threads; ``None`` uses every core. Default: ``None``
        memory_budget_bytes (int, optional): RAM the tables may use; ``None`` means the memory
            available now. Default: ``None``
        tables_dir (str, optional): local-disk directory for tiered tables' files; ``None``
            means ``OUT/tables``. Default: ``None``
        stream (StreamConfig, optional): continuous training on arriving files; see
            :class:`StreamConfig`.
    """

    out: str = "runs/train"
    seed: int = 0
    batch_size: int | None = None
    epochs: int | None = None
    steps: int | None = None
    eval_every: int = 0
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    task: TaskType | None = None
    ranking: RankingConfig = field(default_factory=RankingConfig)
    embedding_l2: float = 0.0
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_decay: LRDecay = LRDecay.NONE
    shuffle: bool = True
    dense_optimizer: DenseOptimizerType = DenseOptimizerType.ADAM
    dense_learning_rate: float = 1e-3
    dense_precision: DensePrecision = DensePrecision.FP32
    eval_batch_size: int = 16384
    checkpoint_every: int = 0
    checkpoint_seconds: float = 0.0
    keep_checkpoints: int = 2
    resume: bool = False
    log_every: int = 20
    progress: bool = True
    num_threads: int | None = None
    memory_budget_bytes: int | None = None
    tables_dir: str | None = None
    stream: StreamConfig = field(default_factory=StreamConfig)

    def __post_init__(self) -> None:
        positive = {"eval_batch_size": self.eval_batch_size}
        positive |= {"keep_checkpoints": self.keep_checkpoints, "log_every": self.log_every}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {value}")
        for name in ("eval_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("embedding_l2", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "epochs", "steps", "num_threads", "memory_budget_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name} must be >= 1 when set, got {value}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"train.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        seconds = self.checkpoint_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ConfigError(f"train.checkpoint_seconds must be a number >= 0, got {seconds!r}")
        if not isinstance(self.stream, StreamConfig):
            raise ConfigError(f"train.stream must be a StreamConfig, got {type(self.stream).__name__}")
        if not self.dense_learning_rate > 0:
            raise ConfigError(f"train.dense_learning_rate must be > 0, got {self.dense_learning_rate}")


@dataclass(frozen=True)
class Config:
    """The whole run: one section per layer. See each section's class for its keys."""

    data: DataConfig = field(default_factory=DataConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)

    def to_dict(self) -> dict[str, object]:
        return to_mapping(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Config:
        return from_mapping(cls, raw)


def load_config(path: Path | None = None, overrides: Sequence[tuple[str, object]] = ()) -> Config:
    """Reads the YAML file at ``path`` (if any) and applies dotted ``overrides`` in order.

    Args:
        path (Path, optional): a YAML file holding a mapping of sections. Default: ``None``
        overrides (Sequence[tuple[str, object]], optional): ``(dotted key, value)`` pairs; string
            values are parsed by the field's type (``"4096"`` for an int, ``"a,b"`` for a tuple).
            Default: ``()``

    Raises:
        ConfigError: for an unreadable file, an unknown key (with a suggestion) or a bad value.

    Example::

        >>> load_config(overrides=[("train.batch_size", "512"), ("model.dlrm.top_mlp", "32,16")]).train.batch_size
        512
    """
    raw: dict[str, object] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}".replace("\n", " ")) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (data, embedding, model, sharding, train)")
        raw = loaded or {}
    for key, value in overrides:
        raw = with_override(raw, key, value)  # type: ignore[arg-type]
    return from_mapping(Config, raw)
