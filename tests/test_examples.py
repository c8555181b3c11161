"""The examples stay valid as the config tree changes, run, and do what their first line says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from terarec.train import load_config

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.to_dict()["train"]["out"]


def test_examples_are_found() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.slow
def test_python_api_example_trains_then_scores_with_the_saved_model(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / "python_api.py"), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    auc = float(next(line for line in lines if line.startswith("AUC")).split()[1])
    assert 0.6 < auc < 1
    scored = [line for line in lines if line.startswith("clicked=")]
    assert len(scored) == 5
    assert all(0 < float(line.rsplit("=", 1)[1]) < 1 for line in scored)
    assert (tmp_path / "run" / "metrics.json").is_file()
