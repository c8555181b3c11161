"""Fixed-size embedding tables: hashed IDs, rows in RAM, a fused sparse optimizer.

:class:`FixedTable` composes the three stages every table kind shares: a
:class:`~terarec.embedding.row_mapping.RowMapper` (IDs → rows), a
:class:`~terarec.embedding.storage.RowStorage` (rows → slots holding weights and state) and
the numba kernels of :mod:`terarec.embedding._kernels` (pooling and fused updates over slots).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from terarec.embedding import _kernels
from terarec.embedding.row_mapping import HashedRowMapper, RowMapper
from terarec.embedding.storage import RamRowStorage, RowStorage
from terarec.embedding.types import (
    EmbeddingTable,
    EmbeddingTableConfig,
    MemoryEstimate,
    OptimizerType,
    PoolingType,
    PreparedIds,
)

__all__ = ["FixedTable", "jagged_arrays"]

_FORMAT_VERSION = 1


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


class FixedTable(EmbeddingTable):
    """An embedding table of ``num_embeddings`` rows in RAM, addressed by hashed IDs.

    Equals ``torch.nn.EmbeddingBag(num_embeddings, embedding_dim, mode=pooling, sparse=True)``
    fed ``splitmix64(id) % num_embeddings`` and stepped by the matching sparse torch optimizer,
    but the optimizer is fused into :meth:`apply_gradients` (de-duplicate, accumulate each
    row's gradient once, update the row and its state in place) and runs outside autograd.
    Choose it when the table fits in RAM and hash collisions are acceptable; a dynamic table
    avoids collisions, a tiered one spills to disk.

    Args:
        config (EmbeddingTableConfig): size, pooling, optimizer and initialisation.
        seed (int, optional): global seed; the table's rows depend on it and on
            ``config.name`` only. Default: ``0``

    Attributes:
        config (EmbeddingTableConfig): as given.
        step (int): number of :meth:`apply_gradients` calls so far (Adam's bias correction).
        weights (np.ndarray): read-only view of the rows, :math:`(R, D)` ``float32``.
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

    def __init__(self, config: EmbeddingTableConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = int(seed)
        self.step = 0
        optimizer = config.optimizer
        adagrad = optimizer.type in (OptimizerType.ADAGRAD, OptimizerType.ROWWISE_ADAGRAD)
        self._mapper: RowMapper = HashedRowMapper(config.num_embeddings)
        self._storage: RowStorage = RamRowStorage(
            config.num_embeddings,
            config.embedding_dim,
            optimizer.state_width(config.embedding_dim),
            config.init,
            _kernels.derive_table_seed(self.seed, config.name),
            initial_state=optimizer.initial_accumulator_value if adagrad else 0.0,
        )

    @property
    def weights(self) -> np.ndarray:
        view = self._storage.weights.view()
        view.flags.writeable = False
        return view

    @property
    def state(self) -> np.ndarray:
        view = self._storage.state.view()
        view.flags.writeable = False
        return view

    def prepare(self, values: torch.Tensor, offsets: torch.Tensor) -> PreparedIds:
        ids, bounds = jagged_arrays(values, offsets)
        rows = self._mapper.map(ids)
        unique_rows, occurrence_offsets, occurrences, bag_of = _kernels.dedupe(rows, bounds, self.num_embeddings)
        return PreparedIds(rows, bounds, unique_rows, occurrence_offsets, occurrences, bag_of)

    def _check_prepared(self, prepared: PreparedIds) -> None:
        if not isinstance(prepared, PreparedIds):
            raise TypeError(f"prepared must be PreparedIds, got {type(prepared).__name__}")
        # unique_rows ascend: O(1) guard against IDs prepared by a larger table.
        rows = prepared.unique_rows
        if rows.size and not (rows[0] >= 0 and rows[-1] < self.num_embeddings):
            raise ValueError(f"table {self.config.name!r}: prepared rows fall outside [0, {self.num_embeddings})")

    def lookup_prepared(self, prepared: PreparedIds) -> torch.Tensor:
        self._check_prepared(prepared)
        slots = self._storage.resolve(prepared.rows)
        out = np.empty((prepared.batch_size, self.embedding_dim), dtype=np.float32)
        pool = _kernels.pool_mean if self.config.pooling is PoolingType.MEAN else _kernels.pool_sum
        pool(self._storage.weights, slots, prepared.offsets, out)
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
        grad = grad_pooled.detach().numpy()
        self.step += 1
        storage, opt = self._storage, self.config.optimizer
        args = (
            storage.weights,
            storage.state,
            storage.resolve(prepared.unique_rows),
            prepared.occurrence_offsets,
            prepared.occurrences,
            prepared.bag_of,
            grad,
            prepared.offsets,
            self.config.pooling is PoolingType.MEAN,
        )
        lr = float(opt.learning_rate)
        if opt.type is OptimizerType.SGD:
            _kernels.sgd_update(*args, lr)
        elif opt.type is OptimizerType.ADAGRAD:
            _kernels.adagrad_update(*args, lr, float(opt.eps))
        elif opt.type is OptimizerType.ROWWISE_ADAGRAD:
            _kernels.rowwise_adagrad_update(*args, lr, float(opt.eps))
        else:
            step_size = lr * math.sqrt(1.0 - opt.beta2**self.step) / (1.0 - opt.beta1**self.step)
            _kernels.adam_update(*args, step_size, float(opt.beta1), float(opt.beta2), float(opt.eps))

    def memory_estimate(self) -> MemoryEstimate:
        return self._storage.memory_estimate() + self._mapper.memory_estimate()

    def _manifest(self) -> dict[str, object]:
        cfg = self.config
        return {
            "format_version": _FORMAT_VERSION,
            "kind": "fixed",
            "name": cfg.name,
            "num_embeddings": cfg.num_embeddings,
            "embedding_dim": cfg.embedding_dim,
            "optimizer": cfg.optimizer.type.value,
        }

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
            if saved.get(key) != expected:
                raise ValueError(
                    f"{path}: saved {key}={saved.get(key)!r} does not match table {self.config.name!r} ({expected!r})"
                )
        self._storage.load(directory)
        self._mapper.load(directory)
        self.step = step

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"FixedTable(name={cfg.name!r}, num_embeddings={cfg.num_embeddings}, embedding_dim={cfg.embedding_dim}, "
            f"pooling={cfg.pooling.value}, optimizer={cfg.optimizer.type.value}, "
            f"ram_bytes={self.memory_estimate().ram_bytes})"
        )
