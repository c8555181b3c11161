"""Deep Hash tables in training: beside row tables or alone, with every layout, resumable,
evaluated from their checkpoint, costed by the planner, and refused where they cannot apply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from terarec.errors import ConfigError
from terarec.train import fit, load_config
from terarec.sharding import DenseWorkload
from terarec.train.builders import build_deep_hash_tables, build_model
from terarec.train.placement import dense_workload
from tests.helpers import CRITEO, assert_bit_identical, checkpoint_weights, tiny_config

# Small decoders keep the test quick; the defaults are measured in bench/quality.py --dhe.
SMALL_DHE = {"embedding.deep_hash.num_hashes": 64, "embedding.deep_hash.hidden_dims": "[32]"}
ALL_DHE = {"embedding.kind": "dhe", **SMALL_DHE}


def _dhe_config(out: Path, keys: dict[str, object], **extra: object) -> object:
    return tiny_config(out, **{k.replace(".", "__"): v for k, v in keys.items()}, **extra)


def test_all_deep_hash_tables_train_deterministically_and_resume_exactly(tmp_path: Path) -> None:
    straight = fit(_dhe_config(tmp_path / "a", ALL_DHE, train__steps=40))
    again = fit(_dhe_config(tmp_path / "b", ALL_DHE, train__steps=40))
    weights = checkpoint_weights(straight.checkpoint)
    assert_bit_identical(weights, checkpoint_weights(again.checkpoint))
    assert straight.metrics["auc"] == again.metrics["auc"] > 0.55
    assert straight.metrics["table_ram_bytes"] == 0 and not list((straight.checkpoint / "tables").glob("*/"))
    assert any(name.startswith("model/deep_hash.tables.C1.decoder") for name in weights)

    fit(_dhe_config(tmp_path / "resumed", ALL_DHE, train__steps=20))
    resumed = fit(_dhe_config(tmp_path / "resumed", ALL_DHE, train__steps=40, train__resume=True))
    assert_bit_identical(weights, checkpoint_weights(resumed.checkpoint))


@pytest.mark.parametrize("model", ["deepfm", "lr"])
def test_deep_hash_beside_row_tables_with_a_wide_column(tmp_path: Path, model: str) -> None:
    tables = [{"name": "hashed", "feature_names": ["C1", "C2"], "kind": "dhe"}]
    result = fit(_dhe_config(tmp_path, SMALL_DHE, embedding__tables=tables, model__type=model, train__steps=30))
    spec = json.loads((result.checkpoint / "run.json").read_text())
    assert [t["name"] for t in spec["deep_hash_tables"]] == ["hashed"]
    assert "C1" not in [t["name"] for t in spec["tables"]]
    width = 1 if model == "lr" else 9  # the wide weight, after the embedding for DeepFM
    assert spec["deep_hash_tables"][0]["embedding_dim"] == width
    assert 0.5 < result.metrics["auc"] < 1
    # terarec eval rebuilds the network from the checkpoint and scores as training did
    report = tmp_path / "eval.json"
    command = [sys.executable, "-m", "terarec", "eval", "--checkpoint", str(tmp_path), "--json", str(report)]
    subprocess.run(command, check=True, capture_output=True)
    assert json.loads(report.read_text())["auc"] == pytest.approx(result.metrics["auc"], abs=1e-9)


def test_planner_counts_the_decoders_as_dense_work() -> None:
    config = load_config(overrides=[("embedding.kind", "dhe"), *SMALL_DHE.items()])
    hashed = build_deep_hash_tables(config.embedding, ["C1", "C2"])
    model_only = DenseWorkload.of_model(build_model(config.model, 13, [], hashed))
    one_id_each = dense_workload(config, 13, [], hashed)
    three_ids_of_c2 = dense_workload(config, 13, [], hashed, {"C1": 1.0, "C2": 3.0})
    assert one_id_each.num_parameters == model_only.num_parameters + sum(t.num_parameters for t in hashed)
    assert three_ids_of_c2.num_parameters == one_id_each.num_parameters
    extra = three_ids_of_c2.flops_per_example - one_id_each.flops_per_example
    assert extra == pytest.approx(2 * hashed[1].deep_hash.flops_per_id(16))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"embedding.kind": "dhe", "embedding.tiered.cache_bytes": 10**6}, r"embedding.tiered cannot apply"),
        ({"embedding.deep_hash.num_hashes": 8}, r"embedding.deep_hash is set but embedding.kind is 'table'"),
        (
            {"embedding.tables": [{"name": "t", "feature_names": ["C1"], "kind": "dhe", "num_embeddings": 10}]},
            r"embedding.tables\[0\].num_embeddings cannot apply",
        ),
    ],
)
def test_settings_a_deep_hash_table_would_ignore_are_refused(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=list(keys.items()))


@pytest.mark.slow
def test_deep_hash_embeddings_learn_the_criteo_sample(tmp_path: Path) -> None:
    keys = {
        "data.path": str(CRITEO / "train.tsv"),
        "data.eval_path": str(CRITEO / "test.tsv"),
        "data.format": "criteo",
        "embedding.kind": "dhe",
        "train.epochs": 3,
        "train.out": str(tmp_path),
        "train.progress": False,
    }
    result = fit(load_config(overrides=list(keys.items())))
    assert result.metrics["auc"] > 0.70
