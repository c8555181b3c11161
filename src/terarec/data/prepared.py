"""terarec's prepared on-disk layout: raw files converted once, then memory-mapped.

A prepared directory holds ``meta.json``, ``stats.json`` and one raw little-endian file per
column: ``labels.f32`` :math:`(R)`, ``dense.f32`` :math:`(R, D_{dense})` row-major and, per
sparse feature ``f``, ``f.values.i64`` :math:`(N_f)` and ``f.offsets.i64`` :math:`(R + 1)`, and
``f.weights.f32`` :math:`(N_f)` when its IDs carry values other than 1 (libFM input).
``meta.json`` records the format version, the schema, the row count and, per file, its dtype,
shape, size in bytes and CRC-32 (``zlib.crc32``), so truncation and corruption are caught.
Opening is instant: columns are read-only ``np.memmap`` s, paged in by the OS as batches need them.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from terarec._files import crc32_file, fsync_path
from terarec.data.config import DataConfig
from terarec.data.readers import check_files_exist, iter_blocks, resolve_schema
from terarec.data.stats import DatasetStats, StatsAccumulator
from terarec.data.types import ColumnarData, DataFormat, JaggedColumn, Schema
from terarec.errors import DataError

__all__ = ["FORMAT_VERSION", "open_prepared", "prepare", "read_prepared_stats"]

FORMAT_VERSION = 1


class _ColumnWriter:
    """Appends arrays to one column file, keeping its size and running CRC-32."""

    def __init__(self, path: Path, dtype: str, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape = path, dtype, row_shape
        self.handle: BinaryIO = open(path, "wb")
        self.count = 0
        self.nbytes = 0
        self.crc = 0

    def write(self, array: np.ndarray) -> None:
        raw = np.ascontiguousarray(array, dtype=np.dtype(self.dtype)).tobytes()
        self.handle.write(raw)
        self.crc = zlib.crc32(raw, self.crc)
        self.nbytes += len(raw)
        self.count += array.shape[0]

    def close(self) -> dict[str, object]:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return {"file": self.path.name, "dtype": self.dtype, "shape": [self.count, *self.row_shape],
                "bytes": self.nbytes, "crc32": self.crc}


def prepare(paths: Sequence[Path], fmt: DataFormat, config: DataConfig, out_dir: Path,
            *, overwrite: bool = False) -> DatasetStats:
    """Converts raw example files once into a prepared directory for :func:`open_prepared`.

    Streams the input block by block (memory stays bounded by a few blocks, whatever the
    input size), writes every column file into a temporary directory beside ``out_dir``,
    fsyncs, then renames it into place, so ``out_dir`` is either complete or absent.

    Args:
        paths (Sequence[Path]): raw files, as for :func:`terarec.data.read_files`.
        fmt (DataFormat): their format (``CRITEO``, ``CSV`` or ``PARQUET``).
        config (DataConfig): how to read them.
        out_dir (Path): the directory to create.
        overwrite (bool, optional): replace an existing ``out_dir``. Default: ``False``

    Returns:
        DatasetStats: statistics of the prepared rows (also saved as ``stats.json``).

    Raises:
        DataError: as :func:`read_files`, or if ``out_dir`` exists and ``overwrite`` is false.

    Example::

        >>> import tempfile, pathlib
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (tmp / "a.csv").write_text("click,user,item\\n1,u1,i1\\n0,u2,i1\\n")
        >>> prepare([tmp / "a.csv"], DataFormat.CSV, DataConfig(label="click"), tmp / "prep").num_rows
        2
        >>> data = open_prepared(tmp / "prep", verify=True)
        >>> data.num_rows, data.sparse["item"].offsets.tolist()
        (2, [0, 1, 2])
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DataError(f"{out_dir}: already exists (pass overwrite=True / --overwrite to replace it)")
    paths = [Path(p) for p in paths]
    check_files_exist(paths)
    schema, _ = resolve_schema(paths[0], fmt, config)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        stats = _write_columns(paths, fmt, config, tmp, schema)
        fsync_path(tmp)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
        fsync_path(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


def _write_columns(paths: list[Path], fmt: DataFormat, config: DataConfig, tmp: Path,
                   schema: Schema) -> DatasetStats:
    blocks = iter_blocks(paths, fmt, config)
    labels = _ColumnWriter(tmp / "labels.f32", "<f4", ())
    dense = _ColumnWriter(tmp / "dense.f32", "<f4", (schema.num_dense,))
    values = {f: _ColumnWriter(tmp / f"{f}.values.i64", "<i8", ()) for f in schema.sparse_features}
    offsets = {f: _ColumnWriter(tmp / f"{f}.offsets.i64", "<i8", ()) for f in schema.sparse_features}
    # A column gets a weights file from its first block with values other than 1 on (the IDs
    # written before it get weight 1).
    weights: dict[str, _ColumnWriter] = {}
    for f in schema.sparse_features:
        offsets[f].write(np.zeros(1, dtype=np.int64))
    acc = StatsAccumulator(schema.sparse_features)
    for block in blocks:
        acc.update(block)
        labels.write(block.labels)
        dense.write(block.dense)
        for f in schema.sparse_features:
            col = block.sparse[f]
            if col.weights is not None and f not in weights:
                weights[f] = _ColumnWriter(tmp / f"{f}.weights.f32", "<f4", ())
                weights[f].write(np.ones(values[f].count, dtype=np.float32))
            if f in weights:
                weights[f].write(col.weights_or_ones())
            offsets[f].write(col.offsets[1:] + values[f].count)
            values[f].write(col.values)
    stats = acc.result()
    if stats.num_rows == 0:
        raise DataError(f"{', '.join(map(str, paths))}: no example rows to prepare")
    meta = {
        "format_version": FORMAT_VERSION,
        "schema": schema.to_dict(),
        "num_rows": stats.num_rows,
        "skipped_rows": stats.skipped_rows,
        "source": ",".join(str(p) for p in paths),
        "columns": {
            "labels": labels.close(),
            "dense": dense.close(),
            "sparse": {f: {"values": values[f].close(), "offsets": offsets[f].close(),
                           **({"weights": weights[f].close()} if f in weights else {})}
                       for f in schema.sparse_features},
        },
    }
    for name, obj in (("stats.json", stats.to_dict()), ("meta.json", meta)):
        with open(tmp / name, "w") as handle:
            json.dump(obj, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
    return stats



def _map_column(directory: Path, entry: dict[str, object], verify: bool) -> np.ndarray:
    path = directory / str(entry["file"])
    if not path.is_file():
        raise DataError(f"{path}: missing column file of prepared dataset {directory}")
    expected, actual = int(entry["bytes"]), path.stat().st_size  # type: ignore[arg-type]
    if actual != expected:
        raise DataError(f"{path}: expected {expected} bytes (from meta.json), found {actual}: "
                        f"the file is truncated or corrupt; run terarec prepare again")
    if verify:
        crc = crc32_file(path)
        if crc != int(entry["crc32"]):  # type: ignore[arg-type]
            raise DataError(f"{path}: checksum mismatch: meta.json says crc32 {entry['crc32']}, file has {crc}")
    shape = tuple(int(s) for s in entry["shape"])  # type: ignore[attr-defined]
    dtype = np.dtype(str(entry["dtype"]))
    if expected == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def open_prepared(directory: Path, verify: bool = False) -> ColumnarData:
    """Opens a prepared directory as a memory-mapped, read-only :class:`ColumnarData`.

    Args:
        directory (Path): a directory written by :func:`prepare`.
        verify (bool, optional): also check every file's CRC-32 (reads all bytes once).
            Default: ``False`` (sizes are always checked)

    Raises:
        DataError: no ``meta.json``, an unknown format version, or a column file missing,
            of the wrong size (naming the file and the expected and actual bytes) or, with
            ``verify``, with the wrong checksum.
    """
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{directory}: not a prepared dataset (no meta.json); run terarec prepare first")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{meta_path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: format_version {meta.get('format_version')!r} is not supported "
                        f"(expected {FORMAT_VERSION})")
    schema = Schema.from_dict(meta["schema"])
    cols = meta["columns"]
    sparse = {}
    for f in schema.sparse_features:
        entry = cols["sparse"][f]
        weights = _map_column(directory, entry["weights"], verify) if "weights" in entry else None
        sparse[f] = JaggedColumn(_map_column(directory, entry["values"], verify),
                                 _map_column(directory, entry["offsets"], verify), weights)
    return ColumnarData(schema, _map_column(directory, cols["labels"], verify),
                        _map_column(directory, cols["dense"], verify), sparse,
                        skipped_rows=int(meta.get("skipped_rows", 0)), source=str(directory))


def read_prepared_stats(directory: Path) -> DatasetStats:
    """The :class:`DatasetStats` saved beside a prepared dataset."""
    return DatasetStats.from_dict(json.loads((Path(directory) / "stats.json").read_text()))
