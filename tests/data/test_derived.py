"""Derived sparse features: bucketized dense features and crosses, in every split and format."""

from __future__ import annotations

import numpy as np
import pytest

from terarec.data import DataConfig, load_splits
from terarec.data.derived import derive_features
from terarec.errors import ConfigError
from terarec.train import load_config
from tests.helpers import CRITEO

CRITEO_CONFIG = {"path": str(CRITEO / "train.tsv"), "eval_path": str(CRITEO / "dev.tsv")}


def test_buckets_and_crosses_follow_their_definitions_in_every_split() -> None:
    config = DataConfig(**CRITEO_CONFIG, bucketize=("I1", "I5"), crosses=(("C1", "C2"),), bucket_width=0.5)
    plain = load_splits(DataConfig(**CRITEO_CONFIG))
    derived = load_splits(config)
    for name in ("train", "val", "eval"):
        before, after = getattr(plain, name), getattr(derived, name)
        assert after.schema.sparse_features == (*before.schema.sparse_features, "I1_bucket", "I5_bucket", "C1_x_C2")
        i5 = before.dense[:, before.schema.dense_features.index("I5")].astype(np.float64)
        assert after.sparse["I5_bucket"].values.tolist() == np.floor(i5 / 0.5).astype(np.int64).tolist()
        # a cross's ID depends on exactly the pair of IDs: equal pairs, equal IDs; else distinct
        pairs = list(zip(before.sparse["C1"].values.tolist(), before.sparse["C2"].values.tolist()))
        crossed = after.sparse["C1_x_C2"].values.tolist()
        assert len(set(pairs)) == len(set(crossed)) == len(set(zip(pairs, crossed)))
    assert derived.stats.distinct_ids["C1_x_C2"] > derived.stats.distinct_ids["C1"]


def test_a_cross_is_not_symmetric_and_needs_one_id_per_row() -> None:
    data = load_splits(DataConfig(**CRITEO_CONFIG)).eval
    ab = derive_features(data, DataConfig(crosses=(("C1", "C2"),))).sparse["C1_x_C2"].values
    ba = derive_features(data, DataConfig(crosses=(("C2", "C1"),))).sparse["C2_x_C1"].values
    assert not np.array_equal(ab, ba)
    data.sparse["C3"] = type(data.sparse["C3"])(data.sparse["C3"].values[:-1], np.minimum(data.sparse["C3"].offsets, data.num_rows - 1))
    with pytest.raises(ConfigError, match=r"data.crosses\[0\]: 'C3' holds bags of several IDs"):
        derive_features(data, DataConfig(crosses=(("C3", "C4"),)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([("data.bucketize", "C1")], r"data.bucketize\[0\]: 'C1' is not a dense feature"),
        ([("data.crosses", "[[C1, I1]]")], r"data.crosses\[0\]: 'I1' is not a sparse feature"),
        ([("data.crosses", "[[C1]]")], r"data.crosses\[0\] must be a list of two or more"),
        ([("data.bucket_width", "0")], "data.bucket_width must be a number > 0"),
        ([("data.crosses", "[[C1, C2]")], "data.crosses: not a valid list"),
    ],
)
def test_bad_derived_features_name_the_key(overrides: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config = load_config(overrides=[("data.path", CRITEO_CONFIG["path"]), *overrides])
        load_splits(config.data)
