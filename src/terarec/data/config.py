"""Configuration of the data layer: where examples come from and how they are read.

:class:`DataConfig` is the ``data`` section of terarec's root configuration; its
``synthetic`` field (:class:`SyntheticConfig`) sets the generator used when no path is given.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from terarec.data.types import BadRowPolicy, DataFormat, DenseTransform
from terarec._checks import as_names
from terarec.errors import ConfigError

__all__ = ["CRITEO_1TB_CARDINALITIES", "DataConfig", "HistoryKind", "InteractionsConfig", "SplitMethod", "SyntheticConfig"]

CRITEO_1TB_CARDINALITIES: tuple[int, ...] = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
)
"""Per sparse feature cardinalities of Criteo 1TB as used by the MLPerf DLRM benchmark."""


def _check_enum(key: str, value: object, enum_type: type) -> None:
    if not isinstance(value, enum_type):
        allowed = ", ".join(repr(m.value) for m in enum_type)  # type: ignore[attr-defined]
        raise ConfigError(f"{key} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class SyntheticConfig:
    """A Criteo-shaped synthetic dataset with power-law ID skew and a known click model.

    See :func:`terarec.data.generate_synthetic`. The defaults give a dataset on which a DLRM
    trains in minutes on one CPU and whose best possible AUC is known.

    Args:
        num_examples (int, optional): training examples. Default: ``2_000_000``
        num_eval_examples (int, optional): evaluation examples. Default: ``100_000``
        num_dense (int, optional): dense features ``I1..``. Default: ``13``
        num_sparse (int, optional): sparse features ``C1..``; their cardinalities cycle through
            :data:`CRITEO_1TB_CARDINALITIES`. Default: ``26``
        max_cardinality (int, optional): cap on every feature's cardinality. Default: ``40_000``
        zipf_exponent (float, optional): exponent of the bounded Zipf law of IDs. Default: ``1.05``
        bag_sizes (tuple[int, ...], optional): ``None`` for one ID per feature, else one bag size
            per sparse feature (multi-hot). Default: ``None``
        seed (int, optional): determines the data completely. Default: ``0``

    Example::

        >>> SyntheticConfig(num_examples=1000).num_sparse
        26
    """

    num_examples: int = 2_000_000
    num_eval_examples: int = 100_000
    num_dense: int = 13
    num_sparse: int = 26
    max_cardinality: int = 40_000
    zipf_exponent: float = 1.05
    bag_sizes: tuple[int, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        p = "data.synthetic."
        for name, low in (("num_examples", 1), ("num_eval_examples", 1), ("num_dense", 0),
                          ("num_sparse", 1), ("max_cardinality", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{p}{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.zipf_exponent, (int, float)) or not 0.0 <= self.zipf_exponent <= 5.0:
            raise ConfigError(f"{p}zipf_exponent must be a number in [0, 5], got {self.zipf_exponent!r}")
        if self.bag_sizes is not None:
            if isinstance(self.bag_sizes, list):
                object.__setattr__(self, "bag_sizes", tuple(self.bag_sizes))
            sizes = self.bag_sizes
            if not isinstance(sizes, tuple) or len(sizes) != self.num_sparse:
                raise ConfigError(f"{p}bag_sizes must hold one size per sparse feature "
                                  f"({self.num_sparse}), got {sizes!r}")
            if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
                raise ConfigError(f"{p}bag_sizes must be integers >= 1, got {sizes!r}")

    def cardinalities(self) -> dict[str, int]:
        """Each sparse feature's name (``C1``, ``C2``, ...) and distinct possible IDs.

        Example::

            >>> SyntheticConfig(num_sparse=3, max_cardinality=1000).cardinalities()
            {'C1': 1000, 'C2': 1000, 'C3': 1000}
        """
        return {
            f"C{f + 1}": min(CRITEO_1TB_CARDINALITIES[f % len(CRITEO_1TB_CARDINALITIES)], self.max_cardinality)
            for f in range(self.num_sparse)
        }


class SplitMethod(enum.Enum):
    """How an interaction log is split into training, validation and evaluation events.

    ``LEAVE_LAST_OUT``: per user, ordered by time then file order, the last event is evaluated,
    the one before validated (users with fewer events keep them for training).
    ``TIME``: one global cut by time: the last ``data.eval_fraction`` of the events are evaluated,
    the last ``data.val_fraction`` of the rest validated. ``RANDOM``: those fractions of the
    events, drawn at random (seeded by ``data.interactions.seed``).
    """

    LEAVE_LAST_OUT = "leave_last_out"
    TIME = "time"
    RANDOM = "random"


class HistoryKind(enum.Enum):
    """Which of the user's training events a training row's ``history`` holds: those ``before`` it
    (by time then file order: no later event), or all ``others`` (for logs whose order means
    nothing, as Last.fm's: no held-out event still, but later training events may)."""

    BEFORE = "before"
    OTHERS = "others"


@dataclass(frozen=True)
class InteractionsConfig:
    """``data.interactions``: how a log of user-item events (``data.format=interactions``) is read,
    filtered, split and turned into the features of a retrieval model.

    Args:
        user_col (str, optional): the user column. Default: ``"user_id"``
        item_col (str, optional): the item column. Default: ``"item_id"``
        time_col (str, optional): the event time column; ``None`` uses ``timestamp`` when the
            file has it, else file order. Default: ``None``
        rating_col (str, optional): the rating column; ``None`` uses ``rating`` when the file has
            it. Default: ``None``
        min_rating (float, optional): events rated below it are dropped (counted); ``None`` keeps
            every event as a positive. Default: ``None``
        min_user_events (int, optional): k-core filter: users with fewer events are dropped, and
            items with fewer than ``min_item_events``, repeatedly until both hold. Default: ``1``
        min_item_events (int, optional): see ``min_user_events``. Default: ``1``
        split (SplitMethod, optional): how events are split (see :class:`SplitMethod`); with
            ``data.eval_path`` it carves validation out of the training file. Default:
            ``SplitMethod.LEAVE_LAST_OUT``
        history_length (int, optional): the ``history`` feature holds the user's last
            ``history_length`` training items before the event; ``0`` leaves it out. Default: ``50``
        history (HistoryKind, optional): ``before``: a training row's history is the user's
            training events before it; ``others``: all its other training events (see
            :class:`HistoryKind`). Queries always see their user's latest events. Default:
            ``HistoryKind.BEFORE``
        user_features (str, optional): a file of user side features keyed by ``user_col``
            (RecBole's ``.user``). Default: ``None``
        item_features (str, optional): a file of item side features keyed by ``item_col``
            (RecBole's ``.item``). Default: ``None``
        seed (int, optional): the seed of ``split: random``. Default: ``0``

    Example::

        >>> InteractionsConfig(split=SplitMethod.TIME).history_length
        50
        >>> InteractionsConfig(history_length=-1)
        Traceback (most recent call last):
        ...
        terarec.errors.ConfigError: data.interactions.history_length must be an integer >= 0, got -1
    """

    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = None
    rating_col: str | None = None
    min_rating: float | None = None
    min_user_events: int = 1
    min_item_events: int = 1
    split: SplitMethod = SplitMethod.LEAVE_LAST_OUT
    history_length: int = 50
    history: HistoryKind = HistoryKind.BEFORE
    user_features: str | None = None
    item_features: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        p = "data.interactions."
        for name in ("user_col", "item_col", "time_col", "rating_col", "user_features", "item_features"):
            value = getattr(self, name)
            if value is None and name not in ("user_col", "item_col"):
                continue
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{p}{name} must be a non-empty string{'' if name in ('user_col', 'item_col') else ' or null'}, got {value!r}")
        if self.user_col == self.item_col:
            raise ConfigError(f"{p}user_col and {p}item_col are both {self.user_col!r}")
        _check_enum(f"{p}split", self.split, SplitMethod)
        _check_enum(f"{p}history", self.history, HistoryKind)
        for name, low in (("min_user_events", 1), ("min_item_events", 1), ("history_length", 0), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{p}{name} must be an integer >= {low}, got {value!r}")
        rating = self.min_rating
        if rating is not None and (isinstance(rating, bool) or not isinstance(rating, (int, float))):
            raise ConfigError(f"{p}min_rating must be a number or null, got {rating!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where training and evaluation examples come from, and how raw files are read.

    Args:
        path (str, optional): ``None`` for synthetic data; else a file, a comma-separated list
            of files, a glob, or a directory (a prepared directory if it holds ``meta.json``,
            else all data files inside, sorted). Default: ``None``
        eval_path (str, optional): evaluation data in the same forms; ``None`` holds out the last
            ``eval_fraction`` of the rows of ``path``. Default: ``None``
        format (DataFormat, optional): ``None`` infers it: a prepared directory, ``.parquet``
            is Parquet, ``.csv`` CSV, ``.tsv``/``.txt`` Criteo, ``.libfm``/``.libsvm`` libFM,
            ``.inter`` (RecBole's atomic files) interactions. Default: ``None``
        label (str, optional): label column of CSV/Parquet files (required there). Default: ``None``
        dense_features (tuple[str, ...], optional): CSV/Parquet dense columns; every other
            column not in ``ignore`` is sparse. Default: ``()``
        ignore (tuple[str, ...], optional): CSV/Parquet columns to leave out. Default: ``()``
        delimiter (str, optional): CSV field delimiter, one character. Default: ``","``
        on_bad_row (BadRowPolicy, optional): stop at a malformed row or skip and count it.
            Default: ``BadRowPolicy.ERROR``
        dense_transform (DenseTransform, optional): how raw dense values become model inputs:
            ``signed_log1p`` (``sign(x) log(1 + |x|)``) or ``none``. Default: ``DenseTransform.SIGNED_LOG1P``
        eval_fraction (float, optional): held-out tail when ``eval_path`` is ``None``, in
            :math:`(0, 1)`. Default: ``0.1``
        val_path (str, optional): validation data (early stopping, the best model); ``None``
            carves it from the training data. Default: ``None``
        val_fraction (float, optional): without ``val_path``, the tail of the training rows
            (after the evaluation split is held out) used for validation, in :math:`[0, 1)`;
            ``0`` validates nothing and keeps the last model. Default: ``0.1``
        label_threshold (float, optional): CSV/Parquet labels are numbers (a rating, a watch
            time) and an example is positive when its label is ``>= label_threshold``; ``None``
            requires labels 0 or 1. Default: ``None``
        bucketize (tuple[str, ...], optional): dense features that also become sparse features
            ``<name>_bucket`` (see :mod:`terarec.data.derived`). Default: ``()``
        bucket_width (float, optional): width of a bucket in transformed units (with the signed
            ``log1p`` transform, 1 makes each bucket span a factor of ``e``). Default: ``1.0``
        crosses (tuple[tuple[str, ...], ...], optional): sparse features to cross, each list of
            two or more becoming the feature ``A_x_B``. Default: ``()``
        libfm_field_map (str, optional): a libFM file's fields: a file of ``index field``
            lines; ``None`` makes each position of a line a field (see :mod:`terarec.data.libfm`).
            Default: ``None``
        libfm_num_features (int, optional): libFM indices must be below it; ``None`` accepts
            any non-negative index. Default: ``None``
        group_col (str, optional): learning to rank: the CSV/Parquet column naming each row's
            query (group); labels are then relevance grades (numbers >= 0), a group's rows are
            kept together, and splits cut between groups (see :mod:`terarec.data.groups`). The
            column is not a feature. Default: ``None``
        interactions (InteractionsConfig, optional): how an interaction log is read and split
            (``format: interactions``).
        synthetic (SyntheticConfig, optional): the generator used when ``path`` is ``None``.

    Example::

        >>> DataConfig(path="train.csv", label="click").format is None
        True
        >>> DataConfig(eval_fraction=1.5)
        Traceback (most recent call last):
        ...
        terarec.errors.ConfigError: data.eval_fraction must be in (0, 1), got 1.5
    """

    path: str | None = None
    eval_path: str | None = None
    format: DataFormat | None = None
    label: str | None = None
    dense_features: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    delimiter: str = ","
    on_bad_row: BadRowPolicy = BadRowPolicy.ERROR
    dense_transform: DenseTransform = DenseTransform.SIGNED_LOG1P
    eval_fraction: float = 0.1
    val_path: str | None = None
    val_fraction: float = 0.1
    label_threshold: float | None = None
    bucketize: tuple[str, ...] = ()
    bucket_width: float = 1.0
    crosses: tuple[tuple[str, ...], ...] = ()
    libfm_field_map: str | None = None
    libfm_num_features: int | None = None
    group_col: str | None = None
    interactions: InteractionsConfig = field(default_factory=InteractionsConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        for name in ("path", "eval_path", "val_path", "label", "libfm_field_map", "group_col"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"data.{name} must be a non-empty string or null, got {value!r}")
        if self.format is not None:
            _check_enum("data.format", self.format, DataFormat)
        _check_enum("data.on_bad_row", self.on_bad_row, BadRowPolicy)
        _check_enum("data.dense_transform", self.dense_transform, DenseTransform)
        for name in ("dense_features", "ignore", "bucketize"):
            as_names(self, name, f"data.{name}")
        if isinstance(self.crosses, list):
            object.__setattr__(self, "crosses", tuple(tuple(c) if isinstance(c, list) else c for c in self.crosses))
        for index, cross in enumerate(self.crosses):
            if not isinstance(cross, tuple) or len(cross) < 2 or not all(isinstance(c, str) and c for c in cross):
                raise ConfigError(f"data.crosses[{index}] must be a list of two or more feature names, got {cross!r}")
        if isinstance(self.bucket_width, bool) or not isinstance(self.bucket_width, (int, float)) or not self.bucket_width > 0:
            raise ConfigError(f"data.bucket_width must be a number > 0, got {self.bucket_width!r}")
        both = set(self.dense_features) & set(self.ignore)
        if both:
            raise ConfigError(f"data.dense_features and data.ignore both name {sorted(both)}")
        if self.label is not None and self.label in set(self.dense_features) | set(self.ignore):
            raise ConfigError(f"data.label {self.label!r} is also in data.dense_features or data.ignore")
        if self.group_col is not None and self.group_col in {self.label, *self.dense_features, *self.ignore}:
            raise ConfigError(f"data.group_col {self.group_col!r} is also the label, a dense feature or ignored")
        if not isinstance(self.delimiter, str) or len(self.delimiter) != 1 or self.delimiter in "\r\n\"":
            raise ConfigError(f"data.delimiter must be one character (not a quote or newline), got {self.delimiter!r}")
        frac = self.eval_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < frac < 1.0:
            raise ConfigError(f"data.eval_fraction must be in (0, 1), got {frac!r}")
        frac = self.val_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {frac!r}")
        threshold = self.label_threshold
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise ConfigError(f"data.label_threshold must be a number or null, got {threshold!r}")
        count = self.libfm_num_features
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ConfigError(f"data.libfm_num_features must be a positive integer or null, got {count!r}")
        if not isinstance(self.interactions, InteractionsConfig):
            raise ConfigError(f"data.interactions must be an InteractionsConfig, got {type(self.interactions).__name__}")
        if not isinstance(self.synthetic, SyntheticConfig):
            raise ConfigError(f"data.synthetic must be a SyntheticConfig, got {type(self.synthetic).__name__}")
