"""terarec export and the served model: scores equal terarec eval's, every table kind exports,
retrieval agrees with scoring, and a damaged model directory is refused naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from terarec.data import RecordError
from terarec.errors import DataError
from terarec.serve import ServedModel, ServeSettings, create_app, export_run
from terarec.train.evaluate import predict_checkpoint
from tests.serve.conftest import CRITEO_EVAL, CRITEO_RUN, criteo_records, train_and_export


def _assert_scores_match_eval(run: Path, model_dir: Path, rows: int = 300, cache_bytes: int | None = None) -> ServedModel:
    _, expected, _ = predict_checkpoint(run)
    served = ServedModel(model_dir, cache_bytes)
    records = criteo_records(CRITEO_EVAL, rows)
    scores = np.array(served.score({}, records))
    np.testing.assert_allclose(scores, expected[:rows], rtol=0, atol=2e-6)
    return served


def test_served_scores_equal_eval_scores(criteo_model: tuple[Path, Path]) -> None:
    run, model_dir = criteo_model
    _assert_scores_match_eval(run, model_dir)
    description = json.loads((model_dir / "model.json").read_text())
    assert description["task"] == "click" and description["version"].startswith("step-40-")
    assert "I1_bucket" not in description["features"] and "C1_x_C2" not in description["features"]
    assert not any("state" in p.name for p in model_dir.rglob("*"))  # no optimizer state


@pytest.mark.parametrize("kind", ["dynamic", "bf16", pytest.param("tiered", marks=pytest.mark.slow),
                                  pytest.param("deep_hash", marks=pytest.mark.slow)])
def test_every_table_kind_exports_and_scores_as_eval(tmp_path: Path, kind: str) -> None:
    overrides = {
        "dynamic": {"embedding.dynamic.min_count": 2},
        "tiered": {"embedding.tiered.cache_bytes": 200_000, "train.eval_batch_size": 1024, "model.type": "dlrm"},
        "bf16": {"embedding.weights_dtype": "bf16"},
        "deep_hash": {"embedding.kind": "dhe", "embedding.deep_hash.num_hashes": 64, "embedding.deep_hash.hidden_dims": "32"},
    }[kind]
    run, model_dir = train_and_export(tmp_path, kind, {**CRITEO_RUN, **overrides})
    served = _assert_scores_match_eval(run, model_dir, rows=200)
    if kind == "tiered":  # rows read through caches of the trained size, then through tiny ones
        counters = served.tables.counters()
        assert set(counters) == {f"C{i}/{c}" for i in range(1, 27) for c in ("cache_hits", "cache_misses")}
        assert sum(counters.values()) > 0
        budget = 100_000
        tiny = _assert_scores_match_eval(run, model_dir, rows=200, cache_bytes=budget)
        caches = [table.cache for table in tiny.tables.tables.values() if table.cache is not None]
        assert len(caches) == 26 and sum(cache.nbytes for cache in caches) <= budget + 26 * caches[0][0].nbytes
        records = criteo_records(CRITEO_EVAL, 200)
        for model in (served, tiny):  # the same 200 records again, 20 per request
            for start in range(0, 200, 20):
                model.score({}, records[start : start + 20])
        big, small = served.tables.counters(), tiny.tables.counters()
        assert sum(small.values()) == sum(big.values())  # the same rows looked up, through one cache or the other
        hits = {name: sum(v for k, v in c.items() if k.endswith("hits")) for name, c in (("big", big), ("small", small))}
        assert hits["big"] > hits["small"] > 0
        with TestClient(create_app(ServeSettings(str(model_dir)))) as client:
            assert client.post("/score", json={"candidates": criteo_records(CRITEO_EVAL, 20)}).status_code == 200
            metrics = client.get("/metrics").text
        assert 'terarec_table_cache_hit_rate{table="C1"}' in metrics and 'terarec_table_cache_misses_total{table="C26"}' in metrics


def test_context_and_candidates_merge_and_scores_keep_candidate_order(criteo_model: tuple[Path, Path]) -> None:
    served = ServedModel(criteo_model[1])
    records = criteo_records(CRITEO_EVAL, 4)
    context = {k: v for k, v in records[0].items() if not k.startswith("C2")}
    candidates = [{k: v for k, v in r.items() if k.startswith("C2")} for r in records]
    merged = served.score(context, candidates)
    assert merged[0] == pytest.approx(served.score({}, records[:1])[0], abs=1e-7)
    assert served.score(context, candidates[::-1]) == pytest.approx(merged[::-1], abs=1e-7)
    assert served.score({}, []) == []


def test_bad_records_name_the_feature(criteo_model: tuple[Path, Path]) -> None:
    served = ServedModel(criteo_model[1])
    with pytest.raises(RecordError, match="unknown feature 'colour'") as caught:
        served.score({}, [{"C1": "a"}, {"colour": "red"}])
    assert caught.value.row == 1 and caught.value.feature == "colour"
    with pytest.raises(RecordError, match="expected a finite number"):
        served.score({"I1": "many"}, [{}])
    with pytest.raises(RecordError, match="expected a categorical value"):
        served.score({}, [{"C3": True}])
    with pytest.raises(LookupError, match="no item index"):
        served.retrieve({}, 10)


def test_retrieval_agrees_with_scoring(two_tower_model: tuple[Path, Path]) -> None:
    served = ServedModel(two_tower_model[1])
    assert served.task == "retrieval" and served.index is not None and len(served.index) == 1678
    context = {"user_id": "196", "history": ["242", "302", "377"]}
    found = served.retrieve(context, 20)
    assert len(found.items) == 20 == len(set(found.items))
    assert found.scores == sorted(found.scores, reverse=True)
    temperature = served.config.model.two_tower.temperature
    logits = served.score(context, [{"item_id": item} for item in found.items])
    np.testing.assert_allclose(np.array(logits) * temperature, found.scores, atol=1e-4)
    with pytest.raises(RecordError, match="unknown feature 'rating'"):
        served.retrieve({"rating": 5}, 5)


def test_a_damaged_model_directory_is_refused_naming_the_file(criteo_model: tuple[Path, Path], tmp_path: Path) -> None:
    source = criteo_model[1]
    flipped = shutil.copytree(source, tmp_path / "flipped")
    weights = next(flipped.glob("tables/*/weights.npy"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{weights.name}: model directory file is corrupt \(CRC-32 mismatch\)"):
        ServedModel(flipped)
    missing = shutil.copytree(source, tmp_path / "missing")
    (missing / "network.safetensors").unlink()
    with pytest.raises(DataError, match="network.safetensors: missing"):
        ServedModel(missing)
    extra = shutil.copytree(source, tmp_path / "extra")
    (extra / "tables" / "stray.npy").write_bytes(b"x")
    with pytest.raises(DataError, match="stray.npy: not in the manifest"):
        ServedModel(extra)
    truncated = shutil.copytree(source, tmp_path / "truncated")
    (truncated / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="manifest.json: missing or malformed"):
        ServedModel(truncated)


def test_export_never_overwrites_and_leaves_nothing_behind_on_failure(criteo_model: tuple[Path, Path], tmp_path: Path) -> None:
    run, model_dir = criteo_model
    with pytest.raises(DataError, match="already exists"):
        export_run(run, model_dir)
    with pytest.raises(DataError):
        export_run(tmp_path / "no-run", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))
