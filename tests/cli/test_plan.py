"""``terarec plan``: the printed plan, its JSON, presets, refusals and the plot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from terarec.cli import main


@pytest.fixture(autouse=True)
def _no_saved_calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # plans here are "uncalibrated"


def test_plans_the_default_synthetic_run_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    args = [
        "plan",
        "--world-size",
        "4",
        "--ram-per-rank",
        "8GiB",
        "--network-gbps",
        "25",
        "--batch-size",
        "4096",
        "--comm-precision",
        "bf16",
        "--shard",
        "C1=row_wise",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "uncalibrated" in printed and "4 ranks" in printed and "25 Gbit/s" in printed
    assert "predicted step" in printed and "examples/s" in printed and "binding:" in printed
    assert "communication per step" in printed
    plan = json.loads(out.read_text())
    assert plan["topology"]["world_size"] == 4 and plan["batch_size"] == 1024
    assert plan["comm_precision"] == "bf16" and plan["calibration"].startswith("uncalibrated")
    placements = {p["name"]: p for p in plan["placements"]}
    assert len(placements) == 26 and placements["C1"]["sharding_type"] == "row_wise"
    # tables sized as training sizes them: 64 rows per distinct ID, at most 1M
    assert placements["C1"]["num_embeddings"] == 1_000_000 and placements["C6"]["num_embeddings"] == 64 * 3
    assert {rank["rank"] for rank in plan["ranks"]} == {0, 1, 2, 3}


def test_config_file_and_set_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("sharding:\n  world_size: 2\n  overrides:\n    - {table: C3, sharding_type: column_wise}\n")
    out = tmp_path / "plan.json"
    # column-wise shards need an element-wise optimizer state, as in training
    overrides = ["--set", "embedding.embedding_dim=64", "--set", "embedding.optimizer.type=adagrad"]
    assert main(["plan", "--config", str(config), *overrides, "--json", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["topology"]["world_size"] == 2
    c3 = next(p for p in plan["placements"] if p["name"] == "C3")
    assert c3["sharding_type"] == "column_wise" and c3["embedding_dim"] == 64
    # plan places tables as training does: a pin training cannot run is refused the same way
    assert main(["plan", "--config", str(config)]) == 2
    assert "table 'C3' is column_wise, but training runs it" in capsys.readouterr().err


def test_plans_a_prepared_dataset_from_its_stats(
    tmp_path: Path, criteo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared = tmp_path / "prepared"
    assert main(["prepare", "--data", str(criteo_dir / "train.tsv"), "--out", str(prepared)]) == 0
    out = tmp_path / "plan.json"
    assert main(["plan", "--data", str(prepared), "--world-size", "2", "--json", str(out)]) == 0
    assert "ID skew assumed" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["placements"]) == 26


def test_preset_100t_finds_the_machines_it_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    assert main(["plan", "--preset", "100t", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the fewest on which it fits" in printed and "1.01e+14 embedding parameters" in printed
    plan = json.loads(out.read_text())
    assert plan["num_parameters"] >= 10**14 and plan["capacity_bound"] in ("SSD capacity", "RAM capacity")


def test_refusal_is_one_line_with_what_would_fit(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--set", "embedding.rows_per_distinct_id=2", "--set", "model.type=dlrm"]
    assert main(["plan", "--world-size", "2", "--ram-per-rank", "16MiB", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("terarec: error: ") and "\n" not in err
    assert "would fit:" in err and "--world-size" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--shard", "C1"], "--shard expects TABLE=TYPE"),
        (["plan", "--shard", "C99=row_wise"], "names table 'C99'"),
        (["plan", "--preset", "1t"], "unknown preset '1t'"),
        (["plan", "--world-size", "3", "--ranks-per-host", "2"], "must divide sharding.world_size"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_plot_without_matplotlib_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert main(["plan", "--world-size", "2", "--plot", str(tmp_path / "plan.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_plot_draws_memory_and_load_per_rank(tmp_path: Path) -> None:
    path = tmp_path / "plan.png"
    small = ["--set", "embedding.rows_per_distinct_id=2", "--set", "model.type=dlrm"]
    args = ["plan", "--world-size", "4", "--ssd-per-rank", "1GiB", "--ram-per-rank", "40MiB", *small, "--plot", str(path)]
    assert main(args) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiered_tables_plan_onto_the_free_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    args = [
        "plan",
        "--world-size",
        "2",
        "--set",
        "embedding.tiered.cache_bytes=1MiB",
        "--set",
        f"train.out={tmp_path}",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    assert "the free disk where tiered tables go" in capsys.readouterr().out
    plan = json.loads(out.read_text())
    assert plan["topology"]["ssd_per_rank"] > 0
    tiered = [p for p in plan["placements"] if p["sharding_type"] != "data_parallel"]
    assert tiered and all(shard["tier"] == "ssd" for p in tiered for shard in p["shards"])
