"""A training process killed with SIGKILL mid-run resumes to bit-identical weights."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from terarec.train import fit, latest_checkpoint
from terarec.train.checkpoint import checkpoint_step

from tests.helpers import assert_bit_identical, checkpoint_weights, tiny_config, tiny_overrides

STEPS = 400
EVERY = 10


def _command(out: Path, resume: bool) -> list[str]:
    overrides = tiny_overrides(out, train__steps=STEPS, train__checkpoint_every=EVERY)
    command = [sys.executable, "-m", "terarec", "train"]
    for key, value in overrides:
        command += ["--set", f"{key}={value}"]
    return command + (["--resume"] if resume else [])


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    process = subprocess.Popen(_command(out, resume=False), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while latest_checkpoint(out) is None:
            if process.poll() is not None:
                pytest.fail(f"training exited early: {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 120 s")
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = latest_checkpoint(out)
    assert killed_at is not None and checkpoint_step(killed_at) < STEPS, "the kill must land mid-run"

    resumed = subprocess.run(_command(out, resume=True), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = fit(tiny_config(tmp_path / "straight", train__steps=STEPS, train__checkpoint_every=EVERY))
    assert_bit_identical(checkpoint_weights(straight.checkpoint), checkpoint_weights(latest_checkpoint(out)))
