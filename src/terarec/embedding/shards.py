"""Blocks of a fixed in-RAM table held by one rank: a range of rows (row-wise sharding) or a
range of columns (column-wise sharding).

A row-wise shard keeps rows ``first_row ... first_row + R - 1``: the whole table hashes an ID to
row ``r``, and the rank whose range holds ``r`` is sent ``r`` itself. A column-wise shard keeps
every row but only columns ``first_column ... first_column + C - 1`` (and the matching columns
of an element-wise optimizer's state). Every element starts with the value it has in the whole
table, and a shard saves into the whole table's files (the first block creates them, full
size; each block then writes itself in place), so checkpoints do not depend on how a table was
split: a whole :class:`~terarec.embedding.table.FixedTable` loads them, and so does any split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from terarec.embedding.config import (
    DataType,
    EmbeddingTableConfig,
    OptimizerType,
    PoolingType,
)
from terarec.embedding.memory import MemoryEstimate
from terarec.embedding.row_mapping import HashedRowMapper, RowMapper, RowMapping
from terarec.embedding.storage import RamRowStorage, initialize_rows
from terarec.embedding.table import RowTable, storage_arguments

__all__ = ["ColumnShardTable", "RowRangeMapper", "RowShardStorage", "RowShardTable"]

_CHUNK_ROWS = 1 << 14


def _write_block(path: Path, whole_shape: tuple[int, int], block: np.ndarray, rows: slice, columns: slice, create: bool) -> None:
    """Writes ``block`` into ``[rows, columns]`` of the whole table's ``.npy`` file at ``path``,
    creating the file (full size, sparse, of ``block``'s dtype) first if ``create``."""
    if create:
        whole = np.lib.format.open_memmap(path, mode="w+", dtype=block.dtype, shape=whole_shape)
    else:
        whole = np.lib.format.open_memmap(path, mode="r+")
        _check_whole(path, whole, whole_shape, block.dtype)
    if block.size:
        whole[rows, columns] = block
    whole.flush()
    del whole


def _read_block(path: Path, whole_shape: tuple[int, int], rows: slice, columns: slice, dtype: np.dtype) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path}: missing file of table rows")
    whole = np.load(path, mmap_mode="r", allow_pickle=False)
    _check_whole(path, whole, whole_shape, dtype)
    return whole[rows, columns]


def _check_whole(path: Path, whole: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> None:
    if whole.dtype != dtype or whole.shape != shape:
        raise ValueError(f"{path}: expected a {np.dtype(dtype)} array of shape {shape}, got {whole.dtype} {whole.shape}")


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

    def __init__(self, first_row: int, total_rows: int, *args: object, initial_state: float = 0.0, **dtypes: DataType) -> None:
        super().__init__(*args, initial_state=initial_state, first_row=first_row, total_rows=total_rows, **dtypes)  # type: ignore[arg-type]
        self.total_rows = total_rows

    def _rows(self) -> slice:
        return slice(self.first_row, self.first_row + self.weights.shape[0])

    def save(self, directory: Path) -> None:
        for name in ("weights", "state"):
            array = getattr(self, name)
            shape = (self.total_rows, array.shape[1])
            _write_block(Path(directory) / f"{name}.npy", shape, array, self._rows(), slice(None), self.first_row == 0)

    def load(self, directory: Path) -> None:
        loaded = {
            name: _read_block(
                Path(directory) / f"{name}.npy", (self.total_rows, getattr(self, name).shape[1]), self._rows(), slice(None),
                getattr(self, name).dtype,
            )
            for name in ("weights", "state")
        }
        for name, rows in loaded.items():
            getattr(self, name)[...] = rows


class _BlockTable(RowTable):
    """What row and column blocks share: saved, a block is indistinguishable from the whole
    table ``self.table`` (its manifest names the whole table's sizes), and the first block
    of a table writes that manifest and creates the files the others then fill in."""

    kind = "fixed"
    table: EmbeddingTableConfig
    first_block: bool

    def _manifest(self) -> dict[str, object]:
        whole = {"num_embeddings": self.table.num_embeddings, "embedding_dim": self.table.embedding_dim}
        return {**super()._manifest(), **whole}

    def save(self, directory: Path) -> None:
        """Writes this block into the table's files; the first block must be saved first."""
        if self.first_block:
            super().save(directory)
        else:
            self._storage.save(directory)


class RowShardTable(_BlockTable):
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

    def __init__(self, table: EmbeddingTableConfig, first_row: int, num_rows: int, seed: int = 0) -> None:
        if table.dynamic is not None or table.tiered is not None:
            raise ValueError(f"table {table.name!r}: row-wise shards hold fixed in-RAM tables only")
        if not (0 <= first_row and num_rows >= 1 and first_row + num_rows <= table.num_embeddings):
            raise ValueError(
                f"table {table.name!r}: rows [{first_row}, {first_row + num_rows}) are not inside [0, {table.num_embeddings})"
            )
        self.table, self.first_block = table, first_row == 0
        args, initial_state = storage_arguments(table, seed)
        storage = RowShardStorage(
            first_row, table.num_embeddings, num_rows, *args[1:], initial_state=initial_state,
            weights_dtype=table.weights_dtype, state_dtype=table.state_dtype,
        )  # fmt: skip
        shard = dataclasses.replace(table, num_embeddings=num_rows, pooling=PoolingType.SUM)
        super().__init__(shard, RowRangeMapper(first_row, num_rows), seed, storage=storage)


class ColumnShardStorage(RamRowStorage):
    """Columns ``first_column ... first_column + C - 1`` of every row of a table of width ``D``,
    in RAM, with the same columns of an element-wise optimizer state (Adagrad's one per
    column, Adam's two: ``state_blocks`` of ``D`` columns each)."""

    def __init__(
        self,
        table: EmbeddingTableConfig,
        seed: int,
        first_column: int,
        num_columns: int,
        state_blocks: int,
        initial_state: float,
    ) -> None:
        rows, dim = table.num_embeddings, table.embedding_dim
        table_seed = storage_arguments(table, seed)[0][4]
        super().__init__(
            rows, num_columns, state_blocks * num_columns, table.init, table_seed, initial_state,  # type: ignore[arg-type]
            weights_dtype=table.weights_dtype, state_dtype=table.state_dtype,
        )  # fmt: skip
        full = np.empty((min(rows, _CHUNK_ROWS), dim), dtype=self.weights.dtype)
        for start in range(0, rows, _CHUNK_ROWS):
            stop = min(rows, start + _CHUNK_ROWS)
            initialize_rows(full[: stop - start], start, table.init, rows, table_seed)  # type: ignore[arg-type]
            self.weights[start:stop] = full[: stop - start, first_column : first_column + num_columns]
        self.dim, self.first_column, self.state_blocks = dim, first_column, state_blocks

    def _state_columns(self) -> list[tuple[slice, slice]]:
        """(columns of the whole table's state, columns of this shard's state), per block."""
        c, n = self.first_column, self.weights.shape[1]
        return [(slice(b * self.dim + c, b * self.dim + c + n), slice(b * n, (b + 1) * n)) for b in range(self.state_blocks)]

    def save(self, directory: Path) -> None:
        rows, create = self.weights.shape[0], self.first_column == 0
        columns = slice(self.first_column, self.first_column + self.weights.shape[1])
        _write_block(Path(directory) / "weights.npy", (rows, self.dim), self.weights, slice(None), columns, create)
        state_path, state_shape = Path(directory) / "state.npy", (rows, self.state_blocks * self.dim)
        if create:
            _write_block(state_path, state_shape, np.empty((rows, 0), self.state.dtype), slice(None), slice(0, 0), True)
        for whole, mine in self._state_columns():
            _write_block(state_path, state_shape, self.state[:, mine], slice(None), whole, False)

    def load(self, directory: Path) -> None:
        rows = self.weights.shape[0]
        columns = slice(self.first_column, self.first_column + self.weights.shape[1])
        weights = _read_block(Path(directory) / "weights.npy", (rows, self.dim), slice(None), columns, self.weights.dtype)
        state_shape = (rows, self.state_blocks * self.dim)
        states = [
            (mine, _read_block(Path(directory) / "state.npy", state_shape, slice(None), whole, self.state.dtype))
            for whole, mine in self._state_columns()
        ]
        self.weights[...] = weights
        for mine, block in states:
            self.state[:, mine] = block


class ColumnShardTable(_BlockTable):
    """Columns ``first_column ... first_column + num_columns - 1`` of the fixed in-RAM table
    ``table``: every row, hashed from raw IDs as the whole table does, pooled with its pooling.
    Saved, it is indistinguishable from the whole table. Row-wise Adagrad keeps one state value
    per row over all columns, which a column block cannot split, so it is refused. With bf16
    storage its stochastic rounding is keyed on its own columns, so it trains like the whole
    table in distribution but not bit for bit (a row-wise shard does round as the whole table).

    Example::

        >>> from terarec.embedding import OptimizerConfig
        >>> from terarec.embedding.table import FixedTable
        >>> config = EmbeddingTableConfig("t", 10, 8, ("f",), optimizer=OptimizerConfig(OptimizerType.ADAGRAD))
        >>> shard = ColumnShardTable(config, first_column=4, num_columns=4)
        >>> bool((shard.weights == FixedTable(config).weights[:, 4:]).all()), shard.state.shape
        (True, (10, 4))
    """

    def __init__(self, table: EmbeddingTableConfig, first_column: int, num_columns: int, seed: int = 0) -> None:
        if table.dynamic is not None or table.tiered is not None:
            raise ValueError(f"table {table.name!r}: column-wise shards hold fixed in-RAM tables only")
        blocks = {OptimizerType.SGD: 0, OptimizerType.ADAGRAD: 1, OptimizerType.ADAM: 2}.get(table.optimizer.type)
        if blocks is None:
            raise ValueError(
                f"table {table.name!r}: {table.optimizer.type.value} keeps one state value per row, which column-wise "
                f"shards cannot split; use sgd, adagrad or adam, or another sharding"
            )
        if not (0 <= first_column and num_columns >= 1 and first_column + num_columns <= table.embedding_dim):
            raise ValueError(
                f"table {table.name!r}: columns [{first_column}, {first_column + num_columns}) are not inside "
                f"[0, {table.embedding_dim})"
            )
        self.table, self.first_block = table, first_column == 0
        initial_state = storage_arguments(table, seed)[1]
        storage = ColumnShardStorage(table, seed, first_column, num_columns, blocks, initial_state)
        shard = dataclasses.replace(table, embedding_dim=num_columns)
        super().__init__(shard, HashedRowMapper(table.num_embeddings), seed, storage=storage)
