"""Tiered row storage: every row in a slab file on local disk, the hot ones in a RAM cache.

Why a slab file managed by terarec rather than an embedded key-value store (RocksDB, LMDB):
rows are fixed-size records addressed by a dense row index, so the file offset *is* the index
(no keys, no B-tree, no compaction, no write amplification); a miss is one ``pread`` of one
record (``D + S`` values of 4 bytes, or of 2 in bf16) and a write-back one ``pwrite``, issued
from compiled code for a whole batch at once. The cache is a pair of NumPy arrays addressed
by slot, so the pooling and optimizer kernels run on it unchanged, and a GCLOCK hand (CLOCK
with a small use count per slot: an LRU approximation that favours rows used often) picks
victims. The file is created sparse: a row never written reads as its initial value (computed,
like a RAM table's), so a 40 GB table starts instantly.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terarec._files import copy_sparse, fsync_path
from terarec.embedding import _tiered_kernels as _k
from terarec.embedding.config import (
    DataType,
    InitConfig,
    TieredConfig,
    tiered_bookkeeping_bytes,
)
from terarec.embedding.memory import MemoryEstimate
from terarec.embedding.storage import (
    NO_ROWS,
    RowStorage,
    as_float32,
    encode,
    init_arguments,
    initialize_rows,
)
from terarec.errors import ConfigError

__all__ = ["PHASES", "TieredRowStorage", "TieredStats"]

PHASES = ("plan", "write_back", "commit", "load")
"""The phases of making a batch's rows resident, in order, as :class:`TieredStats` times them."""

_FORMAT_VERSION = 1
_MANIFEST = "tiered.json"
# Concurrent small reads keep an SSD's queue full: with 32 in flight a virtio or NVMe disk
# gives most of its random-read rate while the threads mostly wait in the kernel, not on the CPU.
_IO_THREADS = 32
_SECTOR = 512  # O_DIRECT transfers whole sectors
_STAT_BLOCK_BYTES = 512  # st_blocks counts 512-byte units (POSIX)
_ROWS_PER_IO_TASK = 16
_pool: ThreadPoolExecutor | None = None


def _io_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="terarec-io")
    return _pool


@dataclass(frozen=True)
class TieredStats:
    """Cumulative cache counters of a :class:`TieredRowStorage`.

    Attributes:
        hits (int): batch rows found in the cache.
        misses (int): batch rows loaded into it (from disk or initialised).
        rows_read (int): rows read from the file.
        rows_written (int): rows written back to the file.
        record_bytes (int): bytes per row on disk.
        phase_seconds (dict[str, float], optional): seconds spent in each phase of making batches
            resident (``plan``, ``write_back``, ``commit``, ``load``; see
            :mod:`~terarec.embedding._tiered_kernels`). Default: zeros
    """

    hits: int
    misses: int
    rows_read: int
    rows_written: int
    record_bytes: int
    phase_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class TieredRowStorage(RowStorage):
    """A table's rows in ``directory/<name>.slab`` with the hot ones cached in RAM.

    The cache holds ``cache_bytes // (b (D + S))`` rows (weights and optimizer state, ``b`` bytes
    per value: 4 for fp32, 2 for bf16; weights and state share the dtype). A batch
    resolved while training marks its rows dirty; dirty rows are written back when evicted,
    and by :meth:`flush`. The slots of the current and the previous batch are never evicted,
    so the cache must hold two batches' distinct rows; a smaller one is refused with the numbers.

    Checkpoints (:meth:`save`) keep the file's history in ``directory/<name>.snapshots/``: a
    full copy every ``full_snapshot_every`` saves and, between them, only the rows written
    since the previous save. A checkpoint directory receives hard links to that chain (no
    copy), so older checkpoints stay valid after the store moves on.

    Args:
        num_embeddings (int): rows ``R``.
        embedding_dim (int): ``D``.
        state_width (int): optimizer floats per row ``S``.
        init (InitConfig): row initialisation.
        seed (int): the table's seed (as :class:`~terarec.embedding.storage.RamRowStorage`).
        config (TieredConfig): cache size and snapshot policy.
        directory (Path): where the slab file lives (local disk; created if missing).
        name (str): the file's stem, usually the table name.
        initial_state (float, optional): starting value of every state float. Default: ``0.0``
        dtype (DataType, optional): storage of weights and state, in the cache and the file.
            Default: ``DataType.FP32``

    Attributes:
        weights (np.ndarray): the cache's weights, :math:`(C, D)`, ``float32`` or bfloat16 bits.
        state (np.ndarray): the cache's optimizer state, :math:`(C, S)`, likewise.
        path (Path): the slab file.

    Raises:
        ValueError: when the cache cannot hold one row, or the disk lacks room for the table.

    Example::

        >>> import tempfile
        >>> storage = TieredRowStorage(1000, 4, 1, InitConfig(), 0, TieredConfig(cache_bytes=20 * 10), tempfile.mkdtemp(), "t")
        >>> storage.weights.shape  # 10 rows of 4 weights + 1 state float fit the cache
        (10, 4)
        >>> storage.resolve(np.array([3, 500], dtype=np.int64)).shape
        (2,)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        state_width: int,
        init: InitConfig,
        seed: int,
        config: TieredConfig,
        directory: Path | str,
        name: str,
        initial_state: float = 0.0,
        dtype: DataType = DataType.FP32,
    ) -> None:
        record_values = embedding_dim + state_width
        self._record_bytes = dtype.itemsize * record_values
        capacity = min(config.cache_bytes // self._record_bytes, num_embeddings)
        if capacity < 1:
            raise ValueError(
                f"table {name!r}: cache_bytes={config.cache_bytes} cannot hold one row of {self._record_bytes} bytes"
            )
        self.config = config
        self.num_embeddings = int(num_embeddings)
        self.path = Path(directory) / f"{name}.slab"
        self._store = Path(directory) / f"{name}.snapshots"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_disk(self.num_embeddings * self._record_bytes)
        self.weights = np.zeros((capacity, embedding_dim), dtype=dtype.numpy_dtype)
        self.state = np.zeros((capacity, state_width), dtype=dtype.numpy_dtype)
        seed64 = np.uint64(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        self._init = init
        stored_initial_state = encode(initial_state, dtype.numpy_dtype)[()]  # a scalar of the storage's dtype
        self._init_args = (seed64, *init_arguments(init, num_embeddings), stored_initial_state)
        self._record = np.empty(record_values, dtype=dtype.numpy_dtype)
        self._report = np.zeros(6, dtype=np.int64)
        self._phase_seconds = [0.0] * len(PHASES)
        self._on_disk = np.zeros((num_embeddings + 7) // 8, dtype=np.uint8)
        self._changed = np.zeros_like(self._on_disk)
        self._row_slot = np.empty(num_embeddings, dtype=np.int32)
        self._reset_cache()
        self._tick = 0
        self._saves = 0
        self._chain: list[str] = []
        self._fd = self._open_slab(truncate=True)

    def _check_disk(self, needed: int) -> None:
        held = self.path.stat().st_blocks * _STAT_BLOCK_BYTES if self.path.exists() else 0
        free = shutil.disk_usage(self.path.parent).free
        if needed - held > free:
            raise ValueError(
                f"{self.path}: the table needs {needed} bytes on disk ({needed / 2**30:.2f} GiB) but "
                f"{self.path.parent} has {free} bytes free ({free / 2**30:.2f} GiB)"
            )

    def _open_slab(self, truncate: bool) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0), 0o644)
        os.ftruncate(fd, self.num_embeddings * self._record_bytes)
        self._write_fd = self._open_direct(fd)
        return fd

    def _open_direct(self, fd: int) -> int:
        """A second descriptor with ``O_DIRECT`` for write-backs, when records are whole 512-byte
        sectors: a buffered write of one row into a page the kernel no longer caches reads the
        page first, so direct writes are several times faster on a cold file. Reads stay
        buffered, so the page cache still serves what it holds. Else the buffered ``fd``."""
        if self._record_bytes % _SECTOR or not hasattr(os, "O_DIRECT"):
            return fd
        try:
            return os.open(self.path, os.O_WRONLY | os.O_DIRECT)
        except OSError:  # a file system without direct I/O (tmpfs)
            return fd

    def _reset_cache(self) -> None:
        capacity = self.weights.shape[0]
        self._row_slot.fill(-1)
        self._slot_row = np.full(capacity, -1, dtype=np.int64)
        self._slot_stamp = np.full(capacity, -2, dtype=np.int64)
        self._referenced = np.zeros(capacity, dtype=np.uint8)
        self._dirty = np.zeros(capacity, dtype=np.uint8)
        self._free_slots = np.arange(capacity - 1, -1, -1, dtype=np.int64)
        self._cursor = np.array([capacity, 0], dtype=np.int64)

    @property
    def cache_rows(self) -> int:
        """Rows the RAM cache holds, ``C``."""
        return int(self.weights.shape[0])

    def stats(self) -> TieredStats:
        hits, misses, read, written = (int(x) for x in self._report[:4])
        phases = {name: float(seconds) for name, seconds in zip(PHASES, self._phase_seconds)}
        return TieredStats(hits, misses, read, written, self._record_bytes, phases)

    def _raise_for(self, status: int, what: str) -> None:
        row, error = int(self._report[4]), int(self._report[5])
        if status == _k.WRITE_FAILED:
            reason = os.strerror(error) if error > 0 else "unknown error"
            raise OSError(error, f"{self.path}: writing row {row} back failed while {what} ({reason}); the row stays cached")
        if status == _k.READ_FAILED:
            reason = os.strerror(error) if error > 0 else "the file ends before it (truncated?)"
            raise OSError(error if error > 0 else errno.EIO, f"{self.path}: reading row {row} failed while {what}: {reason}")

    def resolve(
        self,
        unique_rows: np.ndarray,
        new_rows: np.ndarray = NO_ROWS,
        new_ids: np.ndarray = NO_ROWS,
        training: bool = True,
    ) -> np.ndarray:
        self._tick += 1
        is_new = np.zeros(unique_rows.shape[0], dtype=np.uint8)
        new_keys = np.zeros(unique_rows.shape[0], dtype=np.int64)
        if new_rows.size:
            at = np.searchsorted(unique_rows, new_rows)
            is_new[at], new_keys[at] = 1, new_ids
        count = unique_rows.shape[0]
        slots = np.empty(count, dtype=np.int64)
        miss_index = np.empty(count, dtype=np.int64)
        victims = np.empty(count, dtype=np.int64)
        clock = time.perf_counter()
        status, misses = _k.plan_batch(
            self._row_slot, self._slot_row, self._slot_stamp, self._referenced, self._free_slots, self._cursor,
            unique_rows, is_new, self._tick, slots, miss_index, victims, self._report,
        )  # fmt: skip
        if status == _k.CACHE_FULL:
            pinned = int(np.count_nonzero(self._slot_stamp >= self._tick - 1))
            needed = count + pinned - int(np.count_nonzero(self._slot_stamp == self._tick))
            raise ConfigError(
                f"{self.path.name}: the cache holds {self.cache_rows} rows but this batch needs "
                f"{count} distinct rows while {needed - count} of the previous "
                f"batch are in use; set cache_bytes to at least {needed * self._record_bytes} "
                f"({needed} rows x {self._record_bytes} bytes)"
            )
        clock = self._lap(0, clock)
        write = (self._write_fd, self.weights, self.state, self._dirty, slots, miss_index, victims)
        try:
            self._in_parallel(_k.write_victims, write, misses, "writing rows back")
        except OSError:
            # Nothing moved: the victims stay cached (and dirty) under their old slots.
            planned = victims[:misses] >= 0
            self._row_slot[victims[:misses][planned]] = slots[miss_index[:misses][planned]]
            raise
        clock = self._lap(1, clock)
        _k.commit_batch(
            self._row_slot, self._slot_row, self._dirty, self._on_disk, self._changed, unique_rows, slots,
            miss_index, victims, misses, training,
        )  # fmt: skip
        clock = self._lap(2, clock)
        load = (self._fd, self.weights, self.state, self._on_disk, unique_rows, slots, miss_index, is_new, new_keys)
        self._in_parallel(_k.load_misses, load, misses, "loading a batch", tail=self._init_args)
        self._lap(3, clock)
        return slots

    def _lap(self, phase: int, since: float) -> float:
        now = time.perf_counter()
        self._phase_seconds[phase] += now - since
        return now

    def _in_parallel(self, kernel, head: tuple, count: int, what: str, tail: tuple = ()) -> None:
        """Runs ``kernel(*head, start, stop, *tail, report)`` over ``[0, count)`` split across
        the I/O threads (inline when small), then adds up their counters."""
        parts = min(_IO_THREADS, max(1, count // _ROWS_PER_IO_TASK))
        bounds = np.linspace(0, count, parts + 1).astype(np.int64)
        reports = np.zeros((parts, self._report.shape[0]), dtype=np.int64)
        calls = [(int(bounds[p]), int(bounds[p + 1]), reports[p]) for p in range(parts)]
        if parts == 1:
            statuses = [kernel(*head, calls[0][0], calls[0][1], *tail, calls[0][2])]
        else:
            statuses = list(_io_pool().map(lambda c: kernel(*head, c[0], c[1], *tail, c[2]), calls))
        self._report[2:4] += reports[:, 2:4].sum(axis=0)
        for status, report in zip(statuses, reports):
            if status != _k.OK:
                self._report[4:] = report[4:]
                self._raise_for(status, what)

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out_w = np.empty((rows.shape[0], self.weights.shape[1]), dtype=self.weights.dtype)
        out_s = np.empty((rows.shape[0], self.state.shape[1]), dtype=self.state.dtype)
        status = _k.copy_rows(
            self._fd, self.weights, self.state, self._row_slot, self._on_disk, rows, *self._init_args,
            self._record, out_w, out_s, self._report,
        )  # fmt: skip
        self._raise_for(status, "reading rows")
        return as_float32(out_w), as_float32(out_s)

    def slots_of(self, rows: np.ndarray) -> np.ndarray:
        slots = np.empty(rows.shape[0], dtype=np.int64)
        _k.gather_slots(self._row_slot, rows, slots)
        return slots

    def flush(self) -> None:
        slots = np.flatnonzero(self._dirty & (self._slot_row >= 0)).astype(np.int64)
        rows = self._slot_row[slots]
        order = np.argsort(rows, kind="stable")  # in file order: kinder to the disk's queue
        slots, rows = slots[order], rows[order]
        positions = np.arange(slots.shape[0], dtype=np.int64)
        write = (self._write_fd, self.weights, self.state, self._dirty, slots, positions, rows)
        self._in_parallel(_k.write_victims, write, slots.shape[0], "flushing the cache")
        _k.mark_written(self._dirty, self._on_disk, self._changed, slots, rows)
        os.fsync(self._fd)

    def materialize(self, chunk_rows: int = 1 << 15) -> None:
        """Writes every row's initial value into the file, so it holds the whole table from the
        start (a table trained elsewhere would); afterwards every miss is a disk read. Sequential
        writes of ``chunk_rows`` rows at a time; only on a table that has not loaded any row.
        Then asks the kernel to drop the file from its page cache, for a cold start."""
        if (self._slot_row >= 0).any() or self._on_disk.any():
            raise ValueError(f"{self.path}: materialize() needs a fresh table (rows are cached or on disk)")
        dim, seed, initial_state = self.weights.shape[1], self._init_args[0], self._init_args[3]
        records = np.empty((chunk_rows, self._record.shape[0]), dtype=self._record.dtype)
        weights = np.empty((chunk_rows, dim), dtype=self._record.dtype)
        for start in range(0, self.num_embeddings, chunk_rows):
            count = min(chunk_rows, self.num_embeddings - start)
            initialize_rows(weights[:count], start, self._init, self.num_embeddings, seed)
            records[:count, :dim] = weights[:count]
            records[:count, dim:] = initial_state
            view = memoryview(records[:count]).cast("B")
            written = os.pwrite(self._fd, view, start * self._record_bytes)
            if written != view.nbytes:
                raise OSError(f"{self.path}: short write at row {start} ({written} of {view.nbytes} bytes)")
        self._on_disk[...] = np.packbits(np.ones(self.num_embeddings, dtype=bool), bitorder="little")
        os.fsync(self._fd)
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def memory_estimate(self) -> MemoryEstimate:
        slots = self.weights.shape[0]
        ram = self.weights.nbytes + self.state.nbytes + tiered_bookkeeping_bytes(self.num_embeddings, slots, self._record_bytes)
        return MemoryEstimate(ram_bytes=int(ram), disk_bytes=self.num_embeddings * self._record_bytes)

    # -- checkpoints ------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Flushes the cache, extends the snapshot chain (a full copy or the changed rows) and
        hard-links the chain into ``directory``."""
        directory = Path(directory)
        self.flush()
        self._store.mkdir(exist_ok=True)
        self._saves += 1
        if not self._chain or len(self._chain) >= self.config.full_snapshot_every:
            name = f"full-{self._saves:06d}.slab"
            staging = self._store / f".tmp-{name}"
            staging.unlink(missing_ok=True)
            copy_sparse(self.path, staging)
            os.rename(staging, self._store / name)
            for old in self._chain:
                (self._store / old).unlink(missing_ok=True)
            self._chain = [name]
        else:
            rows = np.flatnonzero(np.unpackbits(self._changed, bitorder="little")[: self.num_embeddings])
            records = np.empty((rows.shape[0], self._record.shape[0]), dtype=self._record.dtype)
            status = _k.read_rows(self._fd, rows, records, self._report)
            self._raise_for(status, "writing an incremental snapshot")
            name = f"delta-{self._saves:06d}.npz"
            staging = self._store / f".tmp-{name}"
            with open(staging, "wb") as handle:
                np.savez(handle, rows=rows, records=records)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(staging, self._store / name)
            self._chain.append(name)
        fsync_path(self._store)
        self._changed.fill(0)
        for name in self._chain:
            os.link(self._store / name, directory / name)
        np.save(directory / "on_disk.npy", self._on_disk, allow_pickle=False)
        manifest = {
            "format_version": _FORMAT_VERSION,
            "num_embeddings": self.num_embeddings,
            "record_bytes": self._record_bytes,
            "seed": int(self._init_args[0]),
            "saves": self._saves,
            "chain": self._chain,
        }
        (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    def load(self, directory: Path) -> None:
        """Rebuilds the slab file from ``directory``'s chain (the full copy, then each set of
        changed rows in order) and empties the cache."""
        directory = Path(directory)
        path = directory / _MANIFEST
        try:
            saved = json.loads(path.read_text())
            chain = [str(name) for name in saved["chain"]]
            saves = int(saved["saves"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: missing or malformed tiered-table manifest ({err!r})") from err
        expected = {"num_embeddings": self.num_embeddings, "record_bytes": self._record_bytes, "seed": int(self._init_args[0])}
        for key, value in expected.items():
            if saved.get(key) != value:
                raise ValueError(f"{path}: saved {key}={saved.get(key)!r}, this table has {value}")
        if not chain or not chain[0].startswith("full-"):
            raise ValueError(f"{path}: the snapshot chain must start with a full copy, got {chain}")
        full = directory / chain[0]
        size = self.num_embeddings * self._record_bytes
        if not full.is_file() or full.stat().st_size != size:
            got = full.stat().st_size if full.is_file() else "no file"
            raise ValueError(f"{full}: expected the table's full copy of {size} bytes, got {got}")
        on_disk = np.load(directory / "on_disk.npy", allow_pickle=False)
        if on_disk.dtype != np.uint8 or on_disk.shape != self._on_disk.shape:
            raise ValueError(f"{directory / 'on_disk.npy'}: expected uint8 {self._on_disk.shape}, got {on_disk.dtype} {on_disk.shape}")
        staging = self.path.with_name(self.path.name + ".loading")
        staging.unlink(missing_ok=True)
        copy_sparse(full, staging)
        fd = os.open(staging, os.O_RDWR)
        try:
            for name in chain[1:]:
                self._replay_delta(fd, directory / name)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.close()
        os.rename(staging, self.path)
        self._fd = self._open_slab(truncate=False)
        self._on_disk[...] = on_disk
        self._changed.fill(0)
        self._reset_cache()
        if self._store.exists():
            shutil.rmtree(self._store)
        self._store.mkdir()
        for name in chain:
            os.link(directory / name, self._store / name)
        self._chain, self._saves = chain, saves

    def _replay_delta(self, fd: int, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as delta:
                rows, records = delta["rows"], delta["records"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: unreadable incremental snapshot ({err!r})") from err
        if rows.dtype != np.int64 or records.dtype != self._record.dtype or records.shape != (rows.shape[0], self._record.shape[0]):
            raise ValueError(f"{path}: rows/records of the wrong type or shape ({rows.dtype} {rows.shape}, {records.dtype} {records.shape})")
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_embeddings):
            raise ValueError(f"{path}: rows outside [0, {self.num_embeddings})")
        status = _k.write_rows(fd, np.ascontiguousarray(rows), np.ascontiguousarray(records), self._report)
        self._raise_for(status, f"replaying {path.name}")

    def close(self) -> None:
        """Closes the slab file (the object is unusable afterwards)."""
        if self._fd >= 0:
            if self._write_fd != self._fd:
                os.close(self._write_fd)
            os.close(self._fd)
            self._fd = self._write_fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def __repr__(self) -> str:
        return (
            f"TieredRowStorage(path={str(self.path)!r}, num_embeddings={self.num_embeddings}, "
            f"cache_rows={self.cache_rows}, record_bytes={self._record_bytes})"
        )
