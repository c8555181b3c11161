"""Records (a request's feature values) become the same IDs and dense inputs as a file's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terarec.data import DataConfig, MISSING_ID, RecordError, Schema, hash_string, load_dataset, read_features, records_to_data
from terarec.data.types import DataFormat, DenseTransform

SCHEMA = Schema("label", ("price", "count"), ("user", "tags"))


def test_values_hash_as_their_text_and_missing_ones_as_the_empty_string() -> None:
    data = records_to_data([{"user": 123, "tags": ["a", None, 7]}, {"user": "123"}, {"user": None, "tags": []}], SCHEMA, DataConfig())
    users, tags = data.sparse["user"], data.sparse["tags"]
    assert users.values.tolist() == [hash_string("123")] * 2 + [MISSING_ID]
    assert tags.offsets.tolist() == [0, 3, 4, 4]
    assert tags.values.tolist() == [hash_string("a"), MISSING_ID, hash_string("7"), MISSING_ID]
    assert data.labels.tolist() == [0.0, 0.0, 0.0]


def test_empty_when_missing_gives_an_empty_bag() -> None:
    data = records_to_data([{"user": 1}], SCHEMA, DataConfig(), empty_when_missing=("tags",))
    assert data.sparse["tags"].offsets.tolist() == [0, 0]


def test_dense_values_follow_the_transform() -> None:
    records = [{"price": 9, "count": -3.5}, {}]
    logged = records_to_data(records, SCHEMA, DataConfig())
    np.testing.assert_allclose(logged.dense, [[np.log(10), -np.log(4.5)], [0, 0]], rtol=1e-6)
    raw = records_to_data(records, SCHEMA, DataConfig(dense_transform=DenseTransform.NONE))
    assert raw.dense.tolist() == [[9.0, -3.5], [0.0, 0.0]]


def test_records_read_like_the_csv_they_came_from(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("label,price,user,city\n1,3,42,paris\n0,,7,\n1,2.5,x,rome\n")
    config = DataConfig(format=DataFormat.CSV, label="label", dense_features=("price",), crosses=(("user", "city"),))
    from_file = load_dataset(str(path), config)
    records = [{"price": 3, "user": 42, "city": "paris"}, {"price": None, "user": "7", "city": ""}, {"price": 2.5, "user": "x", "city": "rome"}]
    assert read_features(from_file.schema, config) == ("price", "user", "city")
    served = records_to_data(records, from_file.schema, config)
    assert served.schema.sparse_features == from_file.schema.sparse_features
    np.testing.assert_array_equal(served.dense, from_file.dense)
    for name in from_file.schema.sparse_features:
        np.testing.assert_array_equal(served.sparse[name].values, from_file.sparse[name].values, err_msg=name)
        np.testing.assert_array_equal(served.sparse[name].offsets, from_file.sparse[name].offsets, err_msg=name)


@pytest.mark.parametrize(
    ("record", "feature", "message"),
    [
        ({"colour": 1}, "colour", "unknown feature 'colour'"),
        ({"label": 1}, "label", "unknown feature 'label'"),
        ({"price": "cheap"}, "price", "expected a finite number"),
        ({"price": True}, "price", "expected a finite number"),
        ({"price": float("nan")}, "price", "expected a finite number"),
        ({"user": True}, "user", "expected a categorical value"),
        ({"tags": [{"a": 1}]}, "tags", "expected a categorical value"),
        ({"user": float("inf")}, "user", "expected a finite number"),
    ],
)
def test_bad_values_name_the_record_and_the_feature(record: dict, feature: str, message: str) -> None:
    with pytest.raises(RecordError, match=message) as caught:
        records_to_data([{}, record], SCHEMA, DataConfig())
    assert caught.value.row == 1 and caught.value.feature == feature


def test_the_fast_path_reads_what_the_value_by_value_path_reads() -> None:
    uniform = [{"user": 5, "tags": "a", "price": 2}, {"user": 6, "tags": None, "price": 1.5}]
    mixed = [{"user": 5, "tags": "a", "price": 2}, {"user": "6", "tags": None, "price": 1.5}]  # str beside int: one by one
    one, other = records_to_data(uniform, SCHEMA, DataConfig()), records_to_data(mixed, SCHEMA, DataConfig())
    assert one.sparse["user"].values.tolist() == other.sparse["user"].values.tolist() == [hash_string("5"), hash_string("6")]
    assert one.dense.tolist() == other.dense.tolist()
    floats = records_to_data([{"user": 1.0}, {"user": 2.5}], SCHEMA, DataConfig())
    assert floats.sparse["user"].values.tolist() == [hash_string("1"), hash_string("2.5")]
    with pytest.raises(RecordError, match="expected a finite number") as caught:
        records_to_data([{"price": 1.0}, {"price": True}], SCHEMA, DataConfig())
    assert caught.value.row == 1
    with pytest.raises(RecordError, match="expected a categorical value"):
        records_to_data([{"user": 1.0}, {"user": False}], SCHEMA, DataConfig())


def test_a_crossed_feature_takes_one_value() -> None:
    config = DataConfig(crosses=(("user", "tags"),))
    assert records_to_data([{"user": 1, "tags": "a"}], SCHEMA_CROSSED, config).sparse["user_x_tags"].values.shape == (1,)
    for value in ([], ["a", "b"]):
        with pytest.raises(RecordError, match="crossed with others") as caught:
            records_to_data([{"user": 1, "tags": "a"}, {"user": 2, "tags": value}], SCHEMA_CROSSED, config)
        assert caught.value.row == 1 and caught.value.feature == "tags"


SCHEMA_CROSSED = Schema("label", ("price", "count"), ("user", "tags", "user_x_tags"))
