"""A directory that data files arrive in, read one file at a time in name order.

A file is *ready* once it has its final name: a writer writes it under a hidden name (``.name``)
or with a partial-file suffix (``.tmp``, ``.part``, ``.partial``, ``.inprogress``) and renames it
in, which is atomic on one file system, so a reader never sees half a file. Names must sort in
the order the files are to be trained (zero-padded numbers or ISO timestamps: ``part-000042.csv``,
``2026-12-08T01.tsv``). Nothing is passed over silently: a file whose suffix names no data
format, and a file that arrives with a name sorting before one already read (and so is not
read), are each reported once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from terarec.data.config import DataConfig
from terarec.data.derived import derive_features
from terarec.data.readers import read_files
from terarec.data.sources import infer_format
from terarec.data.types import ColumnarData, DataFormat, Schema
from terarec.errors import ConfigError, DataError

__all__ = ["PARTIAL_SUFFIXES", "StreamDirectory", "StreamListing", "read_stream_file"]

PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".inprogress")
"""Suffixes of files still being written; they are read once renamed."""


@dataclass(frozen=True)
class StreamListing:
    """What one look at a stream directory found.

    Args:
        ready (tuple[Path, ...]): ready data files after the position, in name order.
        late (tuple[str, ...]): data files first seen now that sort at or before the position
            and are not among the files read: they arrived after a file that sorts after them
            had been read, and are not read.
        ignored (tuple[str, ...]): names first seen now whose suffix names no data format.
    """

    ready: tuple[Path, ...]
    late: tuple[str, ...]
    ignored: tuple[str, ...]


class StreamDirectory:
    """The files of ``path`` in name order, for a reader that takes each once (module docstring).

    Args:
        path (Path): the directory.
        fmt (DataFormat, optional): the files' format; ``None`` infers each file's from its suffix.
            Default: ``None``
        read (Iterable[str], optional): the names of the files read already (a resumed reader's).
            Default: ``()``

    Raises:
        ConfigError: when ``path`` is not a directory, or ``fmt`` cannot be streamed.

    Example::

        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("b.csv", "a.csv", ".c.csv", "d.csv.tmp", "notes.md"):
        ...     _ = (root / name).write_text("label\\n1\\n")
        >>> listing = StreamDirectory(root).poll(after=None)
        >>> [p.name for p in listing.ready], listing.ignored
        (['a.csv', 'b.csv'], ('notes.md',))
        >>> [p.name for p in StreamDirectory(root).poll(after="a.csv").ready]
        ['b.csv']
    """

    def __init__(self, path: Path, fmt: DataFormat | None = None, read: Iterable[str] = ()) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConfigError(f"train.stream.path {self.path}: not a directory")
        if fmt in (DataFormat.PREPARED, DataFormat.INTERACTIONS):
            raise ConfigError(f"train.stream.path: data.format={fmt.value} cannot be streamed; stream CSV, TSV, Parquet or libFM files")
        self.format = fmt
        self._seen: set[str] = set(read)

    def format_of(self, path: Path) -> DataFormat | None:
        """The format ``path`` is read in, or ``None`` when it is not a data file."""
        inferred = infer_format(path)
        if inferred in (None, DataFormat.INTERACTIONS, DataFormat.PREPARED):
            return None
        return self.format or inferred

    def poll(self, after: str | None) -> StreamListing:
        """The ready files whose names sort after ``after`` (every one when ``None``), and the
        late and ignored names not reported before."""
        names = sorted(
            entry.name
            for entry in self.path.iterdir()
            if not entry.name.startswith(".") and not entry.name.endswith(PARTIAL_SUFFIXES) and entry.is_file()
        )
        new = [name for name in names if name not in self._seen]
        self._seen.update(new)
        data = [name for name in names if self.format_of(self.path / name) is not None]
        ignored = tuple(name for name in new if self.format_of(self.path / name) is None)
        late = () if after is None else tuple(name for name in new if name <= after and name in data)
        ready = tuple(self.path / name for name in data if after is None or name > after)
        return StreamListing(ready, late, ignored)


def read_stream_file(path: Path, fmt: DataFormat, config: DataConfig, schema: Schema | None = None) -> ColumnarData:
    """One file of a stream with the derived features ``config`` declares.

    Args:
        path (Path): the file.
        fmt (DataFormat): its format.
        config (DataConfig): the reading options (label, dense columns, bad rows, derived features).
        schema (Schema, optional): the stream's schema (its first file's); ``None`` accepts any.
            Default: ``None``

    Raises:
        DataError: when a row is malformed (file, line and column named) or the file's columns
            differ from ``schema``.
    """
    data = derive_features(read_files([path], fmt, config), config)
    if schema is not None and data.schema != schema:
        differences = [
            f"{name} {list(getattr(data.schema, name))} instead of {list(getattr(schema, name))}"
            for name in ("dense_features", "sparse_features")
            if getattr(data.schema, name) != getattr(schema, name)
        ]
        if data.schema.label != schema.label:
            differences.append(f"label {data.schema.label!r} instead of {schema.label!r}")
        raise DataError(f"{path}: its columns differ from the stream's first file: {'; '.join(differences)}")
    return data
