"""Embedding tables composed of a row mapper, a row storage and the fused kernels.

:class:`RowTable` composes the three stages every table kind shares: a
:class:`~terarec.embedding.row_mapping.RowMapper` (IDs → rows), a
:class:`~terarec.embedding.storage.RowStorage` (rows → slots holding weights and state, in RAM
or a RAM cache over a file) and the numba kernels of :mod:`terarec.embedding._pooling_kernels` and
:mod:`terarec.embedding._update_kernels`
(pooling and fused updates over slots). :class:`FixedTable` hashes IDs into a fixed row range;
the dynamic table (:mod:`terarec.embedding.dynamic_table`) maps them without collisions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from terarec.embedding import _dedupe_kernels, _hashing, _pooling_kernels, _update_kernels
from terarec.embedding.config import EmbeddingTableConfig, OptimizerType, PoolingType
from terarec.embedding.memory import MemoryEstimate
from terarec.embedding.row_mapping import HashedRowMapper, RowMapper
from terarec.embedding.storage import RamRowStorage, RowStorage
from terarec.embedding.tiered import TieredRowStorage
from terarec.embedding.types import EmbeddingTable, PreparedIds

__all__ = ["FixedTable", "RowTable", "build_storage", "jagged_arrays", "storage_arguments"]

_FORMAT_VERSION = 1
# Keys added to the manifest after format 1 was written, with the value they had before.
_MANIFEST_DEFAULTS = {"weights_dtype": "fp32", "state_dtype": "fp32"}


def jagged_arrays(values: torch.Tensor, offsets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Checks a jagged ID batch once and returns it as C-contiguous ``int64`` NumPy arrays
    (views of the tensors when they are already contiguous).

    Raises:
        TypeError: if ``values`` or ``offsets`` is not an ``int64`` tensor.
        ValueError: if either is not 1-D on the CPU, or ``offsets`` does not run
            non-decreasing from 0 to ``len(values)``.
    """
    arrays = []
    for name, tensor in (("values", values), ("offsets", offsets)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype != torch.int64:
            raise TypeError(f"{name} must be an int64 tensor, got {tensor.dtype}")
        if tensor.dim() != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
        if tensor.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU, got device {tensor.device}")
        arrays.append(np.ascontiguousarray(tensor.numpy()))
    ids, bounds = arrays
    if bounds.shape[0] == 0:
        raise ValueError("offsets must hold B + 1 >= 1 elements, got an empty tensor")
    if bounds[0] != 0 or bounds[-1] != ids.shape[0]:
        raise ValueError(f"offsets must run from 0 to len(values)={ids.shape[0]}, got {bounds[0]}..{bounds[-1]}")
    steps = np.diff(bounds)
    if steps.size and steps.min() < 0:
        bag = int(np.argmax(steps < 0))
        raise ValueError(
            f"offsets must be non-decreasing, got offsets[{bag}]={bounds[bag]} > offsets[{bag + 1}]={bounds[bag + 1]}"
        )
    return ids, bounds


def storage_arguments(config: EmbeddingTableConfig, seed: int) -> tuple[tuple[object, ...], float]:
    """``((rows, dim, state width, init, table seed), initial state)``: what any storage of
    ``config``'s rows is built from."""
    optimizer = config.optimizer
    adagrad = optimizer.type in (OptimizerType.ADAGRAD, OptimizerType.ROWWISE_ADAGRAD)
    args = (
        config.num_embeddings,
        config.embedding_dim,
        optimizer.state_width(config.embedding_dim),
        config.init,
        _hashing.derive_table_seed(seed, config.name),
    )
    return args, optimizer.initial_accumulator_value if adagrad else 0.0


def build_storage(config: EmbeddingTableConfig, seed: int, directory: Path | None) -> RowStorage:
    """The storage ``config`` asks for: all rows in RAM, or (``config.tiered``) a RAM cache over
    a file in ``directory``. Row ``r`` starts identically in both."""
    args, initial_state = storage_arguments(config, seed)
    if config.tiered is None:
        return RamRowStorage(
            *args, initial_state=initial_state, weights_dtype=config.weights_dtype, state_dtype=config.state_dtype
        )
    if directory is None:
        raise ValueError(f"table {config.name!r} is tiered: give a directory for its file on local disk")
    return TieredRowStorage(
        *args, config.tiered, directory, config.name, initial_state=initial_state, dtype=config.weights_dtype
    )


class RowTable(EmbeddingTable):
    """The shared machinery of tables built from a :class:`RowMapper` and a :class:`RowStorage`.

    Subclasses choose the mapper; the storage follows ``config.tiered`` unless one is given. Preparing a batch maps
    its IDs (a stateful mapper counts, admits and evicts there), de-duplicates the rows and makes
    them resident in the storage, so a tiered table's disk reads for batch ``n + 1`` happen on
    the prepare thread while batch ``n`` trains.
    """

    kind = "row"
    _rows_may_be_missing = False

    def __init__(
        self,
        config: EmbeddingTableConfig,
        mapper: RowMapper,
        seed: int = 0,
        directory: Path | None = None,
        storage: RowStorage | None = None,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.step = 0
        self._table_seed = _hashing.derive_table_seed(self.seed, config.name)
        self._mapper = mapper
        self._storage = storage if storage is not None else build_storage(config, self.seed, directory)

    @property
    def weights(self) -> np.ndarray:
        """Read-only view of every row, :math:`(R, D)` ``float32``; a copy if the table is tiered
        (read from disk) or stores bfloat16 (decoded)."""
        return self._all_rows()[0]

    @property
    def state(self) -> np.ndarray:
        """Read-only view of every row's optimizer state, :math:`(R, S)` ``float32`` (a copy if
        tiered or bfloat16)."""
        return self._all_rows()[1]

    def _all_rows(self) -> tuple[np.ndarray, np.ndarray]:
        storage = self._storage
        if isinstance(storage, RamRowStorage) and storage.weights.dtype == storage.state.dtype == np.float32:
            weights, state = self._storage.weights.view(), self._storage.state.view()
        else:
            weights, state = self.read_rows(np.arange(self.num_embeddings, dtype=np.int64))
        weights.flags.writeable = state.flags.writeable = False
        return weights, state

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of rows' weights :math:`(N, D)` and optimizer state :math:`(N, S)`, from RAM,
        cache or disk, without changing any cache (e.g. to export or inspect a tiered table)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_embeddings):
            raise ValueError(f"table {self.config.name!r}: rows must be in [0, {self.num_embeddings})")
        return self._storage.read(rows)

    def prepare(self, values: torch.Tensor, offsets: torch.Tensor) -> PreparedIds:
        ids, bounds = jagged_arrays(values, offsets)
        mapping = self._mapper.map(ids, self.training)
        rows = mapping.rows
        unique_rows, occurrence_offsets, occurrences, bag_of = self._dedupe(rows, bounds)
        unique_slots = self._storage.resolve(unique_rows, mapping.new_rows, mapping.new_ids, self.training)
        slots = self._storage.slots_of(rows)
        return PreparedIds(
            rows, bounds, unique_rows, occurrence_offsets, occurrences, bag_of, slots, unique_slots, self.training
        )

    def _dedupe(self, rows: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
        if not (self._rows_may_be_missing and rows.size and rows.min() < 0):
            return _dedupe_kernels.dedupe(rows, bounds, self.num_embeddings)
        # IDs without a row (-1) group under an extra row past the end, dropped afterwards:
        # they are pooled as zeros and never updated.
        keyed = np.where(rows < 0, self.num_embeddings, rows)
        unique_rows, occurrence_offsets, occurrences, bag_of = _dedupe_kernels.dedupe(keyed, bounds, self.num_embeddings + 1)
        return unique_rows[:-1], occurrence_offsets[:-1], occurrences, bag_of

    def _check_prepared(self, prepared: PreparedIds) -> None:
        if not isinstance(prepared, PreparedIds):
            raise TypeError(f"prepared must be PreparedIds, got {type(prepared).__name__}")
        # unique_rows ascend: O(1) guard against IDs prepared by a larger table.
        rows = prepared.unique_rows
        if rows.size and not (rows[0] >= 0 and rows[-1] < self.num_embeddings):
            raise ValueError(f"table {self.config.name!r}: prepared rows fall outside [0, {self.num_embeddings})")

    def lookup_prepared(self, prepared: PreparedIds) -> torch.Tensor:
        self._check_prepared(prepared)
        out = np.empty((prepared.batch_size, self.embedding_dim), dtype=np.float32)
        pool = _pooling_kernels.pool_mean if self.config.pooling is PoolingType.MEAN else _pooling_kernels.pool_sum
        pool(self._storage.weights, prepared.slots, prepared.offsets, out)
        return torch.from_numpy(out)

    def apply_gradients_prepared(self, prepared: PreparedIds, grad_pooled: torch.Tensor) -> None:
        self._check_prepared(prepared)
        expected = (prepared.batch_size, self.embedding_dim)
        if not isinstance(grad_pooled, torch.Tensor):
            raise TypeError(f"grad_pooled must be a torch.Tensor, got {type(grad_pooled).__name__}")
        if grad_pooled.dtype != torch.float32:
            raise TypeError(f"grad_pooled must be float32, got {grad_pooled.dtype}")
        if tuple(grad_pooled.shape) != expected:
            raise ValueError(f"grad_pooled must have shape {expected} (B, D), got {tuple(grad_pooled.shape)}")
        if grad_pooled.device.type != "cpu" or not grad_pooled.is_contiguous():
            raise ValueError("grad_pooled must be a C-contiguous CPU tensor (call .contiguous() first)")
        if not prepared.for_training:
            raise ValueError(
                f"table {self.config.name!r}: the batch was prepared outside training mode; prepare it after train()"
            )
        grad = grad_pooled.detach().numpy()
        self.step += 1
        storage, opt = self._storage, self.config.optimizer
        args = (
            storage.weights,
            storage.state,
            prepared.unique_slots,
            prepared.unique_rows,
            prepared.occurrence_offsets,
            prepared.occurrences,
            prepared.bag_of,
            grad,
            prepared.offsets,
            self.config.pooling is PoolingType.MEAN,
            _hashing.step_rounding_seed(self._table_seed, self.step, storage.first_row),
        )
        lr = float(opt.learning_rate)
        if opt.type is OptimizerType.SGD:
            _update_kernels.sgd_update(*args, lr)
        elif opt.type is OptimizerType.ADAGRAD:
            _update_kernels.adagrad_update(*args, lr, float(opt.eps))
        elif opt.type is OptimizerType.ROWWISE_ADAGRAD:
            _update_kernels.rowwise_adagrad_update(*args, lr, float(opt.eps))
        else:
            step_size = lr * math.sqrt(1.0 - opt.beta2**self.step) / (1.0 - opt.beta1**self.step)
            _update_kernels.adam_update(*args, step_size, float(opt.beta1), float(opt.beta2), float(opt.eps))

    def memory_estimate(self) -> MemoryEstimate:
        return self._storage.memory_estimate() + self._mapper.memory_estimate()

    def _manifest(self) -> dict[str, object]:
        cfg = self.config
        return {
            "format_version": _FORMAT_VERSION,
            "kind": self.kind,
            "name": cfg.name,
            "num_embeddings": cfg.num_embeddings,
            "embedding_dim": cfg.embedding_dim,
            "optimizer": cfg.optimizer.type.value,
            "weights_dtype": cfg.weights_dtype.value,
            "state_dtype": cfg.state_dtype.value,
        }

    def flush(self) -> None:
        """Writes cached changes to the table's file (a tiered table; nothing for RAM)."""
        self._storage.flush()

    def counters(self) -> dict[str, float]:
        """Cumulative counters worth logging: a tiered table's cache hit rate, disk traffic and the
        seconds of each phase of making batches resident."""
        if not isinstance(self._storage, TieredRowStorage):
            return {}
        stats = self._storage.stats()
        return {
            "cache_hit_rate": stats.hit_rate,
            "cache_hits": float(stats.hits),
            "cache_misses": float(stats.misses),
            "disk_read_bytes": float(stats.rows_read * stats.record_bytes),
            "disk_written_bytes": float(stats.rows_written * stats.record_bytes),
            **{f"{phase}_seconds": seconds for phase, seconds in stats.phase_seconds.items()},
        }

    def save_row_map(self, directory: Path) -> None:
        """Writes the ID → row map alone into ``directory`` (nothing for a hashed table), for a
        weights-only export (:func:`~terarec.embedding.frozen.export_tables`)."""
        self._mapper.save(Path(directory))

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self._storage.save(directory)
        self._mapper.save(directory)
        manifest = {**self._manifest(), "step": self.step}
        (directory / "table.json").write_text(json.dumps(manifest, indent=2) + "\n")

    def load(self, directory: Path) -> None:
        directory = Path(directory)
        path = directory / "table.json"
        if not path.is_file():
            raise ValueError(f"{path}: missing; not a saved table directory")
        try:
            saved = json.loads(path.read_text())
            step = int(saved["step"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: malformed table manifest ({err!r})") from err
        for key, expected in self._manifest().items():
            if saved.get(key, _MANIFEST_DEFAULTS.get(key)) != expected:
                raise ValueError(
                    f"{path}: saved {key}={saved.get(key)!r} does not match table {self.config.name!r} ({expected!r})"
                )
        self._storage.load(directory)
        self._mapper.load(directory)
        self.step = step

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"{type(self).__name__}(name={cfg.name!r}, num_embeddings={cfg.num_embeddings}, embedding_dim={cfg.embedding_dim}, "
            f"pooling={cfg.pooling.value}, optimizer={cfg.optimizer.type.value}, "
            f"ram_bytes={self.memory_estimate().ram_bytes})"
        )


class FixedTable(RowTable):
    """An embedding table of ``num_embeddings`` rows addressed by hashed IDs.

    Equals ``torch.nn.EmbeddingBag(num_embeddings, embedding_dim, mode=pooling, sparse=True)``
    fed ``splitmix64(id) % num_embeddings`` and stepped by the matching sparse torch optimizer,
    but the optimizer is fused into :meth:`apply_gradients` (de-duplicate, accumulate each
    row's gradient once, update the row and its state in place) and runs outside autograd.
    Choose it when hash collisions are acceptable; a dynamic table avoids them. With
    ``config.tiered`` the rows live in a file in ``directory`` behind a RAM cache, with
    bit-identical results.

    Args:
        config (EmbeddingTableConfig): size, pooling, optimizer and initialisation.
        seed (int, optional): global seed; the table's rows depend on it and on
            ``config.name`` only. Default: ``0``
        directory (Path, optional): where a tiered table keeps its file. Default: ``None``

    Attributes:
        config (EmbeddingTableConfig): as given.
        step (int): number of :meth:`apply_gradients` calls so far (Adam's bias correction).
        weights (np.ndarray): read-only view of the rows, :math:`(R, D)` ``float32`` (a copy
            read from disk and cache if tiered).
        state (np.ndarray): read-only view of the optimizer state, :math:`(R, S)` ``float32``.

    Shape:
        - values: :math:`(N)` ``int64`` raw IDs, any 64-bit value
        - offsets: :math:`(B + 1)` ``int64``
        - :meth:`lookup` output and ``grad_pooled``: :math:`(B, D)` ``float32``

    Example::

        >>> # bag 0: [3, 3, 9]   bag 1: []   bag 2: [-7]
        >>> values, offsets = torch.tensor([3, 3, 9, -7]), torch.tensor([0, 3, 3, 4])
        >>> table = FixedTable(EmbeddingTableConfig("t", num_embeddings=100, embedding_dim=8, feature_names=("f",)))
        >>> pooled = table.lookup(values, offsets)
        >>> pooled.shape, pooled[1].abs().sum().item()
        (torch.Size([3, 8]), 0.0)
        >>> table.apply_gradients(values, offsets, torch.ones(3, 8))
        >>> table.step
        1
    """

    kind = "fixed"

    def __init__(self, config: EmbeddingTableConfig, seed: int = 0, directory: Path | None = None) -> None:
        if config.dynamic is not None:
            raise ValueError(f"table {config.name!r} has a dynamic config: build a DynamicTable")
        super().__init__(config, HashedRowMapper(config.num_embeddings), seed, directory)
