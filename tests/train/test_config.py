from pathlib import Path

import pytest

from terarec.data import BadRowPolicy, DataFormat
from terarec.embedding import DataType, OptimizerType
from terarec.errors import ConfigError
from terarec.models import ModelType
from terarec.train import Config, load_config
from terarec.train.builders import build_table_configs


def test_defaults_train_on_synthetic_data() -> None:
    config = Config()
    assert config.data.path is None and config.model.type is ModelType.DCNV2
    # batch size and epochs are chosen from the training rows (terarec.train.schedule)
    assert config.train.batch_size is None and config.train.epochs is None and config.embedding.embedding_dim is None


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "data:\n  path: clicks.csv\n  format: csv\n  label: clicked\n  dense_features: [age, price]\n"
        "embedding:\n  optimizer: {type: adam, learning_rate: 0.01}\n"
        "train:\n  batch_size: 128\n"
    )
    config = load_config(path, [("train.batch_size", "512"), ("data.on_bad_row", "skip")])
    assert config.data.format is DataFormat.CSV
    assert config.data.dense_features == ("age", "price")
    assert config.data.on_bad_row is BadRowPolicy.SKIP
    assert config.embedding.optimizer.type is OptimizerType.ADAM
    assert config.train.batch_size == 512


def test_table_storage_dtypes_reach_every_table(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("embedding:\n  tables: [{name: shared, feature_names: [C1, C2], state_dtype: bf16, weights_dtype: fp32}]\n")
    config = load_config(path, [("embedding.weights_dtype", "bf16")])
    tables = {t.name: t for t in build_table_configs(config.embedding, ["C1", "C2", "C3"], {"C1": 10, "C2": 10, "C3": 10})}
    assert (tables["shared"].weights_dtype, tables["shared"].state_dtype) == (DataType.FP32, DataType.BF16)
    assert (tables["C3"].weights_dtype, tables["C3"].state_dtype) == (DataType.BF16, DataType.FP32)
    with pytest.raises(ConfigError, match="embedding.state_dtype: expected one of fp32, bf16"):
        load_config(overrides=[("embedding.state_dtype", "fp8")])
    with pytest.raises(ConfigError, match="embedding.tiered keeps weights and state in one dtype"):
        load_config(overrides=[("embedding.tiered.cache_bytes", "1e6"), ("embedding.weights_dtype", "bf16")])
    path.write_text("embedding:\n  tables: [{name: t, feature_names: [C1], tiered: {cache_bytes: 1000}, state_dtype: bf16}]\n")
    with pytest.raises(ConfigError, match=r"embedding.tables\[0\] \('t'\) is tiered"):
        build_table_configs(load_config(path).embedding, ["C1"], {"C1": 10})


def test_round_trip_through_plain_mapping() -> None:
    config = load_config(overrides=[("model.dlrm.top_mlp", "64,32"), ("train.steps", "7")])
    assert Config.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([("train.batch_sise", "5")], "unknown config key 'train.batch_sise'; did you mean 'batch_size'"),
        ([("trian.seed", "1")], "unknown config key 'trian'; did you mean 'train'"),
        ([("train.batch_size", "many")], "train.batch_size: expected an integer, got 'many'"),
        ([("train.batch_size", "0")], "train.batch_size must be >= 1"),
        ([("embedding.optimizer.type", "lion")], "embedding.optimizer.type: expected one of sgd, adagrad"),
        ([("embedding.optimizer.learning_rate", "-1")], "embedding.optimizer: learning_rate must be a positive"),
        ([("model.type", "gpt")], "model.type: expected one of lr, dnn, dlrm, dcnv2"),
    ],
)
def test_bad_keys_and_values_name_the_dotted_key(overrides: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(overrides=overrides)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(bad)
