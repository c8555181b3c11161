"""Collisionless, growing ID → row maps with admission and eviction: the row mapper of
dynamic tables.

:class:`DynamicRowMapper` gives every admitted ID a row of its own, up to ``num_embeddings``
rows, and takes rows back by TTL or, when full, by LFU/LRU policy (see
:class:`~terarec.embedding.config.DynamicConfig`). The hash map, the sketch and the per-ID
loops are numba kernels in :mod:`terarec.embedding._dynamic_kernels`; this module owns the
state, the step counter, the eviction schedule and persistence.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terarec._dataclass_codec import to_mapping
from terarec._files import load_checked_array
from terarec.embedding import _dynamic_kernels as _dk
from terarec.embedding._hashing import mix_seed
from terarec.embedding.config import DynamicConfig, EvictionPolicy, dynamic_map_slots
from terarec.embedding.memory import MemoryEstimate
from terarec.embedding.row_mapping import RowMapper, RowMapping

__all__ = ["DynamicRowMapper", "DynamicTableStats"]

_FORMAT_VERSION = 1
_MANIFEST = "row_map.json"
_ARRAYS = ("slot_keys", "slot_rows", "row_ids", "last_seen", "frequency", "free_rows", "sketch")
_COUNTERS = ("admitted", "rejected", "evicted_ttl", "evicted_capacity", "capacity_rejected")
_DRAW_STREAM = np.uint64(0xD1CE_D1CE_D1CE_D1CE)  # seed stream of admission draws; sketch rows use 0, 1, ...
@dataclass(frozen=True)
class DynamicTableStats:
    """Counters of a :class:`DynamicRowMapper`, cumulative since it was created (they survive
    :meth:`~DynamicRowMapper.save`/:meth:`~DynamicRowMapper.load`).

    Attributes:
        live_rows (int): rows holding an ID now.
        admitted (int): rows created (IDs admitted and given a row).
        rejected (int): per training call, distinct new IDs the admission test turned down.
        evicted_ttl (int): rows freed because their ID went unseen for ``ttl_steps``.
        evicted_capacity (int): rows freed by the eviction policy to make room.
        capacity_rejected (int): admitted IDs left without a row because every row was pinned.
        memory_bytes (int): bytes of the mapper's state (:meth:`DynamicRowMapper.memory_estimate`).
    """

    live_rows: int
    admitted: int
    rejected: int
    evicted_ttl: int
    evicted_capacity: int
    capacity_rejected: int
    memory_bytes: int


class DynamicRowMapper(RowMapper):
    """A collisionless ID → row map of fixed capacity with admission and eviction.

    Unlike :class:`~terarec.embedding.row_mapping.HashedRowMapper`, distinct IDs never share a
    row: each training :meth:`map` call (one *step*) looks every ID up in an open-addressing
    hash map, counts unknown IDs in a count-min sketch, admits those passing
    :class:`~terarec.embedding.config.DynamicConfig`'s test and hands them free rows, listed in
    :class:`~terarec.embedding.row_mapping.RowMapping`'s ``new_rows``/``new_ids`` for the table
    to initialise. Choose it when collisions hurt and the live IDs fit ``num_embeddings``.

    Per call, in order:

    1. IDs in the map get their row; the row's ``last_seen`` becomes this step and its
       frequency grows by the ID's occurrences.
    2. Each distinct unknown ID, in first-occurrence order, adds its occurrences to the sketch
       and is admitted when the estimate reaches ``min_count`` and, if
       ``admit_probability < 1``, a uniform draw from ``(seed, id, step)`` falls below it.
       Every occurrence of an ID in one batch gets the same row (or ``-1``).
    3. If the admitted IDs outnumber the free rows, at least the shortfall and at least
       ``ceil(evict_fraction * num_embeddings)`` rows are evicted by policy: LFU takes the
       smallest ``(frequency, last_seen, row)``, LRU the smallest ``(last_seen, row)``.
       Rows returned by this call or the previous training call are *pinned*: never evicted
       nor reassigned (that batch may still be training). Admitted IDs that still find no row
       read ``-1`` and count as ``capacity_rejected``.
    4. With ``ttl_steps``, ``ceil(num_embeddings / ttl_steps)`` rows are checked round-robin
       and those unseen for more than ``ttl_steps`` steps are freed, so a row is freed between
       ``ttl_steps + 1`` and ``2 * ttl_steps`` steps after it was last seen, at ``O(C / ttl)``
       per call.

    An evicted ID that returns is a new ID: it passes admission again (its sketch counts were
    never reset) and gets a fresh row. Freed rows are reused last-freed first, the lowest of a
    capacity eviction first. With ``training=False`` the mapper only reads. Same seed and same
    calls give the same rows, bit for bit, also across :meth:`save`/:meth:`load`.

    Args:
        num_embeddings (int): capacity ``C``, the rows IDs are mapped into.
        config (DynamicConfig): admission, TTL, eviction policy and sketch size.
        seed (int, optional): seeds the sketch hashes and admission draws, taken modulo
            ``2^64`` (a table passes :func:`~terarec.embedding._hashing.derive_table_seed`).
            Default: ``0``

    Attributes:
        config (DynamicConfig): as given.
        step (int): training :meth:`map` calls so far.

    Shape:
        - ids: :math:`(N)` ``int64``, any 64-bit value
        - rows: :math:`(N)` ``int64`` in ``[0, C)``, or ``-1``
        - new_rows, new_ids: :math:`(M)` rows created by the call and their IDs, in
          first-occurrence order

    Example::

        >>> mapper = DynamicRowMapper(4, DynamicConfig(min_count=2, sketch_width=1024))
        >>> mapper.map(np.array([10, 20, 10], dtype=np.int64)).rows  # 10 seen twice: admitted
        array([ 0, -1,  0])
        >>> mapping = mapper.map(np.array([20, 30, -1], dtype=np.int64))  # 20's second sighting
        >>> mapping.rows, mapping.new_rows, mapping.new_ids
        (array([ 1, -1, -1]), array([1]), array([20]))
        >>> mapper.map(np.array([20, 99], dtype=np.int64), training=False).rows
        array([ 1, -1])
        >>> stats = mapper.stats()
        >>> stats.live_rows, stats.admitted, stats.rejected
        (2, 2, 3)
    """

    def __init__(self, num_embeddings: int, config: DynamicConfig, seed: int = 0) -> None:
        if num_embeddings < 1:
            raise ValueError(f"num_embeddings must be >= 1, got {num_embeddings}")
        if not isinstance(config, DynamicConfig):
            raise TypeError(f"config must be a DynamicConfig, got {type(config).__name__}")
        self.num_embeddings = int(num_embeddings)
        self.config = config
        self.seed = int(seed) % 2**64
        capacity, slots = self.num_embeddings, dynamic_map_slots(self.num_embeddings)
        self._slot_keys = np.zeros(slots, dtype=np.int64)
        self._slot_rows = np.full(slots, -1, dtype=np.int64)  # -1: empty slot
        self._row_ids = np.zeros(capacity, dtype=np.int64)
        self._last_seen = np.full(capacity, -1, dtype=np.int64)  # -1: free row
        self._frequency = np.zeros(capacity, dtype=np.uint32)
        self._free_rows = np.arange(capacity - 1, -1, -1, dtype=np.int64)  # a stack: row 0 on top
        seed64 = np.uint64(self.seed)
        if config.sketch_bytes():
            self._sketch = np.zeros((config.sketch_depth, config.sketch_width), dtype=np.uint32)
            self._sketch_seeds = np.array(
                [mix_seed(seed64, np.uint64(r)) for r in range(config.sketch_depth)], np.uint64
            )
        else:  # every ID is admitted at first sight: nothing to count
            self._sketch = np.zeros((0, 1), dtype=np.uint32)
            self._sketch_seeds = np.zeros(0, dtype=np.uint64)
        self._draw_seed = np.uint64(mix_seed(seed64, _DRAW_STREAM))
        self._step = 0
        self._free_count = capacity
        self._cursor = 0  # next row the TTL scan checks
        self._counters = dict.fromkeys(_COUNTERS, 0)

    @property
    def step(self) -> int:
        return self._step

    def memory_estimate(self) -> MemoryEstimate:
        arrays = [getattr(self, f"_{name}") for name in _ARRAYS] + [self._sketch_seeds]
        return MemoryEstimate(ram_bytes=sum(int(array.nbytes) for array in arrays), disk_bytes=0)

    def stats(self) -> DynamicTableStats:
        """The mapper's counters now."""
        live_rows = self.num_embeddings - self._free_count
        return DynamicTableStats(live_rows, **self._counters, memory_bytes=self.memory_estimate().ram_bytes)

    def map(self, ids: np.ndarray, training: bool = True) -> RowMapping:
        """Row of each ID (``-1``: none); while ``training`` admits, evicts and advances :attr:`step`.

        Raises:
            TypeError: if ``ids`` is not an ``int64`` NumPy array.
            ValueError: if ``ids`` is not 1-D and C-contiguous.
        """
        if not isinstance(ids, np.ndarray) or ids.dtype != np.int64:
            raise TypeError(f"ids must be an int64 numpy array, got {getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.ndim != 1 or not ids.flags.c_contiguous:
            raise ValueError(f"ids must be 1-D and C-contiguous, got shape {ids.shape}")
        rows = np.empty(ids.shape[0], dtype=np.int64)
        if not training:
            _dk.lookup_rows(ids, self._slot_keys, self._slot_rows, rows)
            return RowMapping(rows)
        self._step += 1
        misses = _dk.map_known_rows(
            ids, self._slot_keys, self._slot_rows, self._last_seen, self._frequency, self._step, rows
        )
        mapping = self._admit(ids, rows, misses) if misses else RowMapping(rows)
        if self.config.ttl_steps is not None:
            self._expire(self.config.ttl_steps)
        return mapping

    def _admit(self, ids: np.ndarray, rows: np.ndarray, misses: int) -> RowMapping:
        """Stages 2 and 3 of :meth:`map` for the ``misses`` IDs not found (``rows == -1``)."""
        cfg = self.config
        distinct_ids = np.empty(misses, dtype=np.int64)
        decisions = np.empty(misses, dtype=np.int64)
        distinct = _dk.count_and_admit(
            ids, rows, misses, self._sketch, self._sketch_seeds, cfg.min_count, float(cfg.admit_probability),
            self._draw_seed, self._step, distinct_ids, decisions,
        )  # fmt: skip
        admitted = int(np.count_nonzero(decisions[:distinct]))
        self._counters["rejected"] += distinct - admitted
        if admitted > self._free_count:
            self._evict_for_capacity(admitted - self._free_count)
        new_rows = np.empty(admitted, dtype=np.int64)
        new_ids = np.empty(admitted, dtype=np.int64)
        created, capacity_rejected, self._free_count = _dk.assign_rows(
            rows, distinct_ids, decisions, distinct, self._slot_keys, self._slot_rows, self._row_ids,
            self._last_seen, self._frequency, self._free_rows, self._free_count, self._step, new_rows, new_ids,
        )  # fmt: skip
        self._counters["admitted"] += created
        self._counters["capacity_rejected"] += capacity_rejected
        return RowMapping(rows, new_rows[:created], new_ids[:created])

    def _evict_for_capacity(self, shortfall: int) -> None:
        """Frees ``max(shortfall, ceil(evict_fraction * C))`` unpinned rows by policy (fewer if
        not that many are unpinned): one ``O(C)`` selection, rare thanks to ``evict_fraction``."""
        capacity = self.num_embeddings
        count = min(capacity, max(shortfall, math.ceil(self.config.evict_fraction * capacity)))
        victims = np.empty(count, dtype=np.int64)
        is_lfu = self.config.eviction is EvictionPolicy.LFU
        found = _dk.select_victims(self._last_seen, self._frequency, self._step, count, is_lfu, victims)
        self._free_count = _dk.evict_rows(
            victims[:found], self._slot_keys, self._slot_rows, self._row_ids, self._last_seen, self._frequency,
            self._free_rows, self._free_count,
        )  # fmt: skip
        self._counters["evicted_capacity"] += found

    def _expire(self, ttl_steps: int) -> None:
        """Stage 4 of :meth:`map`: the incremental TTL scan of ``ceil(C / ttl_steps)`` rows."""
        window = -(-self.num_embeddings // ttl_steps)
        self._cursor, freed, self._free_count = _dk.expire_rows(
            self._cursor, window, self._step, ttl_steps, self._slot_keys, self._slot_rows, self._row_ids,
            self._last_seen, self._frequency, self._free_rows, self._free_count,
        )  # fmt: skip
        self._counters["evicted_ttl"] += freed

    def _manifest(self) -> dict[str, object]:
        """What a saved map must agree on with this mapper to be loaded."""
        return {
            "format_version": _FORMAT_VERSION,
            "kind": "dynamic",
            "num_embeddings": self.num_embeddings,
            "num_slots": int(self._slot_rows.shape[0]),
            "seed": self.seed,
            "config": to_mapping(self.config),
        }

    def save(self, directory: Path) -> None:
        """Writes the map, row metadata, free rows and sketch as ``row_map_*.npy`` and the step,
        TTL cursor and counters into ``row_map.json``, everything an exact resume needs."""
        directory = Path(directory)
        for name in _ARRAYS:
            np.save(directory / f"row_map_{name}.npy", getattr(self, f"_{name}"), allow_pickle=False)
        scalars = {"step": self._step, "free_count": self._free_count, "cursor": self._cursor, **self._counters}
        (directory / _MANIFEST).write_text(json.dumps({**self._manifest(), **scalars}, indent=2) + "\n")

    def load(self, directory: Path) -> None:
        """Restores what :meth:`save` wrote; nothing changes unless every file passes its checks.

        Raises:
            ValueError: naming the file, if one is missing, truncated, of the wrong dtype or
                shape, or saved by a mapper of another capacity, config or seed.
        """
        directory = Path(directory)
        path = directory / _MANIFEST
        if not path.is_file():
            raise ValueError(f"{path}: missing; not a saved dynamic row map")
        try:
            saved = json.loads(path.read_text())
            scalars = {key: int(saved[key]) for key in ("step", "free_count", "cursor", *_COUNTERS)}
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: malformed row map manifest ({err!r})") from err
        for key, expected in self._manifest().items():
            if saved.get(key) != expected:
                raise ValueError(f"{path}: saved {key}={saved.get(key)!r} does not match this mapper's {expected!r}")
        capacity = self.num_embeddings
        if min(scalars.values()) < 0 or scalars["free_count"] > capacity or scalars["cursor"] >= capacity:
            raise ValueError(f"{path}: counters out of range for capacity {capacity}: {scalars}")
        arrays = {name: load_checked_array(directory / f"row_map_{name}.npy", getattr(self, f"_{name}")) for name in _ARRAYS}
        occupied = int(np.count_nonzero(arrays["slot_rows"] >= 0))
        if occupied != capacity - scalars["free_count"]:
            raise ValueError(
                f"{directory / 'row_map_slot_rows.npy'}: {occupied} occupied slots, but {path} records "
                f"{capacity - scalars['free_count']} live rows"
            )
        for name, array in arrays.items():
            getattr(self, f"_{name}")[...] = array
        self._step, self._free_count, self._cursor = scalars["step"], scalars["free_count"], scalars["cursor"]
        self._counters = {key: scalars[key] for key in _COUNTERS}

    def __repr__(self) -> str:
        return (
            f"DynamicRowMapper(num_embeddings={self.num_embeddings}, live_rows={self.num_embeddings - self._free_count}, "
            f"step={self._step}, eviction={self.config.eviction.value})"
        )
