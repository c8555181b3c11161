"""Memory planning refuses what will not fit, before anything is allocated."""

from __future__ import annotations

import tracemalloc

import psutil
import pytest

from terarec.embedding import (
    EmbeddingCollection,
    EmbeddingTableConfig,
    MemoryEstimate,
    available_memory_bytes,
    check_memory,
    format_bytes,
)
from terarec.errors import PlanError


def test_refuses_a_trillion_row_table_before_allocating_it() -> None:
    configs = [
        EmbeddingTableConfig("t_small", 1000, 16, ("a",)),
        EmbeddingTableConfig("t_huge", 10**12, 64, ("b",)),
    ]
    tracemalloc.start()  # NumPy reports its buffers to tracemalloc: a table's rows would show
    try:
        with pytest.raises(PlanError) as info:
            check_memory(EmbeddingCollection.estimate_memory(configs))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # even the small table's rows (1000 x 17 floats, 68 kB) would exceed this
    assert peak < 48 * 1024, f"estimating and refusing allocated {peak} bytes"
    message = str(info.value)
    assert "'t_huge'" in message and str(10**12 * 65 * 4) in message and "TiB" in message
    with pytest.raises(PlanError, match=r"8589934592 bytes \(8\.0 GiB\) available"):
        check_memory(EmbeddingCollection.estimate_memory(configs), available_bytes=8 * 2**30)
    assert isinstance(info.value, ValueError)


def test_accepts_what_fits_and_names_largest_tables() -> None:
    check_memory({"a": MemoryEstimate(900)}, available_bytes=1000, headroom=0.9)
    with pytest.raises(PlanError, match=r"'b': 600 bytes.*'a': 500 bytes"):
        check_memory({"a": MemoryEstimate(500), "b": MemoryEstimate(600)}, available_bytes=1000)
    with pytest.raises(ValueError, match="headroom"):
        check_memory({}, available_bytes=1, headroom=0.0)


def test_available_memory_and_format() -> None:
    # what psutil reports, within what other processes allocate or free meanwhile
    assert abs(available_memory_bytes() - psutil.virtual_memory().available) < 256 * 2**20
    assert format_bytes(1536 * 2**20) == "1.5 GiB"
    assert format_bytes(10) == "10 B"
