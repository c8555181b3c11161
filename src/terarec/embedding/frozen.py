"""Tables frozen for serving: each table's weights alone, opened read-only and memory-mapped.

:func:`export_tables` writes what a trained :class:`~terarec.embedding.EmbeddingCollection`
needs to answer lookups and nothing else: per table ``weights.npy`` (in the table's storage
dtype, float32 or bfloat16 bits, copied a chunk of rows at a time, so a tiered table larger
than RAM exports without being held in it), a dynamic table's ID map, and ``frozen.json``. No
optimizer state is kept. :class:`FrozenCollection` opens them with ``np.load(mmap_mode="r")``:
the rows stay in the operating system's page cache, shared by every process that opens the same
files, and a table larger than RAM is paged in as it is read. A table given a cache size instead
reads its rows into a RAM cache of that size (a read-only CLOCK cache, one ``pread`` per miss:
:mod:`~terarec.embedding._frozen_kernels`), so the process holds no more of it than that, and
counts its hits and misses. Lookups map IDs with the table's own mapper (read-only) and pool with
the training lookup's kernels, so a frozen table pools exactly as the trained one does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from terarec.embedding import _frozen_kernels, _hashing, _pooling_kernels
from terarec.embedding.collection import EmbeddingCollection
from terarec.embedding.config import EmbeddingTableConfig, PoolingType
from terarec.embedding.dynamic import DynamicRowMapper
from terarec.embedding.row_mapping import HashedRowMapper, RowMapper
from terarec.embedding.storage import encode
from terarec.embedding.table import RowTable
from terarec.sparse import JaggedTensor, concat_bags

__all__ = ["FrozenCollection", "FrozenTable", "export_tables"]

_FORMAT_VERSION = 1
_MANIFEST = "frozen.json"
_WEIGHTS = "weights.npy"
# Rows copied per chunk while exporting: bounds the RAM an export of a tiered table needs.
_EXPORT_CHUNK_ROWS = 1 << 16


def _export_table(table: RowTable, directory: Path) -> None:
    directory.mkdir(parents=True)
    config = table.config
    dtype = config.weights_dtype.numpy_dtype
    weights = np.lib.format.open_memmap(
        directory / _WEIGHTS, mode="w+", dtype=dtype, shape=(config.num_embeddings, config.embedding_dim)
    )
    for start in range(0, config.num_embeddings, _EXPORT_CHUNK_ROWS):
        rows = np.arange(start, min(start + _EXPORT_CHUNK_ROWS, config.num_embeddings), dtype=np.int64)
        weights[start : start + rows.shape[0]] = encode(table.read_rows(rows)[0], dtype)
    weights.flush()
    del weights
    table.save_row_map(directory)
    manifest = {"format_version": _FORMAT_VERSION, "name": config.name, "kind": table.kind, "step": table.step}
    (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def export_tables(collection: EmbeddingCollection, directory: Path) -> None:
    """Writes every table of ``collection`` into ``directory / <table name>`` for
    :class:`FrozenCollection` (see the module docstring); ``directory`` must not exist.

    Raises:
        TypeError: for a table that is not a row table (a shard of a sharded collection:
            export from a collection opened on one process).
    """
    directory = Path(directory)
    directory.mkdir(parents=True)
    for name, table in collection.tables.items():
        if not isinstance(table, RowTable):
            raise TypeError(f"table {name!r}: only whole row tables export, got {type(table).__name__}")
        _export_table(table, directory / name)


class FrozenTable:
    """One exported table, read-only: its ID mapper and its weights, memory-mapped or behind a
    RAM cache of ``cache_bytes``.

    Args:
        config (EmbeddingTableConfig): the table's config, as trained.
        directory (Path): the table's exported directory.
        seed (int): the run's global seed (a dynamic table's mapper is keyed by it).
        cache_bytes (int, optional): read rows into a RAM cache of this many bytes (at least one
            row) instead of mapping the file; ``None`` maps it. Default: ``None``

    Shape:
        - values: :math:`(N)` ``int64`` raw IDs; offsets: :math:`(B + 1)`
        - :meth:`lookup` output: :math:`(B, D)` ``float32``

    Raises:
        ValueError: naming the file, when one is missing or does not match ``config``, or the
            cache cannot hold one row.
    """

    def __init__(self, config: EmbeddingTableConfig, directory: Path, seed: int, cache_bytes: int | None = None) -> None:
        directory = Path(directory)
        self.config = config
        manifest_path = directory / _MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{manifest_path}: missing or malformed frozen-table manifest ({err})") from err
        if manifest.get("format_version") != _FORMAT_VERSION or manifest.get("name") != config.name:
            raise ValueError(f"{manifest_path}: not an exported table {config.name!r} of format {_FORMAT_VERSION}")
        self.path = directory / _WEIGHTS
        try:
            self.weights = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"{self.path}: missing, truncated or not a plain .npy array ({err})") from err
        expected = (config.num_embeddings, config.embedding_dim)
        if self.weights.shape != expected or self.weights.dtype != config.weights_dtype.numpy_dtype:
            raise ValueError(
                f"{self.path}: expected {config.weights_dtype.numpy_dtype} rows of shape {expected}, "
                f"got {self.weights.dtype} {self.weights.shape}"
            )
        self.cache: np.ndarray | None = None
        if cache_bytes is not None:
            self._open_cache(cache_bytes)
        self.mapper: RowMapper
        if config.dynamic is None:
            self.mapper = HashedRowMapper(config.num_embeddings)
        else:
            table_seed = int(_hashing.derive_table_seed(seed, config.name))
            self.mapper = DynamicRowMapper(config.num_embeddings, config.dynamic, table_seed)
            self.mapper.load(directory)

    def _open_cache(self, cache_bytes: int) -> None:
        """Reads rows through a cache of ``cache_bytes`` instead of the mapping (dropped, so its
        pages are not this process's)."""
        row_bytes = self.weights.itemsize * self.weights.shape[1]
        rows = min(int(cache_bytes) // row_bytes, self.weights.shape[0])
        if rows < 1:
            raise ValueError(f"table {self.config.name!r}: a cache of {cache_bytes} bytes cannot hold one row of {row_bytes} bytes")
        self._header = int(self.weights.offset)
        dtype = self.weights.dtype
        self.weights = np.empty((0, self.weights.shape[1]), dtype=dtype)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.cache = np.zeros((rows, self.config.embedding_dim), dtype=dtype)
        self._row_slot = np.full(self.config.num_embeddings, -1, dtype=np.int32)
        self._slot_row = np.full(rows, -1, dtype=np.int64)
        self._referenced = np.zeros(rows, dtype=np.uint8)
        self._in_use = np.zeros(rows, dtype=np.uint8)
        self._hand = np.zeros(1, dtype=np.int64)
        self._report = np.zeros(4, dtype=np.int64)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def _cached(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The weights to pool from and each ID's slot in them, through the cache."""
        assert self.cache is not None
        known = rows >= 0
        distinct, inverse = np.unique(rows[known], return_inverse=True)
        slots = np.empty(distinct.shape[0], dtype=np.int64)
        if distinct.shape[0] <= self.cache.shape[0]:
            source = self.cache
            status = _frozen_kernels.fetch_rows(
                self._fd, self._header, distinct, self._row_slot, self._slot_row, self._referenced, self._in_use,
                self._hand, self.cache, slots, self._report,
            )  # fmt: skip
        else:  # more distinct rows than the cache holds: read past it
            source = np.empty((distinct.shape[0], self.embedding_dim), dtype=self.cache.dtype)
            slots = np.arange(distinct.shape[0], dtype=np.int64)
            status = _frozen_kernels.read_rows(self._fd, self._header, distinct, source, self._report)
            self._report[1] += distinct.shape[0]
        if status != _frozen_kernels.OK:
            row, error = int(self._report[2]), int(self._report[3])
            reason = os.strerror(error) if error > 0 else "the file ends before it (truncated?)"
            raise OSError(error if error > 0 else 5, f"{self.path}: reading row {row} failed: {reason}")
        per_id = np.full(rows.shape[0], -1, dtype=np.int64)
        per_id[known] = slots[inverse]
        return source, per_id

    def lookup(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Each bag's pooled row; an ID a dynamic table never admitted reads as zeros."""
        ids = np.ascontiguousarray(values.numpy(), dtype=np.int64)
        bounds = np.ascontiguousarray(offsets.numpy(), dtype=np.int64)
        rows = self.mapper.map(ids, training=False).rows
        source, slots = (self.weights, rows) if self.cache is None else self._cached(rows)
        out = np.empty((bounds.shape[0] - 1, self.embedding_dim), dtype=np.float32)
        pool = _pooling_kernels.pool_mean if self.config.pooling is PoolingType.MEAN else _pooling_kernels.pool_sum
        pool(source, slots, bounds, out)
        return torch.from_numpy(out)

    def counters(self) -> dict[str, float]:
        """The cache's ``cache_hits`` and ``cache_misses`` (rows, since it opened); none without a cache."""
        if self.cache is None:
            return {}
        return {"cache_hits": float(self._report[0]), "cache_misses": float(self._report[1])}

    def resident_bytes(self) -> int:
        """Bytes the table holds privately: the mapper's arrays, and the cache with its
        bookkeeping (mapped weights live in the shared page cache)."""
        held = int(self.mapper.memory_estimate().ram_bytes)
        if self.cache is not None:
            held += self.cache.nbytes + self._row_slot.nbytes + self._slot_row.nbytes + 2 * self._in_use.nbytes
        return held

    def close(self) -> None:
        """Closes the file a cached table reads from."""
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


class FrozenCollection:
    """Exported tables behind one lookup, in :class:`~terarec.embedding.EmbeddingCollection`'s
    column order (table by table, then each table's features), so a network trained on the
    collection reads the frozen one unchanged.

    Args:
        configs (Sequence[EmbeddingTableConfig]): the tables, in the trained collection's order.
        directory (Path): what :func:`export_tables` wrote.
        seed (int): the run's global seed.
        cache_bytes (Mapping[str, int], optional): the tables read through a RAM cache, and its
            size each; the others are memory-mapped. Default: ``None`` (all mapped)

    Shape:
        - :meth:`lookup` output: :math:`(B, \\sum_f D_f)` ``float32``

    Example::

        >>> import tempfile
        >>> config = EmbeddingTableConfig("t", 10, 4, ("f",))
        >>> collection = EmbeddingCollection([config])
        >>> sparse = {"f": JaggedTensor(torch.tensor([1, 2, 3]), torch.tensor([0, 2, 3]))}
        >>> with tempfile.TemporaryDirectory() as out:
        ...     export_tables(collection, Path(out) / "tables")
        ...     frozen = FrozenCollection([config], Path(out) / "tables", seed=0)
        ...     pooled = frozen.lookup(sparse)
        >>> _ = collection.eval()
        >>> torch.equal(pooled, collection.lookup(collection.prepare(sparse)).values.detach())
        True
    """

    def __init__(
        self, configs: Sequence[EmbeddingTableConfig], directory: Path, seed: int, cache_bytes: Mapping[str, int] | None = None
    ) -> None:
        caches = dict(cache_bytes or {})
        unknown = sorted(set(caches) - {config.name for config in configs})
        if unknown:
            raise ValueError(f"cache_bytes names tables {unknown} that the collection does not have")
        self.tables = {
            config.name: FrozenTable(config, Path(directory) / config.name, seed, caches.get(config.name)) for config in configs
        }
        self.feature_names = tuple(f for config in configs for f in config.feature_names)
        self.embedding_dims = tuple(config.embedding_dim for config in configs for _ in config.feature_names)

    def lookup(self, sparse: Mapping[str, JaggedTensor]) -> torch.Tensor:
        """Every feature's pooled bags side by side.

        Raises:
            ValueError: if a feature is missing or the features' batch sizes differ.
        """
        missing = [name for name in self.feature_names if name not in sparse]
        if missing:
            raise ValueError(f"sparse features {missing} are missing from the batch (got {sorted(sparse)})")
        sizes = {sparse[name].batch_size for name in self.feature_names}
        if len(sizes) > 1:
            raise ValueError(f"the features' batch sizes differ: {sorted(sizes)}")
        batch = sizes.pop() if sizes else (next(iter(sparse.values())).batch_size if sparse else 0)
        blocks = []
        for table in self.tables.values():
            features = table.config.feature_names
            values, offsets = concat_bags([sparse[f] for f in features])
            pooled = table.lookup(values, offsets)  # (k B, D), feature-major
            blocks.append(pooled.view(len(features), batch, table.embedding_dim).transpose(0, 1).reshape(batch, -1))
        return torch.cat(blocks, dim=1) if blocks else torch.empty(batch, 0)

    def counters(self) -> dict[str, float]:
        """Each cached table's counters (:meth:`FrozenTable.counters`) as ``"<table>/<counter>"``."""
        return {f"{name}/{key}": value for name, table in self.tables.items() for key, value in table.counters().items()}

    def resident_bytes(self) -> int:
        """Bytes the collection holds privately (ID maps, caches), beside the shared weights."""
        return sum(table.resident_bytes() for table in self.tables.values())
