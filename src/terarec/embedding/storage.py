"""Row storage: where a table's weights and optimizer state live.

A :class:`RowStorage` holds ``weights (R, D)`` and ``state (R, S)`` arrays addressed by
*slots*. :meth:`RowStorage.resolve` turns table rows into slots: the identity for
:class:`RamRowStorage`; a tiered storage (RAM cache over an SSD file) will load missing rows
into its cache there and return cache slots, so kernels never know which storage they touch.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from terarec._files import load_checked_array
from terarec.embedding import _init_kernels
from terarec.embedding._bf16 import bf16_to_float32, float32_to_bf16
from terarec.embedding.config import DataType, InitConfig, InitType
from terarec.embedding.memory import MemoryEstimate

__all__ = ["NO_ROWS", "RamRowStorage", "RowStorage", "as_float32", "encode", "init_arguments", "initialize_rows"]

_INIT_CHUNK_ROWS = 1 << 16
NO_ROWS = np.empty(0, dtype=np.int64)


class RowStorage(abc.ABC):
    """Weights and optimizer state of a table's rows, addressed by slot.

    Attributes:
        weights (np.ndarray): rows, :math:`(R_s, D)` (``R_s`` slots), ``float32`` or bfloat16
            bits in ``uint16`` (:class:`~terarec.embedding.config.DataType`).
        state (np.ndarray): optimizer state, :math:`(R_s, S)`; ``S`` may be 0. Same dtypes.
        first_row (int): the whole table's row that this storage's row 0 is (a row shard's
            first row, else 0); bfloat16 rounding is keyed by the whole table's row.
    """

    weights: np.ndarray
    state: np.ndarray
    first_row: int = 0

    @abc.abstractmethod
    def resolve(
        self,
        unique_rows: np.ndarray,
        new_rows: np.ndarray = NO_ROWS,
        new_ids: np.ndarray = NO_ROWS,
        training: bool = True,
    ) -> np.ndarray:
        """Makes one batch's rows resident and returns their slots.

        Called once per batch, in batch order, possibly on the prepare thread while the
        previous batch trains: the slots of the previous call must stay valid (a cache never
        evicts them). ``new_rows`` (a subset of ``unique_rows``, created by a dynamic table's
        mapper) start from the initial row of their ID instead of their stored content.
        Outside ``training`` nothing is written back.

        Shape:
            - unique_rows: :math:`(U)` distinct rows, ascending
            - new_rows, new_ids: :math:`(M)`
            - output: :math:`(U)` slots
        """

    @abc.abstractmethod
    def slots_of(self, rows: np.ndarray) -> np.ndarray:
        """Slots of ``rows`` (:math:`(N)`, ``-1`` kept as ``-1``), all resolved by the last :meth:`resolve`."""

    @abc.abstractmethod
    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``rows``' current weights :math:`(N, D)` and state :math:`(N, S)`, wherever
        they live; leaves any cache as it is."""

    def flush(self) -> None:
        """Writes every changed row to its backing store (nothing to do for RAM)."""

    @abc.abstractmethod
    def memory_estimate(self) -> MemoryEstimate:
        """Bytes held per tier."""

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Writes weights and state into ``directory``."""

    @abc.abstractmethod
    def load(self, directory: Path) -> None:
        """Restores what :meth:`save` wrote; refuses files of the wrong shape or dtype."""


def init_arguments(init: InitConfig, num_embeddings: int) -> tuple[float, int]:
    """``(scale, kind)``, the arguments of :func:`~terarec.embedding._init_kernels.init_row` for ``init``."""
    kind = {
        InitType.UNIFORM: _init_kernels.INIT_UNIFORM,
        InitType.NORMAL: _init_kernels.INIT_NORMAL,
        InitType.ZEROS: _init_kernels.INIT_ZEROS,
    }[init.type]
    return float(init.scale_for(num_embeddings)), kind


def as_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as ``float32``: itself if it is, decoded from bfloat16 bits (a copy) if ``uint16``."""
    return array if array.dtype == np.float32 else bf16_to_float32(array)


def encode(values: np.ndarray | float, dtype: np.dtype) -> np.ndarray:
    """``float32`` ``values`` in the storage ``dtype``: as they are, or bfloat16 bits rounded to nearest."""
    values = np.asarray(values, dtype=np.float32)
    return values if np.dtype(dtype) == np.float32 else float32_to_bf16(values)


def initialize_rows(out: np.ndarray, first_row: int, init: InitConfig, num_embeddings: int, seed: np.uint64) -> None:
    """Fills ``out`` (``float32`` or bfloat16 bits, rounded to nearest) with rows ``first_row,
    first_row + 1, ...`` in chunks (counter-based, so any row range gives the same values as
    the whole table)."""
    if init.type is InitType.ZEROS:
        out.fill(0)  # +0.0 in both encodings
        return
    kernel = _init_kernels.init_rows_uniform if init.type is InitType.UNIFORM else _init_kernels.init_rows_normal
    scale = float(init.scale_for(num_embeddings))
    for start in range(0, out.shape[0], _INIT_CHUNK_ROWS):
        stop = min(out.shape[0], start + _INIT_CHUNK_ROWS)
        rows = np.arange(first_row + start, first_row + stop, dtype=np.int64)
        kernel(out[start:stop], rows, np.uint64(seed), scale)


class RamRowStorage(RowStorage):
    """All rows in RAM, as two NumPy arrays; slot ``r`` holds row ``r``.

    Row ``r`` starts as a pure function of ``(seed, r)`` (see :func:`~terarec.embedding._init_kernels.init_rows_uniform`),
    filled in chunks without per-row Python objects.

    Args:
        num_embeddings (int): rows ``R``.
        embedding_dim (int): row width ``D``.
        state_width (int): optimizer floats per row ``S`` (``0`` for SGD).
        init (InitConfig): row initialisation.
        seed (int): the table's seed, taken modulo ``2^64`` (see
            :func:`~terarec.embedding._hashing.derive_table_seed`).
        initial_state (float, optional): starting value of every state float. Default: ``0.0``
        first_row (int, optional): the table row slot 0 holds, for a shard of rows
            ``first_row ... first_row + R - 1`` of a larger table. Default: ``0``
        total_rows (int, optional): rows of that whole table (initial values depend on it);
            ``None`` means ``R``. Default: ``None``
        weights_dtype (DataType, optional): storage of the weights. Default: ``DataType.FP32``
        state_dtype (DataType, optional): storage of the state. Default: ``DataType.FP32``

    Attributes:
        weights (np.ndarray): :math:`(R, D)`, ``float32`` or bfloat16 bits (``uint16``).
        state (np.ndarray): :math:`(R, S)`, likewise.
        first_row (int): as given.

    Example::

        >>> storage = RamRowStorage(100, 4, 1, InitConfig(), seed=0, initial_state=0.1)
        >>> storage.weights.shape, storage.state.shape, storage.memory_estimate().ram_bytes
        ((100, 4), (100, 1), 2000)
        >>> storage.resolve(np.array([2, 5], dtype=np.int64)).tolist()
        [2, 5]
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        state_width: int,
        init: InitConfig,
        seed: int,
        initial_state: float = 0.0,
        first_row: int = 0,
        total_rows: int | None = None,
        weights_dtype: DataType = DataType.FP32,
        state_dtype: DataType = DataType.FP32,
    ) -> None:
        if num_embeddings < 1 or embedding_dim < 1 or state_width < 0:
            raise ValueError(
                f"need num_embeddings >= 1, embedding_dim >= 1, state_width >= 0, "
                f"got {num_embeddings}, {embedding_dim}, {state_width}"
            )
        seed64 = np.uint64(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        self.first_row = int(first_row)
        self.weights = np.empty((num_embeddings, embedding_dim), dtype=weights_dtype.numpy_dtype)
        initialize_rows(self.weights, first_row, init, total_rows or num_embeddings, seed64)
        self.state = np.full((num_embeddings, state_width), encode(initial_state, state_dtype.numpy_dtype))
        self._reset_args = (seed64, *init_arguments(init, num_embeddings), np.float32(initial_state))

    def resolve(
        self,
        unique_rows: np.ndarray,
        new_rows: np.ndarray = NO_ROWS,
        new_ids: np.ndarray = NO_ROWS,
        training: bool = True,
    ) -> np.ndarray:
        if new_rows.size:
            _init_kernels.init_rows_at(self.weights, self.state, new_rows, new_ids, *self._reset_args)
        return unique_rows

    def slots_of(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return as_float32(self.weights[rows]), as_float32(self.state[rows])

    def memory_estimate(self) -> MemoryEstimate:
        return MemoryEstimate(ram_bytes=int(self.weights.nbytes + self.state.nbytes), disk_bytes=0)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        np.save(directory / "weights.npy", self.weights, allow_pickle=False)
        np.save(directory / "state.npy", self.state, allow_pickle=False)

    def load(self, directory: Path) -> None:
        directory = Path(directory)
        loaded = {name: load_checked_array(directory / f"{name}.npy", getattr(self, name)) for name in ("weights", "state")}
        # Copy in place, only after both files passed their checks: views of the arrays stay valid.
        for name, array in loaded.items():
            getattr(self, name)[...] = array

    def __repr__(self) -> str:
        rows, dim = self.weights.shape
        return (
            f"RamRowStorage(num_embeddings={rows}, embedding_dim={dim}, state_width={self.state.shape[1]}, "
            f"weights_dtype={self.weights.dtype}, state_dtype={self.state.dtype})"
        )
