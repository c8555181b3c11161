"""A bounded soak: the service's memory does not grow under steady load (bench/serve.py runs the
10-minute version against a separate server process)."""

from __future__ import annotations

import gc
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient

from terarec.serve import ServeSettings, create_app
from tests.serve.conftest import CRITEO_EVAL, criteo_records


@pytest.mark.slow
def test_memory_does_not_grow_under_steady_load(criteo_model: tuple[Path, Path]) -> None:
    process = psutil.Process()
    payload = {"candidates": criteo_records(CRITEO_EVAL, 100)}
    bad = {"candidates": [{"colour": 1}]}
    with TestClient(create_app(ServeSettings(str(criteo_model[1])))) as client:

        def load(requests: int) -> float:
            for i in range(requests):
                assert client.post("/score", json=payload if i % 10 else bad).status_code == (200 if i % 10 else 422)
            gc.collect()
            return process.memory_info().rss / 2**20

        load(300)  # allocator pools and caches fill up first
        settled = load(300)
        after = load(2000)
    # 2,000 requests of 60 kB each: a leak of 8 kB a request would add 16 MiB.
    assert after - settled < 16, (settled, after)
