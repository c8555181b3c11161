"""DynamicRowMapper against a slow pure-Python model of the same rules, plus targeted tests
of admission, TTL, eviction order, pinning, read-only evaluation and save/load."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from terarec.embedding import _dynamic_kernels
from terarec.embedding.config import DynamicConfig, EvictionPolicy
from terarec.embedding.dynamic import DynamicRowMapper, DynamicTableStats

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
SPECIAL = [-1, 0, I64_MIN, I64_MAX, 1, -2]
_M64, _U32_MAX = 2**64 - 1, 2**32 - 1


def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix_seed(seed: int, stream: int) -> int:
    return _splitmix64(seed ^ _splitmix64(stream))


class ReferenceMapper:
    """The rules of :class:`DynamicRowMapper` with dicts and lists, one ID at a time."""

    def __init__(self, capacity: int, config: DynamicConfig, seed: int = 0) -> None:
        self.capacity, self.config, self.step, self.cursor = capacity, config, 0, 0
        seed %= 2**64
        self.row_of: dict[int, int] = {}
        self.id_of = [0] * capacity
        self.last_seen = [-1] * capacity
        self.frequency = [0] * capacity
        self.free = list(range(capacity - 1, -1, -1))
        depth = config.sketch_depth if config.sketch_bytes() else 0
        self.sketch = [[0] * config.sketch_width for _ in range(depth)]
        self.sketch_seeds = [_mix_seed(seed, r) for r in range(depth)]
        self.draw_seed = _mix_seed(seed, 0xD1CED1CED1CED1CE)
        self.counters = dict.fromkeys(
            ["admitted", "rejected", "evicted_ttl", "evicted_capacity", "capacity_rejected"], 0
        )

    def _free_row(self, row: int) -> None:
        del self.row_of[self.id_of[row]]
        self.last_seen[row], self.frequency[row] = -1, 0
        self.free.append(row)

    def _admits(self, key: int, count: int) -> bool:
        key %= 2**64
        estimate = _U32_MAX
        for counters, seed in zip(self.sketch, self.sketch_seeds, strict=True):
            column = _splitmix64(key ^ seed) % self.config.sketch_width
            counters[column] = min(counters[column] + count, _U32_MAX)
            estimate = min(estimate, counters[column])
        if self.sketch and estimate < self.config.min_count:
            return False
        if self.config.admit_probability < 1.0:
            bits = _splitmix64((_splitmix64(self.draw_seed ^ _splitmix64(key)) + self.step) & _M64)
            return (bits >> 11) * 2.0**-53 < self.config.admit_probability
        return True

    def _evict(self, shortfall: int) -> None:
        count = min(self.capacity, max(shortfall, math.ceil(self.config.evict_fraction * self.capacity)))
        evictable = [r for r in range(self.capacity) if 0 <= self.last_seen[r] < self.step - 1]
        if self.config.eviction is EvictionPolicy.LFU:
            evictable.sort(key=lambda r: (self.frequency[r], self.last_seen[r], r))
        else:
            evictable.sort(key=lambda r: (self.last_seen[r], r))
        victims = sorted(evictable[:count])
        for row in reversed(victims):
            self._free_row(row)
        self.counters["evicted_capacity"] += len(victims)

    def map(self, ids: np.ndarray, training: bool = True) -> tuple[list[int], list[int], list[int]]:
        keys = [int(key) for key in ids]
        if not training:
            return [self.row_of.get(key, -1) for key in keys], [], []
        self.step += 1
        rows: list[int | None] = []
        misses: dict[int, int] = {}  # insertion-ordered: first occurrence
        for key in keys:
            row = self.row_of.get(key)
            rows.append(row)
            if row is None:
                misses[key] = misses.get(key, 0) + 1
            else:
                self.last_seen[row] = self.step
                self.frequency[row] = min(self.frequency[row] + 1, _U32_MAX)
        decisions = {key: self._admits(key, count) for key, count in misses.items()}
        admitted = sum(decisions.values())
        self.counters["rejected"] += len(decisions) - admitted
        if admitted > len(self.free):
            self._evict(admitted - len(self.free))
        new_rows, new_ids, assigned = [], [], {}
        for key, admit in decisions.items():
            assigned[key] = -1
            if admit and self.free:
                row = self.free.pop()
                self.row_of[key], self.id_of[row] = row, key
                self.last_seen[row], self.frequency[row] = self.step, 0
                new_rows.append(row)
                new_ids.append(key)
                assigned[key] = row
            elif admit:
                self.counters["capacity_rejected"] += 1
        self.counters["admitted"] += len(new_rows)
        for i, key in enumerate(keys):
            if rows[i] is None:
                rows[i] = assigned[key]
                if assigned[key] >= 0:
                    self.frequency[assigned[key]] += 1
        if self.config.ttl_steps is not None:
            for _ in range(min(-(-self.capacity // self.config.ttl_steps), self.capacity)):
                row = self.cursor
                if self.last_seen[row] >= 0 and self.step - self.last_seen[row] > self.config.ttl_steps:
                    self._free_row(row)
                    self.counters["evicted_ttl"] += 1
                self.cursor = (self.cursor + 1) % self.capacity
        return [int(row) for row in rows if row is not None], new_rows, new_ids


def _batches(seed: int, steps: int, pool_size: int, batch: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A pool of distinct IDs (with the extreme values) and Zipf-like batches drawn from it, some empty."""
    rng = np.random.default_rng(seed)
    pool = np.unique(np.concatenate([SPECIAL, rng.integers(I64_MIN, I64_MAX, pool_size, endpoint=True)]))
    weights = 1.0 / np.arange(1, pool.size + 1) ** 0.8
    rng.shuffle(weights)
    batches = []
    for step in range(steps):
        size = 0 if step % 11 == 10 else int(rng.integers(1, batch))
        batches.append(rng.choice(pool, size=size, p=weights / weights.sum()).astype(np.int64))
    return pool, batches


REFERENCE_CASES = {
    "lfu-sketch-ttl": (
        40,
        DynamicConfig(min_count=2, admit_probability=0.7, ttl_steps=6, sketch_width=61, sketch_depth=3),
    ),
    "lru-admit-all": (40, DynamicConfig(eviction=EvictionPolicy.LRU)),
    "lfu-fraction": (40, DynamicConfig(ttl_steps=3, evict_fraction=0.3)),
    "lru-sketch-all-at-once": (
        25,
        DynamicConfig(min_count=3, eviction=EvictionPolicy.LRU, evict_fraction=1.0, sketch_width=8),
    ),
    "one-row": (1, DynamicConfig(ttl_steps=2)),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_matches_reference(case: str) -> None:
    capacity, config = REFERENCE_CASES[case]
    mapper, reference = DynamicRowMapper(capacity, config, seed=7), ReferenceMapper(capacity, config, seed=7)
    pool, batches = _batches(seed=3, steps=60, pool_size=150, batch=40)
    for ids in batches:
        mapping = mapper.map(ids)
        rows, new_rows, new_ids = reference.map(ids)
        np.testing.assert_array_equal(mapping.rows, rows)
        np.testing.assert_array_equal(mapping.new_rows, new_rows)
        np.testing.assert_array_equal(mapping.new_ids, new_ids)
        np.testing.assert_array_equal(mapper.map(pool, training=False).rows, reference.map(pool, training=False)[0])
        stats = mapper.stats()
        assert stats.live_rows == len(reference.row_of)
        assert {key: getattr(stats, key) for key in reference.counters} == reference.counters


def test_collisionless_against_dict() -> None:
    mapper = DynamicRowMapper(5000, DynamicConfig())
    known: dict[int, int] = {}
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = np.concatenate([SPECIAL, rng.integers(-50, 50, 100), rng.integers(I64_MIN, I64_MAX, 100)])
        ids = rng.permutation(np.repeat(ids, rng.integers(1, 4, ids.size))).astype(np.int64)
        mapping = mapper.map(ids)
        first_seen = [key for key in dict.fromkeys(ids.tolist()) if key not in known]
        assert mapping.new_ids.tolist() == first_seen
        known.update(zip(mapping.new_ids.tolist(), mapping.new_rows.tolist(), strict=True))
        assert mapping.rows.tolist() == [known[key] for key in ids.tolist()]
    assert len(set(known.values())) == len(known) == mapper.stats().live_rows
    assert all(0 <= row < 5000 for row in known.values())


def test_min_count_counts_every_occurrence() -> None:
    mapper = DynamicRowMapper(10, DynamicConfig(min_count=3, sketch_width=4096))
    assert mapper.map(np.array([7, 8, 8, 8], dtype=np.int64)).rows.tolist() == [-1, 0, 0, 0]
    assert mapper.map(np.array([7], dtype=np.int64)).rows.tolist() == [-1]
    mapping = mapper.map(np.array([7, 7], dtype=np.int64))
    assert mapping.rows.tolist() == [1, 1] and mapping.new_ids.tolist() == [7]
    assert mapper.stats().rejected == 2 and mapper.stats().admitted == 2


def test_admit_probability_is_deterministic_and_close_to_p() -> None:
    config = DynamicConfig(admit_probability=0.25, sketch_width=1024)
    ids = np.arange(40_000, dtype=np.int64) * 7919 - 123_456
    first = DynamicRowMapper(50_000, config, seed=1).map(ids).rows
    assert abs((first >= 0).mean() - 0.25) < 0.015  # ~7 standard deviations
    np.testing.assert_array_equal(first, DynamicRowMapper(50_000, config, seed=1).map(ids).rows)
    assert not np.array_equal(first >= 0, DynamicRowMapper(50_000, config, seed=2).map(ids).rows >= 0)
    # A rejected ID gets a fresh draw at each later step.
    mapper = DynamicRowMapper(50_000, config, seed=1)
    admitted = np.zeros(ids.size, dtype=bool)
    for _ in range(3):
        admitted |= mapper.map(ids).rows >= 0
    assert abs(admitted.mean() - (1 - 0.75**3)) < 0.015


def test_ttl_evicts_within_ttl_to_twice_ttl_steps() -> None:
    mapper = DynamicRowMapper(10, DynamicConfig(ttl_steps=3))
    first = mapper.map(np.arange(10, dtype=np.int64))
    keep = np.array([0], dtype=np.int64)
    for _ in range(3):  # steps 2..4: IDs 1..9 unseen for at most 3 steps
        mapper.map(keep)
    assert mapper.stats().evicted_ttl == 0
    for _ in range(3):  # steps 5..7: each row is checked once more
        mapper.map(keep)
    assert mapper.stats().evicted_ttl == 9 and mapper.stats().live_rows == 1
    assert mapper.map(np.arange(10, dtype=np.int64), training=False).rows.tolist() == [0] + [-1] * 9
    back = mapper.map(np.array([5], dtype=np.int64))  # a new ID again, in a freed row
    assert back.new_ids.tolist() == [5] and back.new_rows[0] in first.rows[1:]


def _run(mapper: DynamicRowMapper, *batches: list[int]) -> list[list[int]]:
    return [mapper.map(np.array(batch, dtype=np.int64)).rows.tolist() for batch in batches]


def test_lfu_evicts_least_frequent_then_oldest_then_lowest_row() -> None:
    mapper = DynamicRowMapper(4, DynamicConfig(evict_fraction=0.01))
    _run(mapper, [10, 10, 10, 20, 30, 40, 50], [20], [30], [], [])
    # frequencies 10: 3, 20: 2, 30: 2, 40: 1; 50 found no room at step 1.
    assert _run(mapper, [60]) == [[3]]  # 40 has the lowest frequency
    assert _run(mapper, [70]) == [[1]]  # 20 and 30 tie on frequency; 20 was seen longer ago
    mapper = DynamicRowMapper(4, DynamicConfig())
    assert _run(mapper, [1, 2, 3, 4], [], [5]) == [[0, 1, 2, 3], [], [0]]  # all tie: lowest row
    assert mapper.stats().evicted_capacity == 1 and mapper.stats().capacity_rejected == 0


def test_lru_evicts_oldest_then_lowest_row() -> None:
    mapper = DynamicRowMapper(4, DynamicConfig(eviction=EvictionPolicy.LRU))
    _run(mapper, [1, 2, 3, 4], [3, 3, 3], [1], [])
    assert _run(mapper, [5], [6], []) == [[1], [3], []]  # 2 and 4 were seen at step 1; 2 has the lower row
    assert _run(mapper, [7]) == [[2]]  # 3 (step 2) is older than 1 (step 3)


def test_evict_fraction_frees_rows_ahead() -> None:
    mapper = DynamicRowMapper(100, DynamicConfig(evict_fraction=0.1))
    _run(mapper, list(range(100)), [])
    mapper.map(np.array([1000], dtype=np.int64))
    assert mapper.stats().evicted_capacity == 10 and mapper.stats().live_rows == 91


def test_pinned_rows_are_never_evicted_and_overflow_is_capacity_rejected() -> None:
    mapper = DynamicRowMapper(8, DynamicConfig(evict_fraction=1.0))
    assert _run(mapper, list(range(8)), list(range(100, 108))) == [list(range(8)), [-1] * 8]
    assert mapper.stats().capacity_rejected == 8 and mapper.stats().evicted_capacity == 0
    # Rows of step 1 were returned two calls ago: now they may go, all at once (evict_fraction 1).
    assert _run(mapper, [0, 200]) == [[0, 1]]
    assert mapper.stats().evicted_capacity == 7


@pytest.mark.parametrize("policy", list(EvictionPolicy))
def test_rows_of_previous_and_current_call_keep_their_ids_under_pressure(policy: EvictionPolicy) -> None:
    mapper = DynamicRowMapper(16, DynamicConfig(eviction=policy, ttl_steps=1, evict_fraction=1.0))
    rng = np.random.default_rng(5)
    previous = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
    for _ in range(200):
        ids = rng.integers(0, 64, int(rng.integers(0, 20))).astype(np.int64)
        rows = mapper.map(ids).rows
        for batch, batch_rows in (previous, (ids, rows)):
            held = batch_rows >= 0
            np.testing.assert_array_equal(mapper.map(batch[held], training=False).rows, batch_rows[held])
        previous = (ids, rows)
    assert mapper.stats().evicted_capacity > 0 and mapper.stats().capacity_rejected > 0


def _saved_bytes(mapper: DynamicRowMapper, directory: Path) -> dict[str, bytes]:
    directory.mkdir()
    mapper.save(directory)
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_eval_mode_is_read_only(tmp_path: Path) -> None:
    mapper = DynamicRowMapper(50, DynamicConfig(min_count=2, admit_probability=0.5, ttl_steps=2, sketch_width=64))
    pool, batches = _batches(seed=1, steps=10, pool_size=200, batch=60)
    for ids in batches:
        mapper.map(ids)
    before = _saved_bytes(mapper, tmp_path / "before")
    expected = mapper.map(pool, training=False).rows
    for ids in batches * 5:
        mapper.map(ids, training=False)
    np.testing.assert_array_equal(mapper.map(pool, training=False).rows, expected)
    assert _saved_bytes(mapper, tmp_path / "after") == before


def test_save_load_resumes_bit_for_bit(tmp_path: Path) -> None:
    config = DynamicConfig(min_count=2, admit_probability=0.8, ttl_steps=5, sketch_width=97, evict_fraction=0.05)
    _, batches = _batches(seed=2, steps=50, pool_size=300, batch=50)
    uninterrupted = DynamicRowMapper(60, config, seed=11)
    for ids in batches[:25]:
        uninterrupted.map(ids)
    uninterrupted.save(tmp_path)
    resumed = DynamicRowMapper(60, config, seed=11)
    resumed.load(tmp_path)
    assert resumed.stats() == uninterrupted.stats() and resumed.step == 25
    for ids in batches[25:]:
        a, b = uninterrupted.map(ids), resumed.map(ids)
        for field in ("rows", "new_rows", "new_ids"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert resumed.stats() == uninterrupted.stats()


def test_load_refuses_mismatches_and_damaged_files(tmp_path: Path) -> None:
    config = DynamicConfig(min_count=2, sketch_width=32)
    saved = DynamicRowMapper(20, config, seed=3)
    _run(saved, [1, 1, 2, 3, 3], [4, 4])
    saved.save(tmp_path)
    with pytest.raises(ValueError, match=r"row_map\.json.*num_embeddings=20"):
        DynamicRowMapper(21, config, seed=3).load(tmp_path)
    with pytest.raises(ValueError, match=r"row_map\.json.*config"):
        DynamicRowMapper(20, DynamicConfig(min_count=3, sketch_width=32), seed=3).load(tmp_path)
    with pytest.raises(ValueError, match=r"row_map\.json.*seed"):
        DynamicRowMapper(20, config, seed=4).load(tmp_path)
    target = DynamicRowMapper(20, config, seed=3)
    sketch = tmp_path / "row_map_sketch.npy"
    sketch.write_bytes(sketch.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"row_map_sketch\.npy: truncated"):
        target.load(tmp_path)
    sketch.write_bytes(sketch.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"row_map_sketch\.npy: truncated"):
        target.load(tmp_path)
    (tmp_path / "row_map_last_seen.npy").unlink()
    with pytest.raises(ValueError, match=r"row_map_last_seen\.npy: missing"):
        target.load(tmp_path)
    (tmp_path / "row_map.json").write_text('{"format_version": 1')
    with pytest.raises(ValueError, match=r"row_map\.json: malformed"):
        target.load(tmp_path)
    assert target.stats() == DynamicRowMapper(20, config, seed=3).stats()  # nothing half-loaded
    assert target.map(np.array([1, 3, 4], dtype=np.int64), training=False).rows.tolist() == [-1, -1, -1]


def test_stats_counters() -> None:
    mapper = DynamicRowMapper(3, DynamicConfig(min_count=2, ttl_steps=3, sketch_width=64))
    _run(mapper, [1, 1, 2, 2, 3, 3], [4, 5, 6, 6, 7, 7], [8])
    # step 1: 1, 2, 3 admitted; step 2: 4, 5 rejected, 6 and 7 admitted but all rows pinned;
    # step 3: 8 rejected. Then rows 1..3 expire, unseen since step 1.
    assert mapper.stats() == DynamicTableStats(
        live_rows=3, admitted=3, rejected=3, evicted_ttl=0, evicted_capacity=0, capacity_rejected=2,
        memory_bytes=mapper.memory_estimate().ram_bytes,
    )  # fmt: skip
    _run(mapper, [], [], [6], [])
    stats = mapper.stats()
    assert (stats.evicted_ttl, stats.live_rows, stats.admitted) == (3, 1, 4)


@pytest.mark.parametrize(
    "capacity, config",
    [
        (1, DynamicConfig()),
        (7, DynamicConfig(min_count=2, sketch_width=10, sketch_depth=3)),
        (1000, DynamicConfig(admit_probability=0.5)),
    ],
)
def test_memory_estimate_equals_the_configs_mapper_bytes(capacity: int, config: DynamicConfig) -> None:
    mapper = DynamicRowMapper(capacity, config)
    assert mapper.memory_estimate().ram_bytes == config.mapper_bytes(capacity)
    assert mapper.stats().memory_bytes == mapper.memory_estimate().ram_bytes
    assert mapper.memory_estimate().disk_bytes == 0


def test_select_victims_matches_lexsort() -> None:
    rng = np.random.default_rng(9)
    for trial in range(40):
        capacity = int(rng.integers(1, 300))
        step = int(rng.integers(3, 30)) if trial % 2 else int(rng.integers(2**40, 2**62))
        last_seen = rng.integers(step - 25, step + 1, capacity).clip(-1, None)
        last_seen[rng.random(capacity) < 0.2] = -1
        frequency = rng.choice([0, 1, 2, 3, 70_000, 2**32 - 1], capacity).astype(np.uint32)
        count = int(rng.integers(0, capacity + 3))
        for is_lfu in (True, False):
            rows = np.flatnonzero((last_seen >= 0) & (last_seen < step - 1))
            keys = (rows, last_seen[rows], frequency[rows]) if is_lfu else (rows, last_seen[rows])
            expected = np.sort(rows[np.lexsort(keys)][:count])
            out = np.empty(max(count, 1), dtype=np.int64)
            found = _dynamic_kernels.select_victims(last_seen, frequency, step, count, is_lfu, out)
            np.testing.assert_array_equal(out[:found], expected)


def test_map_validates_ids() -> None:
    mapper = DynamicRowMapper(4, DynamicConfig())
    with pytest.raises(TypeError, match="int64"):
        mapper.map(np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError, match="1-D"):
        mapper.map(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="num_embeddings"):
        DynamicRowMapper(0, DynamicConfig())
    assert mapper.step == 0


def test_one_million_zipf_ids() -> None:
    ids = np.random.default_rng(0).zipf(1.1, 1_000_000).astype(np.int64)
    mapper = DynamicRowMapper(1 << 20, DynamicConfig(min_count=2, sketch_width=1 << 16))
    rows = mapper.map(ids).rows
    order = np.argsort(ids, kind="stable")
    same_id = ids[order][1:] == ids[order][:-1]
    np.testing.assert_array_equal(rows[order][1:][same_id], rows[order][:-1][same_id])  # one row per ID
    distinct_rows = np.unique(rows[rows >= 0])
    assert distinct_rows.size == np.unique(ids[rows >= 0]).size == mapper.stats().live_rows  # one ID per row
