"""Fixtures shared by the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import CRITEO


@pytest.fixture
def criteo_dir() -> Path:
    if not CRITEO.is_dir():
        pytest.skip(f"shared dataset missing: {CRITEO}")
    return CRITEO
