"""Durable-file helpers shared by the prepared-data writer and checkpoints."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

__all__ = ["crc32_file", "fsync_path"]

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
