"""The libFM (libSVM) text format: ``label idx:val idx:val ...``, one example per line.

Tokens are separated by spaces or tabs. The label is ``0``/``1`` or ``-1``/``+1`` (``-1`` is
a negative), or any number with ``data.label_threshold``. Each ``idx:val`` pair is one ID of a
field:

- without a field map, the ``j``-th pair of a line is field ``f<j>`` (every line must have as
  many pairs as the first one), as in the libFM files of FuxiCTR and AFN (Frappe, MovieLens);
- with ``data.libfm_field_map``, a file of ``idx field`` lines, each index belongs to its named
  field, fields in order of first appearance in the map, and a line's pairs of one field form
  its bag (empty when it has none).

An index is a non-negative integer (below ``data.libfm_num_features`` when that is set) and
its ID is that of its decimal text (:mod:`terarec.data.hashing`), as the same integer in a CSV
column would get. A value other than 1 scales the ID's embedding: the column then carries
per-ID weights. Parsing is vectorised with Arrow; errors name ``path:line:column`` (column: the
1-based token, the label being 1), or, under ``data.on_bad_row=skip``, the line is skipped and
counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data import _convert
from terarec.data.config import DataConfig
from terarec.data.hashing import hash_strings
from terarec.data.types import BadRowPolicy, ColumnarData, JaggedColumn, Schema
from terarec.errors import ConfigError, DataError

__all__ = ["LIBFM_LABEL", "iter_libfm_blocks", "libfm_schema"]

LIBFM_LABEL = "label"
_BLOCK_BYTES = 4 << 20
_INDEX = r"^[0-9]+$"


class _FieldMap:
    """Index -> field number, from a ``idx field`` file."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"data.libfm_field_map: {path}: no such file")
        names: list[str] = []
        indices: list[int] = []
        fields: list[int] = []
        position: dict[str, int] = {}
        seen: dict[int, int] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[0].isdigit():
                raise DataError(f"{path}:{number}:1: expected 'index field' (a non-negative integer, a name), got {line!r}")
            index, name = int(parts[0]), parts[1]
            if index in seen:
                raise DataError(f"{path}:{number}:1: index {index} is already mapped on line {seen[index]}")
            seen[index] = number
            if name not in position:
                position[name] = len(names)
                names.append(name)
            indices.append(index)
            fields.append(position[name])
        if not names:
            raise DataError(f"{path}: the field map is empty (expected 'index field' lines)")
        order = np.argsort(indices)
        self.path = path
        self.names = tuple(names)
        self.indices = np.asarray(indices, dtype=np.int64)[order]
        self.fields = np.asarray(fields, dtype=np.int64)[order]

    def lookup(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Field number of each index, and a mask of indices the map lacks."""
        at = np.clip(np.searchsorted(self.indices, indices), 0, len(self.indices) - 1)
        known = self.indices[at] == indices
        return np.where(known, self.fields[at], -1), ~known


def libfm_schema(path: Path, config: DataConfig) -> Schema:
    """The fields of a libFM file: the field map's, or ``f1..fN`` for the ``N`` pairs of its first line.

    Raises:
        DataError: an empty file or first line, or an unreadable field map.
    """
    if config.libfm_field_map is not None:
        return Schema(LIBFM_LABEL, (), _FieldMap(Path(config.libfm_field_map)).names)
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    pairs = len(first.split()) - 1
    if pairs < 1:
        raise DataError(f"{path}:1:1: expected 'label idx:val ...' with at least one pair, got {first.rstrip()!r}")
    return Schema(LIBFM_LABEL, (), tuple(f"f{j + 1}" for j in range(pairs)))


def _line_blocks(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Blocks of whole lines (without line ends) and the 1-based number of each block's first."""
    line = 1
    rest = b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_BLOCK_BYTES)
            data = rest + chunk
            if not chunk:
                if data:
                    yield line, [data.decode("utf-8", errors="strict").rstrip("\r")]
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            try:
                lines = data[:cut].decode("utf-8").split("\n")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not UTF-8 text near byte {exc.start} of a block: {exc.reason}") from exc
            yield line, [text.rstrip("\r") for text in lines]
            line += len(lines)


class _Block:
    """One block of lines, parsed; every check records its first bad token."""

    def __init__(self, path: Path, first_line: int, lines: list[str], schema: Schema, config: DataConfig,
                 field_map: _FieldMap | None) -> None:
        self.path, self.first_line = path, first_line
        self.bad_lines = np.zeros(len(lines), dtype=bool)
        self.first_error: tuple[int, int, str] | None = None  # (line index, column, message)
        text = pc.utf8_trim_whitespace(pa.array(lines, pa.string()))
        tokens = pc.split_pattern_regex(text, r"[ \t]+")
        counts = pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
        empty = pc.equal(text, "").to_numpy(zero_copy_only=False)
        counts[empty] = 0
        self._report(empty, np.ones(len(lines), np.int64), "expected 'label idx:val ...', got an empty line")
        flat = tokens.flatten()
        starts = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum(np.where(empty, 1, counts), out=starts[1:])
        has_label = counts > 0
        label_text = flat.take(pa.array(starts[:-1][has_label]))
        self.labels = np.zeros(len(lines), dtype=np.float32)
        values, bad = _convert.to_float(label_text, missing_is_bad=True)
        if config.label_threshold is not None:
            labels = (values >= config.label_threshold).astype(np.float32)
            expected = "expected a number"
        else:
            bad |= ~np.isin(values, (-1.0, 0.0, 1.0))
            labels = (values == 1.0).astype(np.float32)
            expected = "expected a label 0 or 1 (or -1 or +1)"
        self.labels[has_label] = labels
        line_of_label = np.flatnonzero(has_label)
        self._report_at(line_of_label[bad], 1, expected, label_text, np.flatnonzero(bad))

        # The pairs: every token but each line's first.
        pair_counts = np.maximum(counts - 1, 0)
        is_pair = np.ones(len(flat), dtype=bool)
        is_pair[starts[:-1][has_label]] = False
        is_pair[starts[:-1][empty]] = False
        pair_text = flat.filter(pa.array(is_pair))
        self.pair_line = np.repeat(np.arange(len(lines), dtype=np.int64), pair_counts)
        pair_starts = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum(pair_counts, out=pair_starts[1:])
        self.pair_position = np.arange(len(pair_text), dtype=np.int64) - pair_starts[self.pair_line]
        columns = self.pair_position + 2
        parts = pc.split_pattern(pair_text, ":", max_splits=2)
        two = (pc.list_value_length(parts).to_numpy(zero_copy_only=False) == 2)
        malformed = ~two
        padded = pc.if_else(pa.array(two), parts, pa.scalar(["", ""], pa.list_(pa.string())))
        index_text = pc.list_element(padded, 0)
        value_text = pc.list_element(padded, 1)
        index_ok = pc.fill_null(pc.match_substring_regex(index_text, _INDEX), False).to_numpy(zero_copy_only=False)
        self._report_at(self.pair_line[malformed], columns[malformed],
                        "expected idx:val (a non-negative integer index, a number)", pair_text, np.flatnonzero(malformed))
        bad_index = two & ~index_ok
        self._report_at(self.pair_line[bad_index], columns[bad_index], "expected a non-negative integer index",
                        pair_text, np.flatnonzero(bad_index))
        weights, bad_value = _convert.to_float(value_text, missing_is_bad=True)
        bad_value &= two & index_ok
        self._report_at(self.pair_line[bad_value], columns[bad_value], "expected a finite number after ':'",
                        pair_text, np.flatnonzero(bad_value))
        good = two & index_ok
        indices = pc.cast(pc.if_else(pa.array(good), index_text, "0"), pa.int64()).to_numpy(zero_copy_only=False)
        if config.libfm_num_features is not None:
            outside = good & (indices >= config.libfm_num_features)
            self._report_at(self.pair_line[outside], columns[outside],
                            f"index out of range: data.libfm_num_features is {config.libfm_num_features}",
                            pair_text, np.flatnonzero(outside))
        if field_map is None:
            self.fields = self.pair_position
            count = len(schema.sparse_features)
            wrong = has_label & (pair_counts != count)
            if wrong.any():
                found = int(pair_counts[np.flatnonzero(wrong)[0]])
                # the first missing pair, or the first extra one
                self._report(wrong, np.where(pair_counts < count, pair_counts + 2, count + 2),
                             f"expected {count} idx:val pairs, as on the first line, got {found} "
                             "(set data.libfm_field_map to name each index's field)")
        else:
            self.fields, unknown = field_map.lookup(indices)
            unknown &= good
            self._report_at(self.pair_line[unknown], columns[unknown], f"index not in the field map {field_map.path}",
                            pair_text, np.flatnonzero(unknown))
        self.ids = hash_strings(pc.cast(pa.array(indices), pa.string()))
        self.weights = weights.astype(np.float32)
        self.num_lines = len(lines)
        self.schema = schema

    def _report(self, bad: np.ndarray, columns: np.ndarray, message: str) -> None:
        lines = np.flatnonzero(bad)
        if not lines.size:
            return
        self.bad_lines[lines] = True
        line = int(lines[0])
        if self.first_error is None or (line, int(columns[line])) < self.first_error[:2]:
            self.first_error = (line, int(columns[line]), message)

    def _report_at(self, lines: np.ndarray, columns: np.ndarray | int, message: str, text: pa.Array,
                   rows: np.ndarray) -> None:
        if not len(lines):
            return
        self.bad_lines[lines] = True
        columns = np.broadcast_to(np.asarray(columns), lines.shape)
        first = int(np.lexsort((columns, lines))[0])
        where = (int(lines[first]), int(columns[first]))
        if self.first_error is None or where < self.first_error[:2]:
            self.first_error = (*where, f"{message}, got {text[int(rows[first])].as_py()!r}")

    def error(self) -> DataError | None:
        if self.first_error is None:
            return None
        line, column, message = self.first_error
        return DataError(f"{self.path}:{self.first_line + line}:{column}: {message}")

    def columns(self, keep: np.ndarray) -> ColumnarData:
        """The block's rows ``keep`` (a mask over its lines) as columns."""
        rows = np.cumsum(keep) - 1
        pair_kept = keep[self.pair_line]
        line, field = rows[self.pair_line[pair_kept]], self.fields[pair_kept]
        ids, weights = self.ids[pair_kept], self.weights[pair_kept]
        order = np.lexsort((line, field))  # stable: a bag keeps its file order
        line, field, ids, weights = line[order], field[order], ids[order], weights[order]
        num_rows = int(keep.sum())
        sparse = {}
        bounds = np.searchsorted(field, np.arange(len(self.schema.sparse_features) + 1))
        for j, name in enumerate(self.schema.sparse_features):
            part = slice(int(bounds[j]), int(bounds[j + 1]))
            offsets = np.zeros(num_rows + 1, dtype=np.int64)
            np.cumsum(np.bincount(line[part], minlength=num_rows), out=offsets[1:])
            field_weights = weights[part]
            sparse[name] = JaggedColumn(ids[part], offsets, None if (field_weights == 1).all() else field_weights)
        dense = np.zeros((num_rows, 0), dtype=np.float32)
        return ColumnarData(self.schema, self.labels[keep], dense, sparse, source=str(self.path))


def iter_libfm_blocks(path: Path, config: DataConfig, schema: Schema) -> Iterator[ColumnarData]:
    """Reads one libFM file block by block (a few MB of text at a time).

    Raises:
        DataError: the first malformed token (``path:line:column``), unless ``on_bad_row`` is
            ``skip``: its line is then dropped and counted in ``skipped_rows``.
    """
    field_map = _FieldMap(Path(config.libfm_field_map)) if config.libfm_field_map is not None else None
    skip = config.on_bad_row is BadRowPolicy.SKIP
    for first_line, lines in _line_blocks(path):
        block = _Block(path, first_line, lines, schema, config, field_map)
        error = block.error()
        if error is not None and not skip:
            raise error
        data = block.columns(~block.bad_lines)
        data.skipped_rows = int(block.bad_lines.sum())
        yield data
