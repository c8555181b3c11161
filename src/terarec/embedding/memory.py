"""Memory planning: refuse a configuration that will not fit before allocating it.

The trainer sums the tables' :class:`MemoryEstimate` (from
:meth:`EmbeddingCollection.estimate_memory <terarec.embedding.collection.EmbeddingCollection.estimate_memory>`,
which allocates nothing) and calls :func:`check_memory`, so a table of ``10^12`` rows fails in
milliseconds with the numbers, not minutes later by the OOM killer.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from terarec.errors import PlanError

__all__ = ["MemoryEstimate", "available_memory_bytes", "check_disk", "check_memory", "format_bytes"]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a component will use, per memory tier.

    Example::

        >>> (MemoryEstimate(10, 0) + MemoryEstimate(5, 100)).total_bytes
        115
    """

    ram_bytes: int
    disk_bytes: int = 0

    def __add__(self, other: MemoryEstimate) -> MemoryEstimate:
        return MemoryEstimate(self.ram_bytes + other.ram_bytes, self.disk_bytes + other.disk_bytes)

    @property
    def total_bytes(self) -> int:
        return self.ram_bytes + self.disk_bytes


_LARGEST_SHOWN = 3


def available_memory_bytes() -> int:
    """RAM available to new allocations now, in bytes (``psutil.virtual_memory().available``)."""
    return int(psutil.virtual_memory().available)


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path``, or its nearest existing parent (``path``
    need not exist yet).

    Example::

        >>> free_disk_bytes(Path("not/made/yet")) > 0
        True
    """
    existing = Path(path).resolve()
    while not existing.exists():
        existing = existing.parent
    return int(shutil.disk_usage(existing).free)


def format_bytes(num_bytes: int) -> str:
    """Human-readable binary size.

    Example::

        >>> format_bytes(68000), format_bytes(3 * 2**30), format_bytes(512)
        ('66.4 KiB', '3.0 GiB', '512 B')
    """
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024.0 or unit == "PiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024.0
    raise AssertionError("unreachable")


def check_memory(
    estimates: Mapping[str, MemoryEstimate], available_bytes: int | None = None, headroom: float = 0.9
) -> None:
    """Raises :class:`~terarec.errors.PlanError` when the tables' RAM would exceed
    ``headroom * available_bytes``.

    Args:
        estimates (Mapping[str, MemoryEstimate]): bytes per table name.
        available_bytes (int, optional): RAM to plan against; ``None`` asks the OS
            (:func:`available_memory_bytes`). Default: ``None``
        headroom (float, optional): fraction of ``available_bytes`` the tables may use, leaving
            the rest to the dense model, batches and the OS. Default: ``0.9``

    Raises:
        PlanError: naming the total, the budget, the available bytes and the largest tables.
        ValueError: if ``headroom`` is not in ``(0, 1]``.

    Example::

        >>> check_memory({"t_user": MemoryEstimate(ram_bytes=2**20)}, available_bytes=2**30)
        >>> check_memory({"t_user": MemoryEstimate(ram_bytes=2**40)}, available_bytes=2**30)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        terarec.errors.PlanError: embedding tables need 1099511627776 bytes (1.0 TiB) of RAM, ...
    """
    if not 0.0 < headroom <= 1.0:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    available = available_memory_bytes() if available_bytes is None else int(available_bytes)
    total = sum(estimate.ram_bytes for estimate in estimates.values())
    budget = int(available * headroom)
    if total <= budget:
        return
    tables = _largest({name: estimate.ram_bytes for name, estimate in estimates.items()})
    raise PlanError(
        f"embedding tables need {total} bytes ({format_bytes(total)}) of RAM, more than the budget of "
        f"{budget} bytes ({format_bytes(budget)}), {headroom:g} of the {available} bytes "
        f"({format_bytes(available)}) available; largest tables: {tables}. Reduce their num_embeddings "
        f"or embedding_dim, or keep them on disk behind a RAM cache (embedding.tiered.cache_bytes)."
    )


def check_disk(estimates: Mapping[str, MemoryEstimate], directory: Path, free_bytes: int | None = None) -> None:
    """Raises :class:`~terarec.errors.PlanError` when tiered tables would not fit on the disk
    holding ``directory`` (the tables' files may grow to their full size).

    Args:
        estimates (Mapping[str, MemoryEstimate]): bytes per table name.
        directory (Path): where the tables' files go (need not exist yet).
        free_bytes (int, optional): free bytes to plan against; ``None`` asks the OS. Default: ``None``

    Example::

        >>> check_disk({"t": MemoryEstimate(ram_bytes=0, disk_bytes=2**40)}, Path("."), free_bytes=2**30)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        terarec.errors.PlanError: tiered tables need 1099511627776 bytes (1.0 TiB) on disk at ...
    """
    total = sum(estimate.disk_bytes for estimate in estimates.values())
    if total == 0:
        return
    free = free_disk_bytes(directory) if free_bytes is None else int(free_bytes)
    if total <= free:
        return
    tables = _largest({name: estimate.disk_bytes for name, estimate in estimates.items()})
    raise PlanError(
        f"tiered tables need {total} bytes ({format_bytes(total)}) on disk at {directory}, but only {free} bytes "
        f"({format_bytes(free)}) are free; largest: {tables}. Free space, choose another train.tables_dir, or "
        f"reduce num_embeddings / embedding_dim."
    )


def _largest(sizes: Mapping[str, int]) -> str:
    """``"'a': 10 bytes (10 B), ..."`` for the few largest of ``sizes``."""
    largest = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:_LARGEST_SHOWN]
    return ", ".join(f"{name!r}: {size} bytes ({format_bytes(size)})" for name, size in largest)
