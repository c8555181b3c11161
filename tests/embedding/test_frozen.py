"""Frozen tables behind a RAM cache: the same pooled rows as the mapped file, for every storage
dtype and mapper, through evictions and lookups larger than the cache, with counted hits and
misses and a clear error for a damaged file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terarec.embedding import (
    DataType,
    DynamicConfig,
    EmbeddingCollection,
    EmbeddingTableConfig,
    FrozenCollection,
    PoolingType,
    export_tables,
)
from terarec.sparse import JaggedTensor

DIM = 8


def _requests(seed: int, count: int, features: tuple[str, ...]) -> list[dict[str, JaggedTensor]]:
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        bags = int(rng.integers(1, 30))
        lengths = rng.integers(0, 4, bags)
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        requests.append({f: JaggedTensor(torch.from_numpy(rng.zipf(1.3, int(lengths.sum())).astype(np.int64)), offsets) for f in features})
    return requests


@pytest.mark.parametrize("variant", ["fp32", "bf16", "mean", "dynamic"])
def test_a_cached_table_pools_exactly_as_the_mapped_file(tmp_path: Path, variant: str) -> None:
    options: dict[str, object] = {
        "fp32": {}, "bf16": {"weights_dtype": DataType.BF16}, "mean": {"pooling": PoolingType.MEAN},
        "dynamic": {"dynamic": DynamicConfig()},
    }[variant]
    config = EmbeddingTableConfig("t", 2000, DIM, ("a", "b"), **options)  # type: ignore[arg-type]
    trained = EmbeddingCollection([config], seed=3)
    trained.prepare(_requests(1, 1, ("a", "b"))[0])  # a dynamic table admits some IDs
    export_tables(trained, tmp_path / "tables")
    mapped = FrozenCollection([config], tmp_path / "tables", seed=3)
    row_bytes = DIM * config.weights_dtype.itemsize
    cached = FrozenCollection([config], tmp_path / "tables", seed=3, cache_bytes={"t": 40 * row_bytes})
    for request in _requests(2, 60, ("a", "b")):  # bags of up to 30 x 3 IDs: some lookups overflow 40 rows
        assert torch.equal(cached.lookup(request), mapped.lookup(request))
    counters = cached.counters()
    assert counters["t/cache_hits"] > 0 and counters["t/cache_misses"] > 0
    assert mapped.counters() == {}
    table = cached.tables["t"]
    assert table.cache is not None and table.cache.shape == (40, DIM) and table.weights.size == 0


def test_hits_and_misses_are_counted_per_distinct_row(tmp_path: Path) -> None:
    config = EmbeddingTableConfig("t", 1000, DIM, ("f",))
    export_tables(EmbeddingCollection([config]), tmp_path / "tables")
    cached = FrozenCollection([config], tmp_path / "tables", seed=0, cache_bytes={"t": 10 * DIM * 4})
    mapper = cached.tables["t"].mapper
    ids = np.arange(5000, dtype=np.int64)
    rows = mapper.map(ids, training=False).rows
    _, first = np.unique(rows, return_index=True)
    distinct_ids = ids[np.sort(first)]  # IDs of distinct rows, so each counts once

    def look(chosen: np.ndarray) -> None:
        cached.lookup({"f": JaggedTensor(torch.from_numpy(chosen), torch.arange(len(chosen) + 1))})

    a, b, c, d = distinct_ids[:4]
    look(np.array([a, b, b, c]))  # three distinct rows, all read
    assert cached.counters() == {"t/cache_hits": 0.0, "t/cache_misses": 3.0}
    look(np.array([c, b, d]))
    assert cached.counters() == {"t/cache_hits": 2.0, "t/cache_misses": 4.0}
    look(distinct_ids[10:30])  # 20 distinct rows, more than the cache: read past it
    assert cached.counters() == {"t/cache_hits": 2.0, "t/cache_misses": 24.0}
    look(np.array([b, c, d]))  # the cache was left as it was
    assert cached.counters() == {"t/cache_hits": 5.0, "t/cache_misses": 24.0}


def test_a_cache_smaller_than_a_row_and_a_truncated_file_are_refused(tmp_path: Path) -> None:
    config = EmbeddingTableConfig("t", 100, DIM, ("f",))
    export_tables(EmbeddingCollection([config]), tmp_path / "tables")
    with pytest.raises(ValueError, match="cannot hold one row of 32 bytes"):
        FrozenCollection([config], tmp_path / "tables", seed=0, cache_bytes={"t": 31})
    with pytest.raises(ValueError, match=r"names tables \['u'\]"):
        FrozenCollection([config], tmp_path / "tables", seed=0, cache_bytes={"u": 1024})
    cached = FrozenCollection([config], tmp_path / "tables", seed=0, cache_bytes={"t": 1024})
    weights = tmp_path / "tables" / "t" / "weights.npy"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size - 50 * DIM * 4)  # rows 50.. are gone
    ids = np.arange(1000, dtype=np.int64)
    late = ids[cached.tables["t"].mapper.map(ids, training=False).rows >= 50][:1]
    row = int(cached.tables["t"].mapper.map(late, training=False).rows[0])
    with pytest.raises(OSError, match=rf"weights\.npy: reading row {row} failed: the file ends before it"):
        cached.lookup({"f": JaggedTensor(torch.from_numpy(late), torch.tensor([0, 1]))})
