"""Reading interaction logs: user-item events, and the side features of users and items.

An interaction log (``data.format=interactions``) is one event per line: a user, an item and,
optionally, a rating and a time. terarec reads it from

- RecBole's atomic files (``.inter``, ``.user``, ``.item``): tab-separated, with a typed
  header ``name:type`` (``token``, ``token_seq``, ``float``);
- CSV (``.csv``, ``data.delimiter``), TSV (``.tsv``) or Parquet files with a header, the columns
  named by ``data.interactions.user_col`` / ``item_col`` / ``time_col`` / ``rating_col``;
- headerless ``.txt`` files of ``user item [rating [time]]`` per line, separated by a tab or a
  space (SASRec's ``Video.txt``, LightGCN's ``data1.txt``); their columns are called
  ``user_id``, ``item_id``, ``rating`` and ``timestamp``.

Users and items are categorical: their IDs are the 64-bit hashes of their text
(:mod:`terarec.data.hashing`), so ``item_id`` and ``history`` share one ID space. Events
keep their file order, which breaks ties in time (and is the time when there is none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from terarec.data.config import DataConfig, InteractionsConfig
from terarec.data.hashing import hash_strings
from terarec.data.types import JaggedColumn
from terarec.errors import ConfigError, DataError

__all__ = ["InteractionLog", "SideFeatures", "read_interactions", "read_side_features"]

_HEADERLESS_NAMES = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class InteractionLog:
    """Events of one or more files, in file order.

    Args:
        users (pa.Array): each event's user, as text.
        items (pa.Array): each event's item, as text.
        times (np.ndarray, optional): each event's time, ``float64``; ``None`` when the files
            have none (file order is the time).
        ratings (np.ndarray, optional): each event's rating, ``float64``, or ``None``.
        sources (tuple[str, ...]): the files read, in order.

    Shape:
        - users, items, times, ratings: :math:`(E)`
    """

    users: pa.Array
    items: pa.Array
    times: np.ndarray | None
    ratings: np.ndarray | None
    sources: tuple[str, ...]

    @property
    def num_events(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class SideFeatures:
    """Categorical side features of users or of items, one row per key.

    Args:
        keys (pa.Array): the user or item of each row, as text, each once.
        columns (dict[str, JaggedColumn]): per feature, its IDs: one per row for a ``token``
            column, a bag for ``token_seq`` (space-separated tokens).
    """

    keys: pa.Array
    columns: dict[str, JaggedColumn]


def _field_types(names: list[str], path: Path) -> tuple[list[str], dict[str, str]]:
    """Column names without RecBole's ``:type`` suffix, and each typed column's type."""
    plain, types = [], {}
    for name in names:
        base, _, kind = name.partition(":")
        if kind and kind not in ("token", "token_seq", "float", "float_seq"):
            raise DataError(f"{path}:1: column {name!r} has type {kind!r}; expected token, token_seq or float")
        plain.append(base)
        if kind:
            types[base] = kind
    if len(set(plain)) != len(plain):
        raise DataError(f"{path}:1: the header names a column twice: {plain}")
    return plain, types


def _read_table(path: Path, config: DataConfig) -> tuple[pa.Table, dict[str, str], int]:
    """Every column of one file as text (Parquet as stored), the RecBole types of its columns,
    and how many header lines precede its first row (for error messages)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pq.read_table(path)
        names, types = _field_types(table.column_names, path)
        return table.rename_columns(names), types, 0
    with path.open("rb") as handle:
        first = handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    headerless = suffix == ".txt"
    if headerless:
        delimiter = "\t" if "\t" in first else " "
    else:
        delimiter = "\t" if suffix in (".tsv", ".inter", ".user", ".item") else config.delimiter
    fields = first.split(delimiter)
    if headerless:
        if not 2 <= len(fields) <= len(_HEADERLESS_NAMES):
            raise DataError(f"{path}:1: expected 'user item [rating [time]]', got {len(fields)} field(s)")
        names, types = list(_HEADERLESS_NAMES[: len(fields)]), {}
    else:
        names, types = _field_types(fields, path)
    bad_rows: list[pacsv.InvalidRow] = []

    def record(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "error"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=0 if headerless else 1, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"' if delimiter == "," else False, invalid_row_handler=record
            ),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        if bad_rows:
            row = bad_rows[0]
            line = row.number if row.number is not None else _line_of(path, row.text)
            raise DataError(
                f"{path}:{line}: expected {row.expected_columns} fields, got {row.actual_columns}: {row.text[:80]!r}"
            ) from exc
        raise DataError(f"{path}: {exc}") from exc
    return table, types, 0 if headerless else 1


def _line_of(path: Path, text: str) -> int:
    """The number of the first line of ``path`` that reads ``text`` (the parser's threads do not
    number rows; this runs only to report an error)."""
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.rstrip("\r\n") == text:
                return number
    return 0


def _column(table: pa.Table, name: str, path: Path, key: str) -> pa.Array:
    if name not in table.column_names:
        raise ConfigError(f"{key}={name!r}: {path} has no such column (columns: {', '.join(table.column_names)})")
    return table.column(name).combine_chunks()


def _numbers(column: pa.Array, path: Path, header_lines: int, position: int, name: str) -> np.ndarray:
    """A text (or numeric) column as ``float64``, refusing any value that is not a finite number."""
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        valid = np.asarray(column.is_valid())
    else:
        text = pc.utf8_trim_whitespace(column.cast(pa.string()))
        number = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
        valid = np.asarray(pc.fill_null(pc.match_substring_regex(text, number), False))
        values = np.zeros(len(column), np.float64)
        if valid.any():
            values[valid] = pc.cast(pc.filter(text, pa.array(valid)), pa.float64()).to_numpy()
    valid &= np.isfinite(values)
    if not valid.all():
        row = int(np.flatnonzero(~valid)[0])
        raise DataError(
            f"{path}:{row + 1 + header_lines}:{position + 1}: column {name!r} must hold a number, "
            f"got {column[row].as_py()!r}"
        )
    return values


def read_interactions(paths: list[Path], config: DataConfig) -> InteractionLog:
    """The events of ``paths``, in file order (see the module docstring for the formats).

    Args:
        paths (list[Path]): the files, read one after another.
        config (DataConfig): ``data.interactions`` names the columns; ``data.delimiter`` is a CSV
            file's delimiter.

    Raises:
        ConfigError: when a named column is missing, naming the key, the file and its columns.
        DataError: on a malformed line (``file:line``) or a rating or time that is not a number
            (``file:line:column``), or a missing user or item.
    """
    settings: InteractionsConfig = config.interactions
    users, items, times, ratings = [], [], [], []
    for path in paths:
        table, _, header_lines = _read_table(path, config)
        if table.num_rows == 0:
            raise DataError(f"{path}: holds no events")
        names = table.column_names
        user = _column(table, settings.user_col, path, "data.interactions.user_col")
        item = _column(table, settings.item_col, path, "data.interactions.item_col")
        for column, name in ((user, settings.user_col), (item, settings.item_col)):
            text = column.cast(pa.string())
            empty = np.asarray(pc.fill_null(pc.equal(pc.utf8_length(text), 0), True))
            if empty.any():
                row = int(np.flatnonzero(empty)[0])
                raise DataError(f"{path}:{row + 1 + header_lines}:{names.index(name) + 1}: column {name!r} is empty")
        users.append(user.cast(pa.string()))
        items.append(item.cast(pa.string()))
        time_name = settings.time_col or ("timestamp" if "timestamp" in names else None)
        rating_name = settings.rating_col or ("rating" if "rating" in names else None)
        if time_name is not None:
            column = _column(table, time_name, path, "data.interactions.time_col")
            times.append(_numbers(column, path, header_lines, names.index(time_name), time_name))
        if rating_name is not None:
            column = _column(table, rating_name, path, "data.interactions.rating_col")
            ratings.append(_numbers(column, path, header_lines, names.index(rating_name), rating_name))
    for found, what in ((times, "time"), (ratings, "rating")):
        if found and len(found) != len(paths):
            raise DataError(f"{', '.join(map(str, paths))}: some files have a {what} column and some do not")
    return InteractionLog(
        users=pa.concat_arrays(users),
        items=pa.concat_arrays(items),
        times=np.concatenate(times) if times else None,
        ratings=np.concatenate(ratings) if ratings else None,
        sources=tuple(str(p) for p in paths),
    )


def read_side_features(path: str, key: str, config: DataConfig, reserved: set[str]) -> SideFeatures:
    """The side features of a ``.user`` / ``.item`` file (or CSV/TSV/Parquet) keyed by ``key``.

    Every column but the key and those in ``data.ignore`` becomes a categorical feature:
    ``token_seq`` columns of a RecBole header as bags of their space-separated tokens, the rest
    as one ID each. RecBole ``float`` columns are refused: name them in ``data.ignore``.

    Raises:
        ConfigError: when the key column is missing, or a feature's name is taken (``reserved``).
        DataError: when a key appears twice (``file:line``), or a column is a RecBole float.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: no such file")
    table, types, header_lines = _read_table(file, config)
    keys = _column(table, key, file, f"the key of {path}").cast(pa.string())
    unique = pc.unique(keys)
    if len(unique) != len(keys):
        counts = pc.value_counts(keys)
        repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))[0].as_py()
        first, second = np.flatnonzero(np.asarray(pc.equal(keys, repeated)))[:2]
        raise DataError(
            f"{path}:{second + 1 + header_lines}: {key} {repeated!r} appears again (first on line {first + 1 + header_lines})"
        )
    columns: dict[str, JaggedColumn] = {}
    for name in table.column_names:
        if name == key or name in config.ignore:
            continue
        if name in reserved:
            raise ConfigError(f"{path}: side feature {name!r} clashes with a feature of that name; list it in data.ignore")
        kind = types.get(name, "token")
        if kind.startswith("float"):
            raise DataError(
                f"{path}:1:{table.column_names.index(name) + 1}: column {name!r} is a float; side features are "
                "categorical (list it in data.ignore)"
            )
        text = table.column(name).combine_chunks().cast(pa.string())
        if kind == "token_seq":
            tokens = pc.split_pattern(pc.utf8_trim_whitespace(text), " ")
            lengths = np.asarray(pc.list_value_length(tokens).fill_null(0), dtype=np.int64)
            flat = tokens.flatten()
            keep = np.asarray(pc.greater(pc.utf8_length(flat), 0))
            values = hash_strings(flat)[keep]
            bag_of = np.repeat(np.arange(len(text)), lengths)[keep]
            offsets = np.zeros(len(text) + 1, np.int64)
            np.cumsum(np.bincount(bag_of, minlength=len(text)), out=offsets[1:])
            columns[name] = JaggedColumn(values, offsets)
        else:
            columns[name] = JaggedColumn(hash_strings(text), np.arange(len(text) + 1, dtype=np.int64))
    return SideFeatures(keys, columns)
