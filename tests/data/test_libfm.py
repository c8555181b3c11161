"""The libFM reader: fields by position or by a field map, values as per-ID weights, and
errors that name file, line and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terarec.data import DataConfig, DataFormat, gather_jagged, hash_string, open_prepared, prepare, read_files
from terarec.data import libfm as libfm_module
from terarec.data.types import BadRowPolicy
from terarec.errors import ConfigError, DataError


def _read(tmp_path: Path, text: str, **config: object) -> object:
    path = tmp_path / "data.libfm"
    path.write_text(text)
    return read_files([path], DataFormat.LIBFM, DataConfig(**config))  # type: ignore[arg-type]


def _ids(*indices: int) -> list[int]:
    return [hash_string(str(i)) for i in indices]


def test_each_position_is_a_field_and_values_other_than_one_become_weights(tmp_path: Path) -> None:
    data = _read(tmp_path, "1 3:1 10:1 20:0.5\n-1 4:1 10:1 21:2\n0\t3:1  11:1 20:1\n+1 5:1 12:1.0 22:1\n")
    assert data.schema.sparse_features == ("f1", "f2", "f3") and data.schema.num_dense == 0
    assert data.labels.tolist() == [1, 0, 0, 1]
    assert data.sparse["f1"].values.tolist() == _ids(3, 4, 3, 5)
    assert data.sparse["f1"].offsets.tolist() == [0, 1, 2, 3, 4]
    assert data.sparse["f1"].weights is None and data.sparse["f2"].weights is None  # every value 1
    assert data.sparse["f3"].weights.tolist() == [0.5, 2.0, 1.0, 1.0]
    # an index's ID is that of its text, as the same integer in a CSV column
    assert data.sparse["f2"].values.tolist() == _ids(10, 10, 11, 12)


def test_a_field_map_groups_indices_into_bags_in_file_order(tmp_path: Path) -> None:
    field_map = tmp_path / "fields.txt"
    field_map.write_text("7 genre\n1 user\n8 genre\n2 user\n9 genre\n")
    data = _read(tmp_path, "1 1:1 8:1 7:1\n0 2:1\n1 9:3 1:1\n", libfm_field_map=str(field_map))
    assert data.schema.sparse_features == ("genre", "user")  # order of first appearance in the map
    genre, user = data.sparse["genre"], data.sparse["user"]
    assert genre.offsets.tolist() == [0, 2, 2, 3] and genre.values.tolist() == _ids(8, 7, 9)
    assert genre.weights.tolist() == [1.0, 1.0, 3.0]
    assert user.offsets.tolist() == [0, 1, 2, 3] and user.values.tolist() == _ids(1, 2, 1) and user.weights is None


@pytest.mark.parametrize(
    ("text", "config", "where", "message"),
    [
        ("1 1:1 2:1\n2 1:1 2:1\n", {}, ":2:1:", "expected a label 0 or 1 (or -1 or +1), got '2'"),
        ("1 1:1 2:1\nyes 1:1 2:1\n", {}, ":2:1:", "got 'yes'"),
        ("1 1:1 2:1\n0 1:1 2-1\n", {}, ":2:3:", "expected idx:val"),
        ("1 1:1 2:1\n0 1:1 2:1:1\n", {}, ":2:3:", "expected idx:val"),
        ("1 1:1 2:1\n0 a:1 2:1\n", {}, ":2:2:", "expected a non-negative integer index, got 'a:1'"),
        ("1 1:1 2:1\n0 -4:1 2:1\n", {}, ":2:2:", "expected a non-negative integer index"),
        ("1 1:1 2:1\n0 1:1 2:x\n", {}, ":2:3:", "expected a finite number after ':', got '2:x'"),
        ("1 1:1 2:inf\n", {}, ":1:3:", "expected a finite number"),
        ("1 1:1 2:1\n0 1:1\n", {}, ":2:3:", "expected 2 idx:val pairs, as on the first line, got 1"),
        ("1 1:1 2:1\n0 1:1 2:1 3:1\n", {}, ":2:4:", "got 3"),
        ("1 1:1 2:1\n\n0 1:1 2:1\n", {}, ":2:1:", "got an empty line"),
        ("1 1:1 2:1\n0 1:1 12:1\n", {"libfm_num_features": 10}, ":2:3:", "index out of range: data.libfm_num_features is 10"),
    ],
)
def test_malformed_input_names_file_line_and_column(
    tmp_path: Path, text: str, config: dict[str, object], where: str, message: str
) -> None:
    with pytest.raises(DataError) as error:
        _read(tmp_path, text, **config)
    assert f"data.libfm{where}" in str(error.value) and message in str(error.value)


def test_field_map_problems_are_named(tmp_path: Path) -> None:
    field_map = tmp_path / "fields.txt"
    field_map.write_text("1 user\n2 item\n")
    with pytest.raises(DataError, match=r"data.libfm:1:3: index not in the field map .*got '3:1'"):
        _read(tmp_path, "1 1:1 3:1\n", libfm_field_map=str(field_map))
    field_map.write_text("1 user\n1 item\n")
    with pytest.raises(DataError, match=r"fields.txt:2:1: index 1 is already mapped on line 1"):
        _read(tmp_path, "1 1:1\n", libfm_field_map=str(field_map))
    field_map.write_text("user 1\n")
    with pytest.raises(DataError, match=r"fields.txt:1:1: expected 'index field'"):
        _read(tmp_path, "1 1:1\n", libfm_field_map=str(field_map))
    with pytest.raises(ConfigError, match="data.libfm_field_map: .*missing.txt: no such file"):
        _read(tmp_path, "1 1:1\n", libfm_field_map=str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match="data.libfm_num_features must be a positive integer"):
        DataConfig(libfm_num_features=0)


def test_skip_drops_and_counts_bad_lines(tmp_path: Path) -> None:
    data = _read(tmp_path, "1 1:1 2:1\n3 1:1 2:1\n0 1:1 2:x\n0 5:1 6:2\n", on_bad_row=BadRowPolicy.SKIP)
    assert data.num_rows == 2 and data.skipped_rows == 2
    assert data.sparse["f1"].values.tolist() == _ids(1, 5) and data.sparse["f2"].weights.tolist() == [1.0, 2.0]


def test_a_rating_label_with_a_threshold(tmp_path: Path) -> None:
    data = _read(tmp_path, "4.5 1:1\n2 2:1\n", label_threshold=4.0)
    assert data.labels.tolist() == [1.0, 0.0]


def test_blocks_read_like_one_and_errors_count_lines_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [f"{i % 2} {i % 7}:1 {100 + i % 5}:{1 + i % 3}" for i in range(500)]
    whole = _read(tmp_path, "\n".join(rows) + "\n")
    monkeypatch.setattr(libfm_module, "_BLOCK_BYTES", 64)
    split = _read(tmp_path, "\n".join(rows))  # no final newline either
    assert np.array_equal(whole.labels, split.labels)
    for name in whole.schema.sparse_features:
        for part in ("values", "offsets", "weights"):
            assert np.array_equal(getattr(whole.sparse[name], part), getattr(split.sparse[name], part)), (name, part)
    rows[377] = "1 2:1 9:y"
    with pytest.raises(DataError, match=r"data.libfm:378:3: expected a finite number"):
        _read(tmp_path, "\n".join(rows) + "\n")


def test_weights_survive_prepare_slicing_and_batching(tmp_path: Path) -> None:
    source = tmp_path / "data.libfm"
    source.write_text("1 1:1 2:1\n0 3:1 4:0.25\n1 5:1 6:4\n")
    prepare([source], DataFormat.LIBFM, DataConfig(), tmp_path / "prep")
    data = open_prepared(tmp_path / "prep", verify=True)
    assert data.sparse["f1"].weights is None
    assert np.asarray(data.sparse["f2"].weights).tolist() == [1.0, 0.25, 4.0]
    assert data.slice_rows(1, 3).sparse["f2"].weights.tolist() == [0.25, 4.0]
    gathered = gather_jagged(data.sparse["f2"], np.array([2, 0]))
    assert gathered.weights.tolist() == [4.0, 1.0] and gathered.values.tolist() == _ids(6, 2)
