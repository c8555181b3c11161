"""File helpers shared by the prepared-data writer, checkpoints and the tables' save/load."""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from terarec.errors import DataError

__all__ = ["copy_sparse", "crc32_file", "fsync_path", "load_checked_array", "verify_files"]

_CHUNK = 1 << 22


def fsync_path(path: Path) -> None:
    """Flushes a file's or a directory's entry to disk (a directory, to make a rename durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def crc32_file(path: Path) -> int:
    """CRC-32 (``zlib.crc32``) of a file's bytes, read in 4 MiB chunks."""
    checksum = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            checksum = zlib.crc32(chunk, checksum)
    return checksum


def copy_sparse(source: Path, target: Path) -> None:
    """Copies ``source`` to a new file ``target`` (same size), skipping holes so a sparse file
    stays sparse, then fsyncs it. The kernel copies the data extents (``copy_file_range``)."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            stop = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            position = start
            while position < stop:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), stop - position, position, position)
                if copied == 0:
                    raise OSError(f"{source}: copy stopped at byte {position} of {stop}")
                position += copied
            offset = stop
        os.ftruncate(dst.fileno(), size)
        os.fsync(dst.fileno())


def load_checked_array(path: Path, expected: np.ndarray) -> np.ndarray:
    """The ``.npy`` array in ``path``, memory-mapped (so checking and copying a big table never
    holds it twice), after checking it has ``expected``'s dtype and shape.

    Raises:
        ValueError: a missing, truncated or foreign file, or another dtype or shape, naming ``path``.
    """
    if not path.is_file():
        raise ValueError(f"{path}: missing file, expected a {expected.dtype} array of shape {expected.shape}")
    try:
        array = np.load(path, mmap_mode="r" if expected.size else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: truncated or not a plain .npy array ({err})") from err
    if array.dtype != expected.dtype or array.shape != expected.shape:
        raise ValueError(
            f"{path}: expected a {expected.dtype} array of shape {expected.shape}, got {array.dtype} of shape {array.shape}"
        )
    return array


def verify_files(directory: Path, entries: Mapping[str, Mapping[str, int]], kind: str) -> None:
    """Checks the files a manifest lists (``name`` → its ``bytes`` and ``crc32``) below
    ``directory``; ``kind`` (``"checkpoint"``, ``"model directory"``) names their holder in errors.

    Raises:
        DataError: naming the first file that is missing, of another size, or corrupt.
    """
    for name, expected in entries.items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"{path}: missing from {kind}")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise DataError(f"{path}: {kind} file is {size} bytes, the manifest says {expected['bytes']}")
        if crc32_file(path) != expected["crc32"]:
            raise DataError(f"{path}: {kind} file is corrupt (CRC-32 mismatch)")
