"""The whole continuous loop: data files arrive, ``terarec train --stream`` trains on each, the
server following the run (``--watch``) swaps in each new model, and a client sees its scores
change without a failed request."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from terarec.serve import ServeSettings, create_app, export_run
from terarec.train.checkpoint import checkpoint_step, latest_checkpoint
from tests.serve.conftest import CRITEO_EVAL, criteo_records
from tests.helpers import CRITEO_ROWS, arrive, stream_command

FILE_ROWS = 1500
STEPS_PER_FILE = 12  # 1500 rows in batches of 128


def _wait_for(condition, what: str, process: subprocess.Popen[bytes], seconds: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the trainer exited while waiting for {what}: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_files_arrive_the_trainer_trains_the_server_follows_and_no_request_fails(tmp_path: Path) -> None:
    incoming, run, model_dir = tmp_path / "in", tmp_path / "run", tmp_path / "model"
    arrive(incoming, "part-000.tsv", CRITEO_ROWS[:FILE_ROWS])
    trainer = subprocess.Popen(stream_command(run, incoming), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def step_checkpointed(step: int) -> bool:
            latest = latest_checkpoint(run)
            return latest is not None and checkpoint_step(latest) >= step

        _wait_for(lambda: step_checkpointed(STEPS_PER_FILE), "the first file's checkpoint", trainer)
        export_run(run, model_dir)
        records = criteo_records(CRITEO_EVAL, 20)
        with TestClient(create_app(ServeSettings(str(model_dir), watch_run=str(run), watch_seconds=0.05))) as client:
            first = client.post("/score", json={"candidates": records}).json()
            statuses: list[int] = []
            answers: dict[str, list[float]] = {}
            stop = threading.Event()

            def traffic() -> None:
                while not stop.is_set():
                    response = client.post("/score", json={"candidates": records})
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        answers[response.json()["version"]] = response.json()["scores"]

            client_thread = threading.Thread(target=traffic)
            client_thread.start()
            try:
                for index in (1, 2):
                    arrive(incoming, f"part-{index:03d}.tsv", CRITEO_ROWS[index * FILE_ROWS : (index + 1) * FILE_ROWS])
                    served_step = (index + 1) * STEPS_PER_FILE
                    _wait_for(lambda: client.get("/readyz").json()["step"] == served_step, f"the model of step {served_step}", trainer)
            finally:
                stop.set()
                client_thread.join()
            last = client.post("/score", json={"candidates": records}).json()
        trainer.send_signal(signal.SIGTERM)
        out, err = trainer.communicate(timeout=60)
    finally:
        trainer.kill()
    assert trainer.returncode == 0, err.decode()[-2000:]
    assert "stream: 3 file(s) trained, the last part-002.tsv" in out.decode()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert len(answers) >= 2  # requests answered by successive models while they were swapped
    assert last["version"].startswith(f"step-{3 * STEPS_PER_FILE}-") and last["scores"] != first["scores"]
