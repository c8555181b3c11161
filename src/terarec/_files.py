"""Durable-file helpers shared by the prepared-data writer and checkpoints."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

__all__ = ["copy_sparse", "crc32_file", "fsync_path"]

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
