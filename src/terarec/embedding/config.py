"""The embedding layer's configuration: table configs, optimizer and initialisation configs,
the dynamic and tiered options, and the byte formulas that size them before allocation.

Vocabulary follows TorchRec (``num_embeddings``, ``embedding_dim``, ``feature_names``,
``pooling``). Shape symbols, library-wide: ``B`` batch, ``N`` IDs in the batch
(``len(values)``), ``D`` embedding dim, ``R`` table rows, ``U`` distinct rows in a batch.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from terarec.embedding.memory import MemoryEstimate

__all__ = [
    "DYNAMIC_ROW_BYTES",
    "DYNAMIC_SLOT_BYTES",
    "TIERED_SLOT_BYTES",
    "DataType",
    "DynamicConfig",
    "EmbeddingTableConfig",
    "EvictionPolicy",
    "InitConfig",
    "InitType",
    "OptimizerConfig",
    "OptimizerType",
    "PoolingType",
    "TieredConfig",
    "dynamic_map_slots",
    "tiered_bookkeeping_bytes",
]

# Bytes per row of a dynamic table's map: row_ids (int64), last_seen (int64), frequency
# (uint32), free_rows (int64); per hash slot: slot_keys and slot_rows (int64 each).
DYNAMIC_ROW_BYTES = 8 + 8 + 4 + 8
DYNAMIC_SLOT_BYTES = 8 + 8


def dynamic_map_slots(num_embeddings: int) -> int:
    """Hash-map slots of a dynamic table: the power of two at or above ``2 * num_embeddings``
    (load at most 1/2)."""
    return 1 << (2 * num_embeddings - 1).bit_length()


# RAM per cache slot of a tiered table besides the row: its row and stamp (int64 each), use
# and dirty flags (a byte each) and a free-list entry (int64).
TIERED_SLOT_BYTES = 8 + 8 + 1 + 1 + 8


def tiered_bookkeeping_bytes(num_embeddings: int, cache_slots: int, record_bytes: int) -> int:
    """RAM a tiered table holds besides its cached rows: per row, the row -> slot map (``int32``)
    and two bits (rows held by the file, rows changed since the last snapshot); per cache slot,
    its row and stamp (``int64`` each), use and dirty flags (a byte each) and a free-list entry
    (``int64``); and one record buffer, an I/O report and the clock hand."""
    per_row = 4 * num_embeddings + 2 * ((num_embeddings + 7) // 8)
    per_slot = TIERED_SLOT_BYTES * cache_slots
    return per_row + per_slot + record_bytes + 6 * 8 + 2 * 8


class PoolingType(enum.Enum):
    """How the rows of one bag combine into one vector."""

    SUM = "sum"
    MEAN = "mean"


class DataType(enum.Enum):
    """How a table stores its weights or its optimizer state (TorchRec's ``DataType``).

    ``FP32`` is ``float32``. ``BF16`` is bfloat16: ``float32``'s sign and 8-bit exponent with
    a 7-bit mantissa, kept as the high half of a ``float32`` in a ``uint16`` (numba has no
    16-bit float), so it halves the bytes a row takes in RAM, in checkpoints and through the
    memory bus. The kernels compute in ``float32`` and write ``BF16`` back with stochastic
    rounding (up with probability equal to the dropped fraction, so small updates are not
    lost on average), drawn from a counter-based hash of ``(table seed, step, row, column)``:
    runs stay bit-identical. bfloat16 keeps ``float32``'s range, so Adagrad's sums of squared
    gradients neither underflow nor overflow as they would in ``float16``.

    Example::

        >>> DataType.BF16.itemsize, DataType("fp32").numpy_dtype
        (2, dtype('float32'))
    """

    FP32 = "fp32"
    BF16 = "bf16"

    @property
    def itemsize(self) -> int:
        """Bytes per stored value."""
        return 4 if self is DataType.FP32 else 2

    @property
    def numpy_dtype(self) -> np.dtype:
        """The NumPy dtype of the stored array (``uint16`` holding bfloat16 bits for ``BF16``)."""
        return np.dtype(np.float32) if self is DataType.FP32 else np.dtype(np.uint16)


class OptimizerType(enum.Enum):
    """Sparse optimizers fused into :meth:`EmbeddingTable.apply_gradients`.

    State floats per row: ``SGD`` 0, ``ROWWISE_ADAGRAD`` 1, ``ADAGRAD`` ``D``, ``ADAM`` ``2 D``.
    """

    SGD = "sgd"
    ADAGRAD = "adagrad"
    ROWWISE_ADAGRAD = "rowwise_adagrad"
    ADAM = "adam"


class InitType(enum.Enum):
    """Row initialisation. ``UNIFORM`` draws from ``[-scale, scale]``, ``NORMAL`` from ``N(0, scale^2)``."""

    UNIFORM = "uniform"
    NORMAL = "normal"
    ZEROS = "zeros"


@dataclass(frozen=True)
class OptimizerConfig:
    """A sparse optimizer and its hyper-parameters.

    Update rules, for the gradient ``g`` of a row accumulated over every occurrence of its
    ID in the batch (``lr`` is ``learning_rate``):

    - ``SGD``: ``w -= lr * g``
    - ``ADAGRAD``: ``s += g^2; w -= lr * g / (sqrt(s) + eps)`` (as ``torch.optim.Adagrad``)
    - ``ROWWISE_ADAGRAD``: ``s += mean(g^2); w -= lr * g / (sqrt(s) + eps)``, one ``s`` per row
      (as FBGEMM's ``EXACT_ROWWISE_ADAGRAD``)
    - ``ADAM``: ``torch.optim.SparseAdam``'s rule, bias-corrected with the table's step count

    Args:
        type (OptimizerType, optional): the rule. Default: ``OptimizerType.ROWWISE_ADAGRAD``
        learning_rate (float, optional): step size. Default: ``0.05``
        eps (float, optional): added to the denominator of the adaptive rules. Default: ``1e-8``
        beta1 (float, optional): Adam's first-moment decay. Default: ``0.9``
        beta2 (float, optional): Adam's second-moment decay. Default: ``0.999``
        initial_accumulator_value (float, optional): starting value of Adagrad state. Default: ``0.0``

    Example::

        >>> OptimizerConfig(OptimizerType.ADAGRAD).state_width(16)
        16
    """

    type: OptimizerType = OptimizerType.ROWWISE_ADAGRAD
    learning_rate: float = 0.05
    eps: float = 1e-8
    beta1: float = 0.9
    beta2: float = 0.999
    initial_accumulator_value: float = 0.0

    def __post_init__(self) -> None:
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ValueError(f"learning_rate must be a positive finite number, got {self.learning_rate}")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.initial_accumulator_value < 0:
            raise ValueError(f"initial_accumulator_value must be >= 0, got {self.initial_accumulator_value}")

    def state_width(self, embedding_dim: int) -> int:
        """Optimizer state floats stored per row."""
        return {
            OptimizerType.SGD: 0,
            OptimizerType.ROWWISE_ADAGRAD: 1,
            OptimizerType.ADAGRAD: embedding_dim,
            OptimizerType.ADAM: 2 * embedding_dim,
        }[self.type]


@dataclass(frozen=True)
class InitConfig:
    """How a table's rows start.

    Row ``r`` of a table is a pure function of ``(seed, table name, r)`` (a counter-based
    generator), so a row initialises identically whether the table is whole, a shard, tiered
    or created on demand.

    Args:
        type (InitType, optional): the distribution. Default: ``InitType.UNIFORM``
        scale (float, optional): bound (uniform) or standard deviation (normal); ``None``
            means ``sqrt(1 / num_embeddings)``, DLRM's choice. Default: ``None``
    """

    type: InitType = InitType.UNIFORM
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.scale is not None and not (self.scale >= 0 and math.isfinite(self.scale)):
            raise ValueError(f"init scale must be a non-negative finite number, got {self.scale}")

    def scale_for(self, num_embeddings: int) -> float:
        return self.scale if self.scale is not None else math.sqrt(1.0 / num_embeddings)


class EvictionPolicy(enum.Enum):
    """Which rows a full dynamic table gives up first: least frequently (``LFU``) or least
    recently (``LRU``) used."""

    LFU = "lfu"
    LRU = "lru"


@dataclass(frozen=True)
class DynamicConfig:
    """Makes a table collisionless and growing: each admitted ID gets a row of its own.

    ``num_embeddings`` becomes the table's capacity. An ID not yet in the table is counted in a
    count-min sketch (``sketch_depth`` x ``sketch_width`` counters) and admitted once seen
    ``min_count`` times, then with probability ``admit_probability`` per sighting (Persia's
    knob; drawn from a counter-based generator, so runs are deterministic). Unadmitted IDs read
    as a zero vector and receive no update. Rows not seen for ``ttl_steps`` training steps are
    evicted; when the table is full, rows are evicted by ``eviction`` policy to make room.

    Args:
        min_count (int, optional): sightings before an ID may be admitted. Default: ``1``
        admit_probability (float, optional): chance of admission per sighting once
            ``min_count`` is reached. Default: ``1.0``
        ttl_steps (int, optional): evict rows unseen for this many steps; ``None`` keeps them.
            Default: ``None``
        eviction (EvictionPolicy, optional): victims when full. Default: ``EvictionPolicy.LFU``
        sketch_width (int, optional): counters per sketch row. Default: ``1 << 20``
        sketch_depth (int, optional): sketch rows (hash functions). Default: ``4``
        evict_fraction (float, optional): when full, free at least this fraction of the
            capacity at once, so eviction scans are rare. Default: ``0.01``

    Example::

        >>> DynamicConfig(min_count=2, ttl_steps=1000).eviction
        <EvictionPolicy.LFU: 'lfu'>
    """

    min_count: int = 1
    admit_probability: float = 1.0
    ttl_steps: int | None = None
    eviction: EvictionPolicy = EvictionPolicy.LFU
    sketch_width: int = 1 << 20
    sketch_depth: int = 4
    evict_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        if not 0.0 < self.admit_probability <= 1.0:
            raise ValueError(f"admit_probability must be in (0, 1], got {self.admit_probability}")
        if self.ttl_steps is not None and self.ttl_steps < 1:
            raise ValueError(f"ttl_steps must be >= 1 or None, got {self.ttl_steps}")
        if self.sketch_width < 1 or self.sketch_depth < 1:
            raise ValueError(f"sketch_width and sketch_depth must be >= 1, got {self.sketch_width}, {self.sketch_depth}")
        if not 0.0 < self.evict_fraction <= 1.0:
            raise ValueError(f"evict_fraction must be in (0, 1], got {self.evict_fraction}")

    def sketch_bytes(self) -> int:
        """Bytes of the admission sketch (``uint32`` counters); none when every ID is admitted at once."""
        if self.min_count == 1 and self.admit_probability == 1.0:
            return 0
        return 4 * self.sketch_width * self.sketch_depth

    def mapper_bytes(self, num_embeddings: int) -> int:
        """Bytes the ID map of a table of this capacity will hold, computed before allocating it:
        ``16`` per hash slot (``2 C`` to ``4 C`` slots), ``28`` per row, and the sketch with its
        seeds. Buffers of one mapping call (``O(N)``) are not included."""
        sketch = self.sketch_bytes()
        seeds = 8 * self.sketch_depth if sketch else 0
        slots = DYNAMIC_SLOT_BYTES * dynamic_map_slots(num_embeddings)
        return slots + DYNAMIC_ROW_BYTES * num_embeddings + sketch + seeds


@dataclass(frozen=True)
class TieredConfig:
    """Keeps every row (weights and optimizer state) in a file on local disk and only the hot
    ones in a RAM cache of ``cache_bytes``: for tables larger than memory.

    Args:
        cache_bytes (int): RAM for cached rows (weights and optimizer state).
        full_snapshot_every (int, optional): checkpoints between full copies of the table
            file; the ones between write only the rows changed since the last. Default: ``8``

    Example::

        >>> TieredConfig(cache_bytes=1 << 30).full_snapshot_every
        8
    """

    cache_bytes: int
    full_snapshot_every: int = 8

    def __post_init__(self) -> None:
        if self.cache_bytes < 1:
            raise ValueError(f"cache_bytes must be >= 1, got {self.cache_bytes}")
        if self.full_snapshot_every < 1:
            raise ValueError(f"full_snapshot_every must be >= 1, got {self.full_snapshot_every}")


@dataclass(frozen=True)
class EmbeddingTableConfig:
    """One embedding table: its size, the features that read it, and how it learns.

    Several features may share one table (e.g. ``user_id`` and ``clicked_by_user_id``).

    Args:
        name (str): table name, unique in a collection.
        num_embeddings (int): rows ``R``.
        embedding_dim (int): row width ``D``.
        feature_names (tuple[str, ...]): the sparse features looked up in this table.
        pooling (PoolingType, optional): how a bag's rows combine. Default: ``PoolingType.SUM``
        optimizer (OptimizerConfig, optional): the fused sparse optimizer. Default: row-wise Adagrad
        init (InitConfig, optional): row initialisation. Default: uniform ``±sqrt(1/R)``
        dynamic (DynamicConfig, optional): make the table collisionless and growing, with
            ``num_embeddings`` as its capacity; ``None`` hashes IDs into a fixed row range.
            Default: ``None``
        tiered (TieredConfig, optional): keep the rows in a file on disk behind a RAM cache;
            ``None`` keeps them all in RAM. Default: ``None``
        weights_dtype (DataType, optional): storage of the weights. Default: ``DataType.FP32``
        state_dtype (DataType, optional): storage of the optimizer state. Default: ``DataType.FP32``

    Example::

        >>> cfg = EmbeddingTableConfig("t_user", num_embeddings=1000, embedding_dim=16, feature_names=("user",))
        >>> cfg.memory_estimate().ram_bytes  # 1000 x 16 float32 weights + 1000 row-wise Adagrad floats
        68000
    """

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: tuple[str, ...]
    pooling: PoolingType = PoolingType.SUM
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    init: InitConfig = field(default_factory=InitConfig)
    dynamic: DynamicConfig | None = None
    tiered: TieredConfig | None = None
    weights_dtype: DataType = DataType.FP32
    state_dtype: DataType = DataType.FP32

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("table name must be non-empty")
        if self.num_embeddings < 1:
            raise ValueError(f"table {self.name!r}: num_embeddings must be >= 1, got {self.num_embeddings}")
        if self.embedding_dim < 1:
            raise ValueError(f"table {self.name!r}: embedding_dim must be >= 1, got {self.embedding_dim}")
        if not self.feature_names:
            raise ValueError(f"table {self.name!r}: feature_names must name at least one feature")
        for key in ("weights_dtype", "state_dtype"):
            if not isinstance(getattr(self, key), DataType):
                raise ValueError(f"table {self.name!r}: {key} must be a DataType, got {getattr(self, key)!r}")
        if self.tiered is not None and self.weights_dtype is not self.state_dtype:
            # A tiered file's records are one array of weights then state: one dtype.
            raise ValueError(
                f"table {self.name!r}: a tiered table stores weights and state in one dtype, got "
                f"weights_dtype={self.weights_dtype.value} and state_dtype={self.state_dtype.value}"
            )

    @property
    def row_bytes(self) -> int:
        """Bytes of one row: weights and optimizer state, each at its :class:`DataType`."""
        state = self.optimizer.state_width(self.embedding_dim)
        return self.weights_dtype.itemsize * self.embedding_dim + self.state_dtype.itemsize * state

    def memory_estimate(self) -> MemoryEstimate:
        """Bytes this table will hold once allocated, per tier.

        In RAM: every row, or for a tiered table its cache plus its bookkeeping
        (:func:`tiered_bookkeeping_bytes`); on disk: every row of a tiered table. A dynamic table adds its
        ID map, per-row metadata and admission sketch.
        """
        rows = self.num_embeddings
        if self.tiered is None:
            estimate = MemoryEstimate(ram_bytes=rows * self.row_bytes, disk_bytes=0)
        else:
            slots = min(self.tiered.cache_bytes // self.row_bytes, rows)
            bookkeeping = tiered_bookkeeping_bytes(rows, slots, self.row_bytes)
            estimate = MemoryEstimate(slots * self.row_bytes + bookkeeping, disk_bytes=rows * self.row_bytes)
        if self.dynamic is not None:
            estimate += MemoryEstimate(self.dynamic.mapper_bytes(rows), 0)
        return estimate
