"""libFM input end to end: MovieLens-100k written as libFM trains as well as from its own
columns, and values other than 1 reach the model through the weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from terarec.train import fit, load_config
from tests.helpers import SHARED_DATA

MOVIELENS = SHARED_DATA / "movielens_100k" / "ml-100k.inter"
ITEM_OFFSET = 10_000  # users and items in one index space, as libFM files number them


def _write_libfm(path: Path, weight_items: bool = False) -> None:
    """ml-100k as ``rating user:1 item:v`` lines (v = 1, or the item's 1/sqrt(popularity))."""
    table = np.loadtxt(MOVIELENS, skiprows=1, dtype=np.int64)
    users, items, ratings = table[:, 0], table[:, 1], table[:, 2]
    popularity = np.bincount(items)[items]
    values = 1 / np.sqrt(popularity) if weight_items else np.ones(len(items))
    lines = [f"{r} {u}:1 {ITEM_OFFSET + i}:{v:.6g}" for r, u, i, v in zip(ratings, users, items, values)]
    path.write_text("\n".join(lines) + "\n")


def _keys(path: Path, out: Path) -> list[tuple[str, object]]:
    return [("data.path", str(path)), ("data.format", "libfm"), ("data.label_threshold", 4.0),
            ("train.out", str(out)), ("train.progress", False)]


@pytest.mark.slow
def test_movielens_as_libfm_trains_to_the_auc_of_its_columns(tmp_path: Path) -> None:
    source = tmp_path / "ml.libfm"
    _write_libfm(source)
    result = fit(load_config(overrides=[*_keys(source, tmp_path / "run"), ("model.type", "deepfm")]))
    assert result.metrics["auc"] > 0.76, result.metrics["auc"]  # 0.78 with the CSV columns (bench/defaults.py)
    # the CLI takes the same file with --format libfm, and a field map naming the fields
    field_map = tmp_path / "fields.txt"
    field_map.write_text("".join(f"{u} user\n" for u in range(1, 944)) + "".join(
        f"{ITEM_OFFSET + i} item\n" for i in range(1, 1683)))
    command = [sys.executable, "-m", "terarec", "train", "--data", str(source), "--format", "libfm",
               "--field-map", str(field_map), "--label-threshold", "4", "--steps", "20", "--out", str(tmp_path / "cli")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_values_other_than_one_change_the_model(tmp_path: Path) -> None:
    plain, weighted = tmp_path / "plain.libfm", tmp_path / "weighted.libfm"
    _write_libfm(plain)
    _write_libfm(weighted, weight_items=True)
    steps = [("train.steps", 30), ("data.val_fraction", 0)]
    first = fit(load_config(overrides=[*_keys(plain, tmp_path / "a"), *steps]))
    second = fit(load_config(overrides=[*_keys(weighted, tmp_path / "b"), *steps]))
    assert first.metrics["auc"] != second.metrics["auc"]
    assert 0.6 < second.metrics["auc"] < 1
