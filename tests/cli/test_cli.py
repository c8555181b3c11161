"""The command line: config printing, one-line errors, and bad input reported by file:line:column."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from terarec.cli import main


def test_print_config_shows_resolved_values(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  batch_size: 64\n  seed: 3\n")
    assert main(["train", "--config", str(config), "--seed", "9", "--set", "embedding.embedding_dim=32", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["batch_size"] == 64
    assert printed["train"]["seed"] == 9
    assert printed["embedding"]["embedding_dim"] == 32
    assert printed["data"]["path"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--set", "train.batch_sise=3", "--print-config"], "did you mean 'batch_size'"),
        (["train", "--batch-size", "0", "--print-config"], "train.batch_size must be >= 1"),
        (["train", "--data", "/nonexistent/clicks.tsv", "--no-progress"], "/nonexistent/clicks.tsv"),
        (["train", "--set", "oops", "--print-config"], "--set expects KEY=VALUE"),
        (["eval", "--checkpoint", "/nonexistent/run"], "no checkpoint here"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("terarec: error: ")
    assert message in err
    assert "\n" not in err and "Traceback" not in err


def _bad_criteo(tmp_path: Path, criteo_dir: Path) -> Path:
    lines = (criteo_dir / "train.tsv").read_text().splitlines()[:300]
    fields = lines[41].split("\t")
    fields[3] = "abc"  # I3 holds a word
    lines[41] = "\t".join(fields)
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_row_names_file_line_and_column(tmp_path: Path, criteo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _bad_criteo(tmp_path, criteo_dir)
    assert main(["train", "--data", str(bad), "--no-progress", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:42:4" in err and "I3" in err and "'abc'" in err


def test_skip_bad_rows_counts_them(tmp_path: Path, criteo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _bad_criteo(tmp_path, criteo_dir)
    args = ["train", "--data", str(bad), "--on-bad-row", "skip", "--no-progress", "--out", str(tmp_path / "run")]
    assert main([*args, "--batch-size", "64", "--threads", "2"]) == 0
    assert "skipped 1 malformed rows" in capsys.readouterr().out


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "terarec", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("terarec ")
