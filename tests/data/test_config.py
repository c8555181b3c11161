import pytest

from terarec.data import BadRowPolicy, DataConfig, SyntheticConfig
from terarec.errors import ConfigError


@pytest.mark.parametrize("kwargs, key", [
    ({"eval_fraction": 1.5}, "data.eval_fraction"),
    ({"eval_fraction": 0.0}, "data.eval_fraction"),
    ({"delimiter": ";;"}, "data.delimiter"),
    ({"on_bad_row": "skip"}, "data.on_bad_row"),
    ({"dense_features": ("a", "a")}, "data.dense_features"),
    ({"dense_features": ("a",), "ignore": ("a",)}, "data.ignore"),
    ({"label": ""}, "data.label"),
])
def test_data_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DataConfig(**kwargs)


@pytest.mark.parametrize("kwargs, key", [
    ({"num_examples": 0}, "num_examples"),
    ({"zipf_exponent": -1.0}, "zipf_exponent"),
    ({"num_sparse": 2, "bag_sizes": (1,)}, "bag_sizes"),
    ({"num_sparse": 2, "bag_sizes": (1, 0)}, "bag_sizes"),
])
def test_synthetic_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"data.synthetic.{key}"):
        SyntheticConfig(**kwargs)


def test_defaults_and_lists_become_tuples():
    cfg = DataConfig(dense_features=["x"], synthetic=SyntheticConfig(num_sparse=2, bag_sizes=[1, 3]))  # type: ignore[arg-type]
    assert cfg.dense_features == ("x",) and cfg.synthetic.bag_sizes == (1, 3)
    assert DataConfig().on_bad_row is BadRowPolicy.ERROR
