"""Reading interaction logs and side-feature files: every format, and errors that name the place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from terarec.data import DataConfig, InteractionsConfig, hash_string, read_interactions, read_side_features
from terarec.errors import ConfigError, DataError
from tests.helpers import SHARED_DATA

ML = SHARED_DATA / "movielens_100k"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _texts(array: pa.Array) -> list[str]:
    return array.to_pylist()


def test_recbole_atomic_file_with_typed_header() -> None:
    log = read_interactions([ML / "ml-100k.inter"], DataConfig())
    assert log.num_events == 100_000
    assert _texts(log.users[:2]) == ["196", "186"] and _texts(log.items[:2]) == ["242", "302"]
    assert log.times is not None and log.times[0] == 881250949.0
    assert log.ratings is not None and log.ratings[:2].tolist() == [3.0, 3.0]


@pytest.mark.parametrize("separator", ["\t", " "])
def test_headerless_txt_files_name_their_columns(tmp_path: Path, separator: str) -> None:
    path = _write(tmp_path / "seq.txt", separator.join(["1", "10"]) + "\n" + separator.join(["1", "11"]) + "\n")
    log = read_interactions([path], DataConfig())
    assert _texts(log.users) == ["1", "1"] and _texts(log.items) == ["10", "11"]
    assert log.times is None and log.ratings is None
    weighted = _write(tmp_path / "weighted.txt", "7\t3\t993\n8\t4\t12\n")
    assert read_interactions([weighted], DataConfig()).ratings.tolist() == [993.0, 12.0]


def test_csv_and_parquet_with_named_columns(tmp_path: Path) -> None:
    settings = InteractionsConfig(user_col="uid", item_col="sku", time_col="ts", rating_col="stars")
    csv = _write(tmp_path / "log.csv", "uid,sku,ts,stars,extra\nu1,a,5,4.5,x\nu2,b,3,1,y\n")
    log = read_interactions([csv], DataConfig(interactions=settings))
    assert _texts(log.items) == ["a", "b"] and log.times.tolist() == [5.0, 3.0] and log.ratings.tolist() == [4.5, 1.0]
    table = pa.table({"uid": [1, 2], "sku": ["a", "b"], "ts": [5, 3], "stars": [4.5, 1.0]})
    pq.write_table(table, tmp_path / "log.parquet")
    parquet = read_interactions([tmp_path / "log.parquet"], DataConfig(interactions=settings))
    assert _texts(parquet.users) == ["1", "2"] and parquet.times.tolist() == [5.0, 3.0]


def test_files_are_read_in_order(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.txt", "1 1\n")
    second = _write(tmp_path / "b.txt", "2 2\n")
    assert _texts(read_interactions([first, second], DataConfig()).users) == ["1", "2"]


def test_a_missing_column_names_the_key_the_file_and_its_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "user,item\nu,i\n")
    with pytest.raises(ConfigError, match=r"data.interactions.user_col='user_id': .*log.csv has no such column \(columns: user, item\)"):
        read_interactions([path], DataConfig())
    with pytest.raises(ConfigError, match="data.interactions.time_col='when'"):
        read_interactions([path], DataConfig(interactions=InteractionsConfig(user_col="user", item_col="item", time_col="when")))


def test_bad_values_are_reported_by_file_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t100\n1\t3\tsoon\n")
    with pytest.raises(DataError, match=r"log.inter:3:3: column 'timestamp' must hold a number, got 'soon'"):
        read_interactions([path], DataConfig())
    short = _write(tmp_path / "short.inter", "user_id:token\titem_id:token\n1\t2\n1\n")
    with pytest.raises(DataError, match=r"short.inter:3: expected 2 fields, got 1"):
        read_interactions([short], DataConfig())
    empty_item = _write(tmp_path / "empty.inter", "user_id:token\titem_id:token\n1\t2\n1\t\n")
    with pytest.raises(DataError, match=r"empty.inter:3:2: column 'item_id' is empty"):
        read_interactions([empty_item], DataConfig())
    with pytest.raises(DataError, match="holds no events"):
        read_interactions([_write(tmp_path / "none.inter", "user_id:token\titem_id:token\n")], DataConfig())
    with pytest.raises(DataError, match=r"odd.inter:1: column 'x:vector' has type 'vector'"):
        read_interactions([_write(tmp_path / "odd.inter", "user_id:token\titem_id:token\tx:vector\n1\t2\t3\n")], DataConfig())


def test_side_features_become_ids_and_bags() -> None:
    side = read_side_features(str(ML / "ml-100k.item"), "item_id", DataConfig(), {"item_id"})
    assert list(side.columns) == ["movie_title", "release_year", "class"]
    assert _texts(side.keys[:1]) == ["1"]
    genres = side.columns["class"]
    first = genres.values[genres.offsets[0] : genres.offsets[1]]
    assert first.tolist() == [hash_string(g) for g in ("Animation", "Children's", "Comedy")]
    assert np.array_equal(np.diff(side.columns["release_year"].offsets), np.ones(len(side.keys)))


def test_side_feature_files_are_checked(tmp_path: Path) -> None:
    repeated = _write(tmp_path / "u.user", "user_id:token\tage:token\n1\t20\n2\t30\n1\t40\n")
    with pytest.raises(DataError, match=r"u.user:4: user_id '1' appears again \(first on line 2\)"):
        read_side_features(str(repeated), "user_id", DataConfig(), set())
    floats = _write(tmp_path / "f.user", "user_id:token\theight:float\n1\t1.8\n")
    with pytest.raises(DataError, match=r"f.user:1:2: column 'height' is a float"):
        read_side_features(str(floats), "user_id", DataConfig(), set())
    assert read_side_features(str(floats), "user_id", DataConfig(ignore=("height",)), set()).columns == {}
    with pytest.raises(ConfigError, match="side feature 'history' clashes"):
        read_side_features(str(_write(tmp_path / "h.user", "user_id\thistory\n1\tx\n")), "user_id", DataConfig(), {"history"})
    with pytest.raises(DataError, match="no such file"):
        read_side_features(str(tmp_path / "absent.user"), "user_id", DataConfig(), set())
