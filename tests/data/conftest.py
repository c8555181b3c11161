from pathlib import Path

import pytest

CRITEO_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "criteo_kaggle_9k"


@pytest.fixture
def criteo_lines() -> list[str]:
    """The first 200 lines of the Criteo sample (without newlines)."""
    with open(CRITEO_DIR / "train.tsv") as handle:
        return [next(handle).rstrip("\n") for _ in range(200)]
