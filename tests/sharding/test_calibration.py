"""Calibration: saved and loaded back; the real micro-benchmark measures positive rates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terarec.errors import ConfigError
from terarec.sharding import (
    Calibration,
    default_calibration_path,
    load_calibration,
    measure_calibration,
    save_calibration,
)


def test_round_trip(tmp_path: Path) -> None:
    calibration = Calibration(6e9, 1e11, 8e-5, 2.5e9, 1.5e9, 2e9, "box / cpu / 2 cpus", "2025-01-01T00:00:00+00:00")
    path = save_calibration(calibration, tmp_path / "deep" / "calibration.json")
    assert path.is_file() and json.loads(path.read_text())["format"] == 3
    assert load_calibration(path) == calibration
    assert "calibrated 2025-01-01 on box" in calibration.describe()


def test_default_path_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_calibration_path() == tmp_path / "terarec" / "calibration.json"
    assert load_calibration() is None  # nothing measured yet: the caller says "uncalibrated"


def test_a_damaged_file_is_a_one_line_config_error(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text('{"format": 3, "memory_bandwidth": -1}')
    with pytest.raises(ConfigError, match="not a terarec calibration.*--calibrate"):
        load_calibration(path)


def test_a_calibration_of_an_older_format_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    for old in (1, 2):  # format 2 lacked the exchange's packing rates
        path.write_text(f'{{"format": {old}, "memory_bandwidth": 6e9}}')
        assert load_calibration(path) is None


@pytest.mark.slow
def test_measures_this_machine() -> None:
    calibration = measure_calibration(message_bytes=1 << 20, repeats=20)
    assert calibration.memory_bandwidth > 1e8 and calibration.dense_flops > 1e8
    assert 0 < calibration.collective_latency < 1.0 and calibration.intra_host_bandwidth > 1e6
    assert calibration.exchange_rate > 1e6 and calibration.conversion_rate > 1e6
