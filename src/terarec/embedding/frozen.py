"""Tables frozen for serving: each table's weights alone, opened read-only and memory-mapped.

:func:`export_tables` writes what a trained :class:`~terarec.embedding.EmbeddingCollection`
needs to answer lookups and nothing else: per table ``weights.npy`` (in the table's storage
dtype, float32 or bfloat16 bits, copied a chunk of rows at a time, so a tiered table larger
than RAM exports without being held in it), a dynamic table's ID map, and ``frozen.json``. No
optimizer state is kept. :class:`FrozenCollection` opens them with ``np.load(mmap_mode="r")``:
the rows stay in the operating system's page cache, shared by every process that opens the same
files, and a table larger than RAM is paged in as it is read. Lookups map IDs with the table's
own mapper (read-only) and pool with the training lookup's kernels, so a frozen table pools
exactly as the trained one does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from terarec.embedding import _hashing, _pooling_kernels
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
    """One exported table, read-only: its ID mapper and its memory-mapped weights.

    Args:
        config (EmbeddingTableConfig): the table's config, as trained.
        directory (Path): the table's exported directory.
        seed (int): the run's global seed (a dynamic table's mapper is keyed by it).

    Shape:
        - values: :math:`(N)` ``int64`` raw IDs; offsets: :math:`(B + 1)`
        - :meth:`lookup` output: :math:`(B, D)` ``float32``

    Raises:
        ValueError: naming the file, when one is missing or does not match ``config``.
    """

    def __init__(self, config: EmbeddingTableConfig, directory: Path, seed: int) -> None:
        directory = Path(directory)
        self.config = config
        manifest_path = directory / _MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{manifest_path}: missing or malformed frozen-table manifest ({err})") from err
        if manifest.get("format_version") != _FORMAT_VERSION or manifest.get("name") != config.name:
            raise ValueError(f"{manifest_path}: not an exported table {config.name!r} of format {_FORMAT_VERSION}")
        path = directory / _WEIGHTS
        try:
            self.weights = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"{path}: missing, truncated or not a plain .npy array ({err})") from err
        expected = (config.num_embeddings, config.embedding_dim)
        if self.weights.shape != expected or self.weights.dtype != config.weights_dtype.numpy_dtype:
            raise ValueError(
                f"{path}: expected {config.weights_dtype.numpy_dtype} rows of shape {expected}, "
                f"got {self.weights.dtype} {self.weights.shape}"
            )
        self.mapper: RowMapper
        if config.dynamic is None:
            self.mapper = HashedRowMapper(config.num_embeddings)
        else:
            table_seed = int(_hashing.derive_table_seed(seed, config.name))
            self.mapper = DynamicRowMapper(config.num_embeddings, config.dynamic, table_seed)
            self.mapper.load(directory)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def lookup(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Each bag's pooled row; an ID a dynamic table never admitted reads as zeros."""
        ids = np.ascontiguousarray(values.numpy(), dtype=np.int64)
        bounds = np.ascontiguousarray(offsets.numpy(), dtype=np.int64)
        rows = self.mapper.map(ids, training=False).rows
        out = np.empty((bounds.shape[0] - 1, self.embedding_dim), dtype=np.float32)
        pool = _pooling_kernels.pool_mean if self.config.pooling is PoolingType.MEAN else _pooling_kernels.pool_sum
        pool(self.weights, rows, bounds, out)
        return torch.from_numpy(out)

    def resident_bytes(self) -> int:
        """Bytes of the mapper's own arrays (the weights live in the shared page cache)."""
        return int(self.mapper.memory_estimate().ram_bytes)


class FrozenCollection:
    """Exported tables behind one lookup, in :class:`~terarec.embedding.EmbeddingCollection`'s
    column order (table by table, then each table's features), so a network trained on the
    collection reads the frozen one unchanged.

    Args:
        configs (Sequence[EmbeddingTableConfig]): the tables, in the trained collection's order.
        directory (Path): what :func:`export_tables` wrote.
        seed (int): the run's global seed.

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

    def __init__(self, configs: Sequence[EmbeddingTableConfig], directory: Path, seed: int) -> None:
        self.tables = {config.name: FrozenTable(config, Path(directory) / config.name, seed) for config in configs}
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

    def resident_bytes(self) -> int:
        """Bytes the collection holds privately (its ID maps), beside the shared weights."""
        return sum(table.resident_bytes() for table in self.tables.values())
