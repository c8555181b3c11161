"""The HTTP service: answers, 4xx for every kind of bad request (never a 5xx), metrics, the
bearer token, and a real uvicorn process on a Unix socket with one and two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient

from terarec.serve import ServedModel, ServeSettings, create_app
from tests.serve.conftest import CRITEO_EVAL, criteo_records


@pytest.fixture(scope="module")
def criteo_client(criteo_model: tuple[Path, Path]) -> TestClient:
    settings = ServeSettings(str(criteo_model[1]), max_body_bytes=200_000, max_candidates=50, token="s3cret")
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = "Bearer s3cret"
        yield client


@pytest.fixture(scope="module")
def retrieval_client(two_tower_model: tuple[Path, Path]) -> TestClient:
    with TestClient(create_app(ServeSettings(str(two_tower_model[1]), max_k=200))) as client:
        yield client


def test_score_answers_in_candidate_order(criteo_client: TestClient, criteo_model: tuple[Path, Path]) -> None:
    records = criteo_records(CRITEO_EVAL, 10)
    response = criteo_client.post("/score", json={"context": {}, "candidates": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scores"] == pytest.approx(ServedModel(criteo_model[1]).score({}, records), abs=1e-7)
    assert body["version"].startswith("step-40-")


@pytest.mark.parametrize(
    ("payload", "status", "loc"),
    [
        ({"candidates": [{"colour": "red"}]}, 422, ["body", "candidates", 0, "colour"]),
        ({"context": {"colour": "red"}, "candidates": [{}]}, 422, ["body", "context", "colour"]),
        ({"context": {"I1": "many"}, "candidates": [{}]}, 422, ["body", "context", "I1"]),
        ({"candidates": [{"C1": True}]}, 422, ["body", "candidates", 0, "C1", "str"]),
        ({"candidates": [{"C1": {"nested": 1}}]}, 422, ["body", "candidates", 0, "C1", "str"]),
        ({"candidates": []}, 422, ["body", "candidates"]),
        ({"context": {}}, 422, ["body", "candidates"]),
        ({"candidates": [{}], "extra": 1}, 422, ["body", "extra"]),
        ({"candidates": [{}] * 51}, 422, ["body", "candidates"]),
        ({"candidates": [{"C1": "x" * 300_000}]}, 413, ["body"]),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(criteo_client: TestClient, payload: dict, status: int, loc: list) -> None:
    response = criteo_client.post("/score", json=payload)
    assert response.status_code == status, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"][: len(loc)] == loc, detail


def test_malformed_json_and_wrong_methods_are_4xx(criteo_client: TestClient) -> None:
    response = criteo_client.post("/score", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert criteo_client.get("/score").status_code == 405
    assert criteo_client.post("/nothing", json={}).status_code == 404
    assert criteo_client.post("/retrieve", json={"k": 5}).status_code == 404  # a click model has no item index
    assert "no item index" in criteo_client.post("/retrieve", json={"k": 5}).json()["detail"][0]["msg"]


def test_the_bearer_token_is_required_where_set(criteo_client: TestClient) -> None:
    payload = {"candidates": [{}]}
    assert criteo_client.post("/score", json=payload, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert criteo_client.post("/score", json=payload, headers={"Authorization": ""}).status_code == 401
    assert criteo_client.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_health_readiness_docs_and_metrics(criteo_client: TestClient) -> None:
    assert criteo_client.get("/healthz").json() == {"status": "ok"}
    ready = criteo_client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["task"] == "click"
    assert criteo_client.get("/docs").status_code == 200
    schema = criteo_client.get("/openapi.json").json()
    assert {"/score", "/retrieve"} <= set(schema["paths"])
    criteo_client.post("/score", json={"candidates": [{"colour": 1}]})
    text = criteo_client.get("/metrics").text
    assert 'terarec_requests_total{endpoint="/score",status="422"}' in text
    assert 'terarec_requests_total{endpoint="/score",status="200"}' in text
    assert f'terarec_model_info{{task="click",version="{ready["version"]}"}} 1.0' in text
    assert "terarec_request_seconds_bucket" in text


def test_retrieve(retrieval_client: TestClient) -> None:
    response = retrieval_client.post("/retrieve", json={"context": {"user_id": "196", "history": ["242", 302]}, "k": 100})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["items"]) == 100 == len(set(body["items"])) and body["scores"] == sorted(body["scores"], reverse=True)
    assert retrieval_client.post("/retrieve", json={"k": 201}).json()["detail"][0]["loc"] == ["body", "k"]
    assert retrieval_client.post("/retrieve", json={"k": 0}).status_code == 422
    assert retrieval_client.post("/retrieve", json={"k": "ten"}).status_code == 422
    assert retrieval_client.post("/retrieve", json={"context": {"rating": 1}}).json()["detail"][0]["loc"] == ["body", "context", "rating"]
    scored = retrieval_client.post("/score", json={"context": {"user_id": "196"}, "candidates": [{"item_id": body["items"][0]}]})
    assert scored.status_code == 200


def _serve(model_dir: Path, socket: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "terarec", "serve", str(model_dir), "--uds", str(socket), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_until_healthy(client: httpx2.Client, process: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"terarec serve exited with {process.returncode}: {process.stdout.read()}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("terarec serve did not become healthy in time")


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_terarec_serve_answers_over_a_socket(criteo_model: tuple[Path, Path], tmp_path: Path, workers: int) -> None:
    socket = tmp_path / "serve.sock"
    process = _serve(criteo_model[1], socket, "--workers", str(workers))
    try:
        with httpx2.Client(transport=httpx2.HTTPTransport(uds=str(socket)), base_url="http://terarec", timeout=30) as client:
            _wait_until_healthy(client, process)
            records = criteo_records(CRITEO_EVAL, 100)
            for _ in range(2 * workers):  # both workers answer
                response = client.post("/score", json={"candidates": records})
                assert response.status_code == 200 and len(response.json()["scores"]) == 100
            assert client.post("/score", json={"candidates": [{"nope": 1}]}).status_code == 422
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_terarec_serve_refuses_a_corrupt_model_before_listening(criteo_model: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    broken = shutil.copytree(criteo_model[1], tmp_path / "broken")
    (broken / "model.json").write_text(json.dumps({"format_version": 1}))
    process = _serve(broken, tmp_path / "s.sock")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2 and "model.json" in output and "the manifest says" in output, output
    assert not (tmp_path / "s.sock").exists()
