"""Continuous training (``train.stream``): files arriving in a directory are trained once each, in
name order; the position is checkpointed so a stream trained in pieces (stopped by a step cap, a
signal or ``kill -9``) ends bit-identical to one trained without stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from terarec.errors import ConfigError, DataError
from terarec.train import TrainResult, fit, load_config
from terarec.train.checkpoint import checkpoint_step, latest_checkpoint
from tests.helpers import CRITEO, CRITEO_ROWS, STREAM, arrive, assert_bit_identical, checkpoint_weights, stream_command

# Dynamic tables admit IDs while a batch is prepared, ahead of training: the checkpoints a stream
# takes at arbitrary points must still hold no trace of a batch not yet trained.
VARIANTS = {
    "fixed": {},
    "dynamic": {"embedding.dynamic.min_count": 2, "embedding.dynamic.ttl_steps": 15},
}


def stream(run: Path, incoming: Path, **overrides: object) -> TrainResult:
    settings = {**STREAM, "train.stream.path": str(incoming), "train.out": str(run), **overrides}
    return fit(load_config(overrides=list(settings.items())))


def _parts(incoming: Path, sizes: list[int]) -> list[str]:
    names, start = [], 0
    for index, size in enumerate(sizes):
        names.append(arrive(incoming, f"part-{index:03d}.tsv", CRITEO_ROWS[start : start + size]).name)
        start += size
    return names


def test_each_file_is_trained_once_in_name_order_and_a_restart_takes_only_new_files(tmp_path: Path) -> None:
    incoming, run = tmp_path / "in", tmp_path / "run"
    arrive(incoming, "b-0002.tsv", CRITEO_ROWS[2000:4000])
    arrive(incoming, "b-0001.tsv", CRITEO_ROWS[:2000])  # arrives later, trained first: name order
    (incoming / "README.md").write_text("not data\n")
    (incoming / "b-0003.tsv.part").write_text("".join(CRITEO_ROWS[4000:4100]))  # still being written
    first = stream(run, incoming)
    files = first.metrics["stream"]["files"]  # type: ignore[index]
    assert [f["name"] for f in files] == ["b-0001.tsv", "b-0002.tsv"]
    assert [f["rows"] for f in files] == [2000, 2000] and [f["steps"] for f in files] == [16, 16]
    assert first.metrics["steps"] == 32 and first.metrics["train_examples"] == 4000
    assert first.metrics["stream"]["ignored_files"] == ["README.md"]  # type: ignore[index]
    # Progressive validation: each example scored before training on it; a real signal by the second file.
    assert files[1]["scored"] == 2000 and files[1]["auc"] > 0.65
    assert checkpoint_step(first.checkpoint) == 32

    (incoming / "b-0003.tsv.part").rename(incoming / "b-0003.tsv")
    arrive(incoming, "b-0000.tsv", CRITEO_ROWS[6000:6500])  # late: sorts before files already trained
    second = stream(run, incoming, **{"data.eval_path": str(CRITEO / "test.tsv")})
    assert [f["name"] for f in second.metrics["stream"]["files"]] == ["b-0003.tsv"]  # type: ignore[index]
    assert second.metrics["examples"] == 391 and second.metrics["auc"] > 0.65  # the final model on the evaluation file
    assert second.metrics["steps"] == 33 and second.metrics["train_examples"] == 4100
    assert second.metrics["stream"]["late_files"] == ["b-0000.tsv"]  # type: ignore[index]
    assert second.metrics["stream"]["files_trained"] == 3  # type: ignore[index]
    saved = json.loads((second.checkpoint / "trainer.json").read_text())
    assert saved["stream_files"] == ["b-0001.tsv", "b-0002.tsv", "b-0003.tsv"] and saved["stream_file"] is None


@pytest.mark.parametrize("variant", ["fixed", pytest.param("dynamic", marks=pytest.mark.slow)])
def test_a_stream_trained_in_pieces_matches_one_trained_without_stopping(tmp_path: Path, variant: str) -> None:
    extra = VARIANTS[variant]
    straight_in, pieces_in = tmp_path / "straight-in", tmp_path / "pieces-in"
    sizes = [1500, 1000, 1700]
    _parts(straight_in, sizes)
    straight = stream(tmp_path / "straight", straight_in, **extra)

    pieces = tmp_path / "pieces"
    names = _parts(pieces_in, sizes[:2])
    stopped = stream(pieces, pieces_in, **{"train.steps": 15, "train.checkpoint_every": 4, **extra})
    assert stopped.metrics["steps"] == 15  # inside the second file (12 + 8 batches)
    saved = json.loads((stopped.checkpoint / "trainer.json").read_text())
    assert saved["stream_files"] == names[:1] and saved["stream_file"] == names[1] and saved["batch_in_epoch"] == 3
    # Checkpoints by time (here after every step) drain the pipeline; they change no result.
    stream(pieces, pieces_in, **{"train.checkpoint_seconds": 1e-6, **extra})
    arrive(pieces_in, "part-002.tsv", CRITEO_ROWS[sum(sizes[:2]) : sum(sizes)])
    last = stream(pieces, pieces_in, **extra)
    assert last.metrics["steps"] == straight.metrics["steps"] == 12 + 8 + 14
    assert_bit_identical(checkpoint_weights(straight.checkpoint), checkpoint_weights(last.checkpoint))


def test_a_malformed_file_stops_the_stream_naming_file_line_and_column_and_keeps_what_was_trained(tmp_path: Path) -> None:
    incoming, run = tmp_path / "in", tmp_path / "run"
    arrive(incoming, "part-000.tsv", CRITEO_ROWS[:1000])
    broken = CRITEO_ROWS[1000:1010]
    broken[3] = "\t".join(broken[3].split("\t")[:20]) + "\n"
    arrive(incoming, "part-001.tsv", broken)
    with pytest.raises(DataError, match=r"part-001\.tsv:4:21: .*expected 40 fields, got 20"):
        stream(run, incoming)
    kept = latest_checkpoint(run)
    assert kept is not None and checkpoint_step(kept) == 8  # the first file, trained before the bad one
    assert json.loads((kept / "trainer.json").read_text())["stream_files"] == ["part-000.tsv"]


def test_files_whose_columns_differ_from_the_first_are_refused(tmp_path: Path) -> None:
    incoming = tmp_path / "in"
    arrive(incoming, "a.csv", ["label,age,city\n"] + [f"{i % 2},{i},c{i % 7}\n" for i in range(300)])
    arrive(incoming, "b.csv", ["label,age,town\n"] + [f"{i % 2},{i},t{i % 5}\n" for i in range(300)])
    with pytest.raises(DataError, match=r"b\.csv: its columns differ from the stream's first file: sparse_features \['town'\] instead of \['city'\]"):
        stream(tmp_path / "run", incoming, **{"data.format": "csv", "data.label": "label", "data.dense_features": "age"})


def test_a_file_in_progress_must_not_change(tmp_path: Path) -> None:
    incoming, run = tmp_path / "in", tmp_path / "run"
    arrive(incoming, "part-000.tsv", CRITEO_ROWS[:1000])
    stream(run, incoming, **{"train.steps": 3, "train.checkpoint_every": 3})
    arrive(incoming, "part-000.tsv", CRITEO_ROWS[:900])
    with pytest.raises(DataError, match=r"part-000\.tsv: has 900 rows, but 1000 when training on it began"):
        stream(run, incoming)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.epochs": 2}, "train.epochs does not apply to train.stream"),
        ({"data.path": str(CRITEO / "train.tsv")}, "train.stream.path and data.path are both set"),
        ({"train.lr_decay": "cosine"}, "train.lr_decay needs a known number of steps"),
        ({"train.eval_every": 10}, "train.stream validates progressively"),
        ({"model.type": "two_tower"}, "train.stream trains click models"),
        ({"data.format": "prepared"}, "data.format=prepared cannot be streamed"),
    ],
)
def test_settings_that_need_a_whole_dataset_are_refused(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigError, match=message):
        stream(tmp_path / "run", tmp_path / "in", **overrides)


def test_a_run_directory_of_another_kind_of_run_is_not_resumed_as_a_stream(tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = {**STREAM, "data.path": str(CRITEO / "train.tsv"), "train.steps": 2, "train.out": str(run), "data.val_fraction": 0}
    settings.pop("train.stream.idle_seconds"), settings.pop("train.stream.poll_seconds")
    fit(load_config(overrides=list(settings.items())))
    arrive(tmp_path / "in", "part-000.tsv", CRITEO_ROWS[:500])
    with pytest.raises(ConfigError, match="holds checkpoints of a run that did not stream"):
        stream(run, tmp_path / "in")


def test_no_file_arriving_is_an_error_not_an_empty_model(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(DataError, match="no data file arrived"):
        stream(tmp_path / "run", tmp_path / "in")


def _wait_for_checkpoint(run: Path, process: subprocess.Popen[bytes], at_least: int) -> None:
    deadline = time.monotonic() + 120
    while (latest := latest_checkpoint(run)) is None or checkpoint_step(latest) < at_least:
        if process.poll() is not None:
            pytest.fail(f"training exited early: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)


def test_sigterm_stops_after_a_final_checkpoint(tmp_path: Path) -> None:
    incoming, run = tmp_path / "in", tmp_path / "run"
    _parts(incoming, [1000])
    process = subprocess.Popen(stream_command(run, incoming), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_checkpoint(run, process, 8)  # caught up: checkpointed, waiting for more files
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err.decode()[-2000:]
    assert "stream: 1 file(s) trained, the last part-000.tsv" in out.decode()
    assert json.loads((run / "metrics.json").read_text())["model_step"] == 8


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_matches_uninterrupted(tmp_path: Path) -> None:
    sizes = [1500, 1500, 1500, 1500]
    _parts(tmp_path / "straight-in", sizes)
    straight = stream(tmp_path / "straight", tmp_path / "straight-in")
    incoming, run = tmp_path / "in", tmp_path / "run"
    _parts(incoming, sizes)
    process = subprocess.Popen(stream_command(run, incoming, "--checkpoint-every", "5"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_checkpoint(run, process, 10)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    killed_at = latest_checkpoint(run)
    assert process.returncode == -signal.SIGKILL and killed_at is not None and checkpoint_step(killed_at) < 48
    restarted = stream(run, incoming)
    assert restarted.metrics["steps"] == straight.metrics["steps"] == 48
    assert_bit_identical(checkpoint_weights(straight.checkpoint), checkpoint_weights(restarted.checkpoint))
