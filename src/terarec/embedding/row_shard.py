"""A contiguous range of a fixed table's rows, held by one rank of a row-wise sharded table.

The whole table hashes an ID to row ``r``; the rank whose range holds ``r`` is sent ``r``
itself and keeps rows ``first_row ... first_row + R - 1`` of the table. A row starts with the
value it has in the whole table, and a shard saves into the whole table's files (each shard
writes its rows in place), so checkpoints do not depend on how the table was split: a whole
:class:`~terarec.embedding.table.FixedTable` loads them, and so does any other split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from terarec.embedding.row_mapping import RowMapper, RowMapping
from terarec.embedding.storage import RamRowStorage
from terarec.embedding.table import RowTable, storage_arguments
from terarec.embedding.types import EmbeddingTableConfig, MemoryEstimate, PoolingType

__all__ = ["RowRangeMapper", "RowShardStorage", "RowShardTable"]


class RowRangeMapper(RowMapper):
    """Maps rows of the whole table (already hashed by the sender) to this shard's slots.

    Example::

        >>> RowRangeMapper(100, 50).map(np.array([100, 149, 120])).rows.tolist()
        [0, 49, 20]
    """

    def __init__(self, first_row: int, num_rows: int) -> None:
        self.first_row, self.num_embeddings = int(first_row), int(num_rows)

    def map(self, ids: np.ndarray, training: bool = True) -> RowMapping:
        rows = ids - self.first_row
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_embeddings):
            raise ValueError(
                f"row-wise shard of rows [{self.first_row}, {self.first_row + self.num_embeddings}) "
                f"was sent rows outside its range"
            )
        return RowMapping(rows)

    def memory_estimate(self) -> MemoryEstimate:
        return MemoryEstimate(ram_bytes=0, disk_bytes=0)

    def save(self, directory: Path) -> None:
        """Nothing to write: the range is part of the placement, not of the table."""

    def load(self, directory: Path) -> None:
        """Nothing to read."""


class RowShardStorage(RamRowStorage):
    """Rows ``first_row ... first_row + R - 1`` of a table of ``total_rows`` rows, in RAM.

    :meth:`save` writes them into the whole table's ``weights.npy`` and ``state.npy``: the
    shard holding row 0 creates both files (full size, sparse), the others must then write
    their rows into them; :meth:`load` reads its range from files of any split.
    """

    def __init__(self, first_row: int, total_rows: int, *args: object, initial_state: float = 0.0) -> None:
        super().__init__(*args, initial_state=initial_state, first_row=first_row, total_rows=total_rows)  # type: ignore[arg-type]
        self.first_row, self.total_rows = first_row, total_rows

    def _rows(self) -> slice:
        return slice(self.first_row, self.first_row + self.weights.shape[0])

    def save(self, directory: Path) -> None:
        for name in ("weights", "state"):
            array = getattr(self, name)
            path = Path(directory) / f"{name}.npy"
            if self.first_row == 0:
                whole = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(self.total_rows, array.shape[1]))
            else:
                whole = np.lib.format.open_memmap(path, mode="r+")
                self._check(path, whole, array)
            if array.size:
                whole[self._rows()] = array
            whole.flush()
            del whole

    def load(self, directory: Path) -> None:
        loaded = {}
        for name in ("weights", "state"):
            path = Path(directory) / f"{name}.npy"
            if not path.is_file():
                raise ValueError(f"{path}: missing file of table rows")
            whole = np.load(path, mmap_mode="r", allow_pickle=False)
            self._check(path, whole, getattr(self, name))
            loaded[name] = whole[self._rows()]
        for name, rows in loaded.items():
            getattr(self, name)[...] = rows

    def _check(self, path: Path, whole: np.ndarray, array: np.ndarray) -> None:
        expected = (self.total_rows, array.shape[1])
        if whole.dtype != np.float32 or whole.shape != expected:
            raise ValueError(f"{path}: expected a float32 array of shape {expected}, got {whole.dtype} {whole.shape}")


class RowShardTable(RowTable):
    """Rows ``first_row ... first_row + num_rows - 1`` of the fixed in-RAM table ``table``.

    It is prepared with rows of the whole table (not raw IDs) and pools by sum: the ranks
    add the partial sums of all shards, then divide for mean pooling. Saved, it is
    indistinguishable from the whole :class:`~terarec.embedding.table.FixedTable`.

    Args:
        table (EmbeddingTableConfig): the whole table (fixed, not tiered).
        first_row (int): its first row held here.
        num_rows (int): rows held here, ``>= 1``.
        seed (int, optional): global seed, as for the whole table. Default: ``0``

    Example::

        >>> import torch
        >>> from terarec.embedding.table import FixedTable
        >>> config = EmbeddingTableConfig("t", 10, 4, ("f",))
        >>> shard = RowShardTable(config, first_row=6, num_rows=4)
        >>> bool((shard.weights == FixedTable(config).weights[6:]).all())
        True
        >>> shard.lookup(torch.tensor([7, 9]), torch.tensor([0, 2])).shape
        torch.Size([1, 4])
    """

    kind = "fixed"

    def __init__(self, table: EmbeddingTableConfig, first_row: int, num_rows: int, seed: int = 0) -> None:
        if table.dynamic is not None or table.tiered is not None:
            raise ValueError(f"table {table.name!r}: row-wise shards hold fixed in-RAM tables only")
        if not (0 <= first_row and num_rows >= 1 and first_row + num_rows <= table.num_embeddings):
            raise ValueError(
                f"table {table.name!r}: rows [{first_row}, {first_row + num_rows}) are not inside [0, {table.num_embeddings})"
            )
        self.table = table
        args, initial_state = storage_arguments(table, seed)
        storage = RowShardStorage(first_row, table.num_embeddings, num_rows, *args[1:], initial_state=initial_state)
        shard = dataclasses.replace(table, num_embeddings=num_rows, pooling=PoolingType.SUM)
        super().__init__(shard, RowRangeMapper(first_row, num_rows), seed, storage=storage)

    def _manifest(self) -> dict[str, object]:
        return {**super()._manifest(), "num_embeddings": self.table.num_embeddings}

    def save(self, directory: Path) -> None:
        """Writes this range into the table's files; the first range creates them (and the
        table's manifest) and must be saved before the others."""
        if self._storage.first_row == 0:  # type: ignore[attr-defined]
            super().save(directory)
        else:
            self._storage.save(directory)
