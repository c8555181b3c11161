"""Training on several processes through torchrun (``terarec train --nproc-per-node N``), gloo on CPU.

One process trains the Criteo sample as the reference; two ranks must train the same model up
to float summation order, twice bit for bit, and their checkpoints must resume on one and on
four ranks (resharding). A rank killed mid-run must stop the others with a clear error, and
the run must then resume exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from terarec.data import load_splits
from terarec.train import fit, load_config
from terarec.train.checkpoint import CHECKPOINTS
from tests.helpers import (
    CRITEO,
    assert_bit_identical,
    checkpoint_weights,
    tiny_overrides,
)

pytestmark = pytest.mark.slow

# 7,200 training rows in batches of 64: 112 full batches (two ranks drop the partial last one).
STEPS = 112
CRITEO_KEYS = {
    "data.path": str(CRITEO / "train.tsv"),
    "data.eval_path": f"{CRITEO / 'dev.tsv'},{CRITEO / 'test.tsv'}",
    "data.val_fraction": 0,  # every one of the 7,200 rows trains: 112 full batches
    "train.batch_size": 64,
    "train.steps": STEPS,
    "train.checkpoint_every": STEPS // 2,
    "train.keep_checkpoints": 3,
    "train.progress": False,
}


def _config_file(path: Path, overrides: dict[str, object]) -> Path:
    path.write_text(load_config(overrides=list(overrides.items())).to_yaml())
    return path


def _launch(config: Path, processes: int, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "terarec", "train", "--config", str(config), "--nproc-per-node", str(processes)]
    return subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _train_ranks(config: Path, processes: int, *extra: str) -> str:
    process = _launch(config, processes, *extra)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def _metrics(out: Path) -> dict[str, object]:
    return json.loads((out / "metrics.json").read_text())


def _close(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> None:
    assert left.keys() == right.keys()
    for name, value in left.items():
        np.testing.assert_allclose(value, right[name], rtol=0, atol=1e-4, err_msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process, then two ranks twice, on the Criteo sample with the same config."""
    root = tmp_path_factory.mktemp("distributed")
    fit(load_config(overrides=[*CRITEO_KEYS.items(), ("train.out", str(root / "one")), ("train.num_threads", 2)]))
    for name in ("two", "two_again"):
        config = _config_file(root / f"{name}.yaml", {**CRITEO_KEYS, "train.out": str(root / name)})
        _train_ranks(config, 2)
    return {name: root / name for name in ("one", "two", "two_again")}


def test_two_ranks_train_the_model_of_one_process(runs: dict[str, Path]) -> None:
    one, two = _metrics(runs["one"]), _metrics(runs["two"])
    assert two["world_size"] == 2 and two["steps"] == one["steps"] == STEPS
    assert two["train_examples"] == one["train_examples"] == STEPS * 64
    assert abs(two["auc"] - one["auc"]) < 0.002, (one["auc"], two["auc"])
    assert two["auc"] > 0.70
    _close(checkpoint_weights(Path(one["checkpoint"])), checkpoint_weights(Path(two["checkpoint"])))
    # the planner used both ranks, and the measured traffic is what it predicted
    assert sorted({rank for table in two["placement"].values() for rank in table["ranks"]}) == [0, 1]
    assert two["comm_bytes_per_step"] == pytest.approx(two["predicted_comm_bytes_per_step"], rel=0.1)


def test_batch_norm_and_validation_on_two_ranks_score_as_the_saved_model(tmp_path: Path) -> None:
    out = tmp_path / "bn"
    keys = {**CRITEO_KEYS, "data.val_fraction": 0.1, "train.eval_every": 40, "model.batch_norm": True, "train.out": str(out)}
    keys["train.early_stopping.restore_best"] = False  # the last model: its statistics last moved per rank
    keys["train.eval_batch_size"] = 64  # both ranks score a share of every batch
    _train_ranks(_config_file(tmp_path / "bn.yaml", keys), 2)
    metrics = _metrics(out)
    assert [v["step"] for v in metrics["validation"]] == [40, 80, 112]
    # every rank evaluated with rank 0's batch-norm statistics, the ones its checkpoint holds
    report = tmp_path / "eval.json"
    subprocess.run([sys.executable, "-m", "terarec", "eval", "--checkpoint", str(out), "--json", str(report)], check=True)
    evaluated = json.loads(report.read_text())
    assert evaluated["auc"] == pytest.approx(metrics["auc"], abs=1e-6)
    assert evaluated["logloss"] == pytest.approx(metrics["logloss"], abs=1e-6)


def test_deep_hash_tables_train_data_parallel_on_two_ranks(tmp_path: Path) -> None:
    out = tmp_path / "dhe"
    tables = [{"name": "hashed", "feature_names": ["C3", "C4", "C12"], "kind": "dhe"}]
    keys = {**CRITEO_KEYS, "embedding.tables": tables, "embedding.deep_hash.hidden_dims": [32], "train.out": str(out)}
    _train_ranks(_config_file(tmp_path / "dhe.yaml", keys), 2)
    metrics = _metrics(out)
    assert metrics["world_size"] == 2 and metrics["auc"] > 0.70
    assert "hashed" not in metrics["placement"]  # a decoder is not a table to place: DDP replicates it
    # the ranks kept one decoder: the saved one scores as training did
    report = tmp_path / "eval.json"
    subprocess.run([sys.executable, "-m", "terarec", "eval", "--checkpoint", str(out), "--json", str(report)], check=True)
    assert json.loads(report.read_text())["auc"] == pytest.approx(metrics["auc"], abs=1e-6)


def test_two_rank_runs_are_bit_identical(runs: dict[str, Path]) -> None:
    first, second = _metrics(runs["two"]), _metrics(runs["two_again"])
    assert first["auc"] == second["auc"] and first["logloss"] == second["logloss"]
    assert_bit_identical(checkpoint_weights(Path(first["checkpoint"])), checkpoint_weights(Path(second["checkpoint"])))


def test_raw_files_are_parsed_once_and_each_rank_maps_the_prepared_columns(runs: dict[str, Path]) -> None:
    # rank 0 prepared the TSV files into the run directory; the ranks trained on those, and the
    # model equals the one-process run's on the raw files (above), as the data is the same
    ingested = runs["two"] / "ingested"
    assert (ingested / "train" / "meta.json").is_file() and (ingested / "eval" / "meta.json").is_file()
    raw = load_config(overrides=list(CRITEO_KEYS.items())).data
    prepared = dataclasses.replace(raw, path=str(ingested / "train"), eval_path=str(ingested / "eval"), format=None)
    expected, got = load_splits(raw), load_splits(prepared)
    assert expected.stats == got.stats
    for ours, theirs in ((expected.train, got.train), (expected.eval, got.eval)):
        np.testing.assert_array_equal(ours.labels, theirs.labels)
        np.testing.assert_array_equal(ours.dense, theirs.dense)
        for name, column in ours.sparse.items():
            np.testing.assert_array_equal(column.values, theirs.sparse[name].values)
            np.testing.assert_array_equal(column.offsets, theirs.sparse[name].offsets)


def _halfway_copy(run: Path, out: Path) -> None:
    """``out`` holds ``run``'s checkpoint at half the steps, as if it had stopped there."""
    shutil.copytree(run / CHECKPOINTS, out / CHECKPOINTS)
    shutil.rmtree(out / CHECKPOINTS / f"step-{STEPS:09d}")


def test_two_rank_checkpoint_resumes_on_one_and_on_four_ranks(runs: dict[str, Path], tmp_path: Path) -> None:
    reference = checkpoint_weights(Path(_metrics(runs["one"])["checkpoint"]))
    one = tmp_path / "one"
    _halfway_copy(runs["two"], one)
    fit(load_config(overrides=[*CRITEO_KEYS.items(), ("train.out", str(one)), ("train.resume", True), ("train.num_threads", 2)]))
    _close(reference, checkpoint_weights(Path(_metrics(one)["checkpoint"])))

    four = tmp_path / "four"
    _halfway_copy(runs["two"], four)
    _train_ranks(_config_file(tmp_path / "four.yaml", {**CRITEO_KEYS, "train.out": str(four)}), 4, "--resume")
    metrics = _metrics(four)
    assert metrics["world_size"] == 4 and metrics["steps"] == STEPS
    assert abs(metrics["auc"] - _metrics(runs["one"])["auc"]) < 0.002
    _close(reference, checkpoint_weights(Path(metrics["checkpoint"])))


def _rank_pid(launcher: psutil.Process, rank: int) -> int:
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "terarec" in " ".join(child.cmdline()):
                return child.pid
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no process of rank {rank} under the launcher")


def test_killed_rank_stops_the_others_and_the_run_resumes_exactly(tmp_path: Path) -> None:
    keys = dict(tiny_overrides(tmp_path / "ref", train__steps=240, train__checkpoint_every=40, train__batch_size=512))
    keys.pop("train.num_threads")
    reference = tmp_path / "ref"
    _train_ranks(_config_file(tmp_path / "ref.yaml", keys), 2)

    killed = tmp_path / "killed"
    config = _config_file(tmp_path / "killed.yaml", {**keys, "train.out": str(killed)})
    launcher = _launch(config, 2)
    first = killed / CHECKPOINTS / f"step-{40:09d}"
    deadline = time.monotonic() + 120
    while not first.exists():
        assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(_rank_pid(psutil.Process(launcher.pid), 1), signal.SIGKILL)
    output, _ = launcher.communicate(timeout=120)  # the others stop: they do not wait out the collective timeout
    assert launcher.returncode == 1, output
    assert "rank 1" in output and "SIGKILL" in output and "--resume" in output
    assert not (killed / "metrics.json").exists()

    _train_ranks(config, 2, "--resume")
    assert_bit_identical(
        checkpoint_weights(Path(_metrics(reference)["checkpoint"])), checkpoint_weights(Path(_metrics(killed)["checkpoint"]))
    )


def test_hybrid_mode_on_two_ranks_learns_like_sync(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "hybrid"
    _train_ranks(_config_file(tmp_path / "hybrid.yaml", {**CRITEO_KEYS, "train.out": str(out)}), 2, "--mode", "hybrid")
    hybrid, sync = _metrics(out), _metrics(runs["two"])
    assert hybrid["config"]["sharding"]["mode"] == "hybrid" and hybrid["steps"] == STEPS
    assert abs(hybrid["auc"] - sync["auc"]) < 0.01, (sync["auc"], hybrid["auc"])


TWO_FITS = """
import sys
from pathlib import Path
from terarec.train import fit, load_config
from tests.helpers import tiny_overrides
for run in ("first", "second"):
    fit(load_config(overrides=tiny_overrides(Path(sys.argv[1]) / run, train__steps=3, train__num_threads=1)))
"""


def test_one_process_group_serves_several_runs(tmp_path: Path) -> None:
    """A Python program under torchrun may call fit() again: the second run reuses the group."""
    script = tmp_path / "two_fits.py"
    script.write_text(TWO_FITS)
    # --standalone: torchrun's agent picks the port and holds it (no port to free and bind again)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path)]
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=root, check=False,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert _metrics(tmp_path / "first")["world_size"] == _metrics(tmp_path / "second")["world_size"] == 2


def test_pinned_row_column_and_replicated_tables_train_and_evaluate_in_one_process(tmp_path: Path) -> None:
    """Every executed sharding type through the trainer (table-row-wise on this one host: row-wise
    over its ranks, its partial sums reduced in the host stage); `terarec eval` of the checkpoint
    in one process reproduces the run's metrics (the checkpoint layout does not depend on the
    placement)."""
    out = tmp_path / "pinned"
    keys = dict(tiny_overrides(out, train__steps=12, embedding__optimizer__type="adagrad"))
    keys.pop("train.num_threads")
    keys["sharding.overrides"] = [
        {"table": "C1", "sharding_type": "row_wise"},
        {"table": "C2", "sharding_type": "column_wise"},
        {"table": "C3", "sharding_type": "data_parallel"},
        {"table": "C4", "sharding_type": "table_row_wise"},
    ]
    _train_ranks(_config_file(tmp_path / "pinned.yaml", keys), 2)
    metrics = _metrics(out)
    shardings = [metrics["placement"][t]["sharding"] for t in ("C1", "C2", "C3", "C4")]
    assert shardings == ["row_wise", "column_wise", "data_parallel", "table_row_wise"]
    assert metrics["placement"]["C4"]["ranks"] == [0, 1]
    # the host stage's bytes are counted too (IDs follow the mean bag size, pooled rows are exact)
    assert metrics["comm_bytes_per_step"] == pytest.approx(metrics["predicted_comm_bytes_per_step"], rel=0.1)
    report = tmp_path / "eval.json"
    command = [sys.executable, "-m", "terarec", "eval", "--checkpoint", str(out), "--json", str(report)]
    subprocess.run(command, check=True, capture_output=True)
    evaluated = json.loads(report.read_text())
    assert evaluated["auc"] == metrics["auc"] and evaluated["logloss"] == metrics["logloss"]
