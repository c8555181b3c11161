"""Readers of raw example files (Criteo TSV, CSV, Parquet; libFM in :mod:`terarec.data.libfm`)
into :class:`ColumnarData`.

Files are parsed by Arrow, block by block, every column as text (or its Parquet type), then
converted with vectorised kernels; no Python loop runs over lines. A malformed row (wrong
number of fields, a dense value that is not a number, a label that is not 0 or 1) stops the
read with a :class:`~terarec.errors.DataError` whose message starts with ``path:line:column``
(1-based physical line, counting a CSV header; 1-based field number), or, under
``BadRowPolicy.SKIP``, is skipped and counted in ``ColumnarData.skipped_rows``.
For Parquet files ``line`` is the 1-based row number in the file.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from terarec.data import _convert
from terarec.data.config import DataConfig
from terarec.data.libfm import iter_libfm_blocks, libfm_schema
from terarec.data.types import BadRowPolicy, ColumnarData, DataFormat, JaggedColumn, Schema
from terarec.errors import ConfigError, DataError

__all__ = ["CRITEO_COLUMNS", "check_files_exist", "iter_blocks", "read_files", "resolve_schema"]

CRITEO_COLUMNS: tuple[str, ...] = ("label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27)))
"""Column names of Criteo's TAB-separated files, which have no header."""

_BLOCK_SIZE = 4 << 20


def check_files_exist(paths: Sequence[Path]) -> None:
    """Refuses an empty list, a missing file or an empty one, naming it."""
    if not paths:
        raise DataError("no input files given")
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"{path}: no such file")
        if Path(path).stat().st_size == 0:
            raise DataError(f"{path}: file is empty (expected example rows)")


def _file_columns(path: Path, fmt: DataFormat, config: DataConfig) -> tuple[str, ...]:
    if fmt is DataFormat.CRITEO:
        return CRITEO_COLUMNS
    if fmt is DataFormat.PARQUET:
        try:
            return tuple(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc
    if fmt is DataFormat.CSV:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            header = handle.readline()
        fields = next(csv.reader([header], delimiter=config.delimiter), [])
        if not any(f.strip() for f in fields):
            raise DataError(f"{path}:1:1: expected a header row of column names, got {header.rstrip()!r}")
        if len(set(fields)) != len(fields):
            dupes = sorted({f for f in fields if fields.count(f) > 1})
            raise DataError(f"{path}:1:1: header names columns more than once: {dupes}")
        return tuple(fields)
    raise ConfigError(f"data.format {fmt.value!r} cannot be read by read_files (use open_prepared)")


def _unknown(key: str, name: str, columns: Sequence[str], path: Path) -> ConfigError:
    close = difflib.get_close_matches(name, columns, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{key} names column {name!r}, which {path} does not have{hint} "
                       f"Available columns: {list(columns)}")


def resolve_schema(path: Path, fmt: DataFormat, config: DataConfig) -> tuple[Schema, tuple[str, ...]]:
    """The schema of ``path`` under ``config``, and the file's column names in file order.

    Raises:
        ConfigError: if ``config`` names a column the file lacks (with a suggestion), or a CSV/Parquet
            file has no ``data.label``.
    """
    if fmt is DataFormat.INTERACTIONS:
        raise ConfigError(
            f"{path}: an interaction log becomes retrieval examples when a run loads it (terarec train); "
            "it cannot be read or prepared as click examples"
        )
    if fmt is DataFormat.LIBFM:
        schema = libfm_schema(path, config)
        return schema, (schema.label, *schema.sparse_features)
    columns = _file_columns(path, fmt, config)
    for name in config.ignore:
        if name not in columns:
            raise _unknown("data.ignore", name, columns, path)
    if fmt is DataFormat.CRITEO:
        return Schema("label", tuple(c for c in columns[1:14] if c not in config.ignore),
                      tuple(c for c in columns[14:] if c not in config.ignore)), columns
    if config.label is None:
        raise ConfigError(f"data.label is required for {fmt.value} files; columns of {path}: {list(columns)}")
    for key, names in (("data.label", (config.label,)), ("data.dense_features", config.dense_features)):
        for name in names:
            if name not in columns:
                raise _unknown(key, name, columns, path)
    taken = {config.label, *config.dense_features, *config.ignore}
    return Schema(config.label, config.dense_features, tuple(c for c in columns if c not in taken)), columns


class _LineTracker:
    """Maps the rows Arrow returns to physical lines, given the rows its parser rejected."""

    def __init__(self, first_line: int) -> None:
        self.next_line = first_line
        self.rejected: list[tuple[int, int, str]] = []  # (line, fields found, text)
        self._rejected_lines = np.zeros(0, dtype=np.int64)
        self._synced = 0

    def handle(self, row: pacsv.InvalidRow) -> str:
        self.rejected.append((int(row.number), int(row.actual_columns), row.text))
        return "skip"

    def lines_for(self, n: int) -> np.ndarray:
        if self._synced != len(self.rejected):
            self._rejected_lines = np.array(sorted(r[0] for r in self.rejected), dtype=np.int64)
            self._synced = len(self.rejected)
        later = self._rejected_lines[self._rejected_lines >= self.next_line]
        window = np.arange(self.next_line, self.next_line + n + later.shape[0], dtype=np.int64)
        lines = np.setdiff1d(window, later, assume_unique=True)[:n]
        if n:
            self.next_line = int(lines[-1]) + 1
        return lines


def _count_error(path: Path, columns: Sequence[str], line: int, found: int, text: str) -> DataError:
    expected = len(columns)
    snippet = text if len(text) <= 80 else text[:77] + "..."
    if found < expected:
        where = f"{found + 1}: column {columns[found]!r}"  # the first missing field
    else:
        where = f"{expected + 1}"  # the first extra field
    what = f"expected {expected} fields, got {found}"
    return DataError(f"{path}:{line}:{where}: {what}: {snippet!r}")


class _BlockConverter:
    """Turns one Arrow record batch into a :class:`ColumnarData` block, checking every value."""

    def __init__(self, path: Path, schema: Schema, columns: Sequence[str], config: DataConfig) -> None:
        self.path, self.schema, self.config = path, schema, config
        self.position = {name: i + 1 for i, name in enumerate(columns)}

    def convert(self, batch: pa.RecordBatch, lines: np.ndarray) -> tuple[ColumnarData, int, int | None, DataError | None]:
        """The block without bad rows, how many were dropped, and the first bad row's line and error."""
        schema, n = self.schema, batch.num_rows
        bad_any = np.zeros(n, dtype=bool)
        checks: list[tuple[str, np.ndarray, str]] = []
        threshold, graded = self.config.label_threshold, self.config.group_col is not None
        labels, bad = _convert.to_labels(batch.column(schema.label), threshold, graded)
        expected = "expected a number" if threshold is not None else ("expected a relevance grade >= 0" if graded else "expected a label 0 or 1")
        checks.append((schema.label, bad, expected))
        dense = np.zeros((n, schema.num_dense), dtype=np.float64)
        for j, name in enumerate(schema.dense_features):
            try:
                dense[:, j], bad = _convert.to_float(batch.column(name), missing_is_bad=False)
            except TypeError as exc:
                raise DataError(f"{self.path}: column {name!r}: {exc}") from exc
            checks.append((name, bad, "expected a finite number"))
        first_line, first_error = None, None
        self._error_column = 0
        for name, bad, expected in checks:
            if bad.any():
                bad_any |= bad
                row = int(np.argmax(bad))
                line = int(lines[row])
                if first_line is None or line < first_line or (
                        line == first_line and self.position[name] < self._error_column):
                    got = _convert.text_of(batch.column(name), row)
                    first_line, self._error_column = line, self.position[name]
                    first_error = DataError(f"{self.path}:{line}:{self.position[name]}: "
                                            f"column {name!r}: {expected}, got {got!r}")
        sparse = {name: _convert.to_jagged(batch.column(name)) for name in schema.sparse_features}
        dense32 = _convert.apply_dense_transform(dense, self.config.dense_transform)
        block = ColumnarData(schema, labels, np.ascontiguousarray(dense32), sparse, source=str(self.path))
        dropped = int(bad_any.sum())
        if dropped and self.config.on_bad_row is BadRowPolicy.SKIP:
            block = _keep_rows(block, ~bad_any)
        return block, dropped, first_line, first_error


def _keep_rows(block: ColumnarData, keep: np.ndarray) -> ColumnarData:
    sparse = {}
    for name, col in block.sparse.items():
        lengths = np.diff(col.offsets)
        offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(lengths[keep], out=offsets[1:])
        kept = np.repeat(keep, lengths)
        sparse[name] = JaggedColumn(col.values[kept], offsets, None if col.weights is None else col.weights[kept])
    return ColumnarData(block.schema, block.labels[keep], block.dense[keep], sparse, source=block.source)


def _text_batches(path: Path, fmt: DataFormat, columns: Sequence[str], schema: Schema,
                  config: DataConfig, tracker: _LineTracker) -> Iterator[pa.RecordBatch]:
    is_criteo = fmt is DataFormat.CRITEO
    needed = [schema.label, *schema.dense_features, *schema.sparse_features]
    read = pacsv.ReadOptions(use_threads=False, block_size=_BLOCK_SIZE, column_names=list(columns),
                             skip_rows=0 if is_criteo else 1, encoding="utf8")
    parse = pacsv.ParseOptions(delimiter="\t" if is_criteo else config.delimiter, quote_char=False if is_criteo else '"',
                               ignore_empty_lines=False, invalid_row_handler=tracker.handle)
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in needed}, include_columns=needed,
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
        for batch in reader:
            yield batch
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as {fmt.value}: {exc}") from exc


def _file_blocks(path: Path, fmt: DataFormat, config: DataConfig, expected: Schema) -> Iterator[ColumnarData]:
    schema, columns = resolve_schema(path, fmt, config)
    if schema != expected:
        raise DataError(f"{path}: columns differ from the first file's: expected {expected.to_dict()}, "
                        f"got {schema.to_dict()}")
    if fmt is DataFormat.LIBFM:
        yield from iter_libfm_blocks(path, config, schema)
        return
    converter = _BlockConverter(path, schema, columns, config)
    skip = config.on_bad_row is BadRowPolicy.SKIP
    if fmt is DataFormat.PARQUET:
        row = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
            lines = np.arange(row, row + batch.num_rows, dtype=np.int64)
            row += batch.num_rows
            block, dropped, _, error = converter.convert(batch, lines)
            if error is not None and not skip:
                raise error
            block.skipped_rows = dropped
            yield block
        return
    tracker = _LineTracker(first_line=1 if fmt is DataFormat.CRITEO else 2)
    reported = 0  # rejected rows already counted or raised
    for batch in _text_batches(path, fmt, columns, schema, config, tracker):
        lines = tracker.lines_for(batch.num_rows)
        block, dropped, bad_line, error = converter.convert(batch, lines)
        settled_until = int(lines[-1]) if batch.num_rows else 0
        rejected = sorted(r for r in tracker.rejected if r[0] <= settled_until)
        if not skip:
            if rejected and (bad_line is None or rejected[0][0] < bad_line):
                raise _count_error(path, columns, *rejected[0])
            if error is not None:
                raise error
        block.skipped_rows = dropped + len(rejected) - reported
        reported = len(rejected)
        yield block
    rejected = sorted(tracker.rejected)
    if rejected and not skip:
        raise _count_error(path, columns, *rejected[reported])
    if len(rejected) > reported:
        yield _empty_block(schema, path, skipped=len(rejected) - reported)


def _empty_block(schema: Schema, path: Path, skipped: int) -> ColumnarData:
    empty_col = JaggedColumn(np.zeros(0, np.int64), np.zeros(1, np.int64))
    return ColumnarData(schema, np.zeros(0, np.float32), np.zeros((0, schema.num_dense), np.float32),
                        {name: empty_col for name in schema.sparse_features}, skipped_rows=skipped, source=str(path))


def iter_blocks(paths: Sequence[Path], fmt: DataFormat, config: DataConfig) -> Iterator[ColumnarData]:
    """Reads ``paths`` block by block (a few MB of text at a time), for bounded-memory streaming.

    Same arguments and errors as :func:`read_files`; each block carries its own ``skipped_rows``.
    """
    paths = [Path(p) for p in paths]
    check_files_exist(paths)
    schema, _ = resolve_schema(paths[0], fmt, config)
    for path in paths:
        yield from _file_blocks(path, fmt, config, schema)


def read_files(paths: Sequence[Path], fmt: DataFormat, config: DataConfig) -> ColumnarData:
    """Reads raw example files of one format into one in-RAM :class:`ColumnarData`.

    Criteo files are TAB-separated without header, columns :data:`CRITEO_COLUMNS`; CSV files
    have a header row; in both every categorical value is read as text and hashed
    (:mod:`terarec.data.hashing`). Parquet list columns become multi-hot bags. Dense values
    pass ``config.dense_transform`` (missing: 0); labels must be 0 or 1.

    Args:
        paths (Sequence[Path]): the files, read in this order; all must have the same columns.
        fmt (DataFormat): ``CRITEO``, ``CSV`` or ``PARQUET``.
        config (DataConfig): column roles (``label``, ``dense_features``, ``ignore``),
            ``delimiter``, ``on_bad_row`` and ``dense_transform``.

    Returns:
        ColumnarData: ``R`` rows with ``skipped_rows`` counting the rows skipped under ``SKIP``.

    Raises:
        DataError: a missing or empty file, or a malformed row (``path:line:column: ...``).
        ConfigError: a column named in ``config`` that the files lack, or no label for CSV/Parquet.

    Example::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "clicks.csv"
        >>> _ = path.write_text("click,price,user\\n1,3.5,u1\\n0,,u2\\n")
        >>> data = read_files([path], DataFormat.CSV, DataConfig(label="click", dense_features=("price",)))
        >>> data.num_rows, data.schema.sparse_features, data.labels.tolist()
        (2, ('user',), [1.0, 0.0])
        >>> _ = path.write_text("click,price,user\\n1,3.5,u1\\n0,cheap,u2\\n")
        >>> read_files([path], DataFormat.CSV, DataConfig(label="click", dense_features=("price",)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        terarec.errors.DataError: ...clicks.csv:3:2: column 'price': expected a finite number, got 'cheap'
    """
    blocks = list(iter_blocks(paths, fmt, config))
    data = ColumnarData.concat(blocks)
    data.source = ",".join(str(p) for p in paths)
    return data
