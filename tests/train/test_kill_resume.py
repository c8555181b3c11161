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
from tests.helpers import (
    TINY_CACHE,
    assert_bit_identical,
    tiny_config,
    tiny_overrides,
    trained_numbers,
)

STEPS = 400
EVERY = 10


# Dynamic + tiered tables: the kill also lands in ID admission, evictions, write-backs and
# incremental snapshots, all of which must resume exactly.
VARIANTS = {
    "fixed": {"train__checkpoint_every": EVERY},
    "dynamic_tiered": {
        "train__checkpoint_every": 4 * EVERY,  # each checkpoint fsyncs ~200 files: keep the test short
        "embedding__dynamic__min_count": 2,
        "embedding__dynamic__ttl_steps": 50,
        "embedding__tiered__cache_bytes": TINY_CACHE,
        "embedding__tiered__full_snapshot_every": 3,
        "train__eval_batch_size": 256,
    },
}


def _command(out: Path, resume: bool, extra: dict[str, object]) -> list[str]:
    overrides = tiny_overrides(out, train__steps=STEPS, **extra)
    command = [sys.executable, "-m", "terarec", "train"]
    for key, value in overrides:
        command += ["--set", f"{key}={value}"]
    return command + (["--resume"] if resume else [])


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kill_9_mid_run_then_resume_matches_uninterrupted_run(tmp_path: Path, variant: str) -> None:
    extra = VARIANTS[variant]
    out = tmp_path / "killed"
    process = subprocess.Popen(_command(out, resume=False, extra=extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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

    resumed = subprocess.run(_command(out, resume=True, extra=extra), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = fit(tiny_config(tmp_path / "straight", train__steps=STEPS, **extra))
    assert_bit_identical(
        trained_numbers(straight.checkpoint, tmp_path / "s1"), trained_numbers(latest_checkpoint(out), tmp_path / "s2")
    )
