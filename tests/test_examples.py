"""The example configs stay valid as the config tree changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from terarec.train import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.to_dict()["train"]["out"]


def test_examples_are_found() -> None:
    assert len(EXAMPLES) >= 3
