"""Hot reload: a server following a training run swaps in each newer checkpoint while requests
flow, none of them failing; a corrupt checkpoint is refused, counted, and the old model serves on."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from terarec.serve import ServeSettings, create_app, export_run
from terarec.train import fit, load_config
from terarec.train.checkpoint import latest_checkpoint
from tests.serve.conftest import CRITEO_EVAL, CRITEO_RUN, criteo_records


def _train(run: Path, steps: int, resume: bool) -> None:
    settings = {**CRITEO_RUN, "train.steps": steps, "train.checkpoint_every": 10, "train.num_threads": 2,
                "train.progress": False, "train.out": str(run), "train.resume": resume}
    fit(load_config(overrides=list(settings.items())))


def _wait_for(condition, seconds: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_new_checkpoints_are_swapped_in_without_a_failed_request(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(run, 20, resume=False)
    model_dir = tmp_path / "model"
    export_run(run, model_dir)
    records = criteo_records(CRITEO_EVAL, 50)
    settings = ServeSettings(str(model_dir), watch_run=str(run), watch_seconds=0.05)
    with TestClient(create_app(settings)) as client:
        first = client.post("/score", json={"candidates": records}).json()
        assert client.get("/readyz").json()["step"] == 20
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                response = client.post("/score", json={"candidates": records})
                statuses.append(response.status_code)
                versions.add(response.json()["version"])

        traffic = threading.Thread(target=hammer)
        traffic.start()
        try:
            _train(run, 40, resume=True)  # checkpoints at steps 30 and 40 appear while serving
            _wait_for(lambda: client.get("/readyz").json()["step"] == 40)
        finally:
            stop.set()
            traffic.join()
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        assert len(versions) >= 2  # requests were answered by the old model and by the new one
        after = client.post("/score", json={"candidates": records}).json()
        assert after["version"].startswith("step-40-") and after["scores"] != first["scores"]
        metrics = client.get("/metrics").text
        assert 'terarec_reloads_total{result="ok"}' in metrics and "terarec_model_step 40.0" in metrics
        assert 'version="' + after["version"] + '"' in metrics and 'version="' + first["version"] + '"' not in metrics

        # A newer checkpoint that is corrupt: refused, counted, the step-40 model keeps serving.
        latest = latest_checkpoint(run)
        broken = shutil.copytree(latest, run / "checkpoints" / "step-000000050")
        weights = next(broken.glob("tables/*/weights.npy"))
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        _wait_for(lambda: 'terarec_reloads_total{result="failed"} 1.0' in client.get("/metrics").text)
        still = client.post("/score", json={"candidates": records})
        assert still.status_code == 200 and still.json() == after
        assert client.get("/readyz").json()["step"] == 40
    assert not list(tmp_path.glob(".terarec-serve-*"))  # exported versions removed at shutdown
