import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from terarec.data import (
    MISSING_ID,
    BadRowPolicy,
    DataConfig,
    DataFormat,
    DenseTransform,
    hash_string,
    read_files,
)
from terarec.errors import ConfigError, DataError

CRITEO_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "criteo_kaggle_9k"

SKIP = DataConfig(on_bad_row=BadRowPolicy.SKIP)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def with_field(line: str, column: int, value: str, sep: str = "\t") -> str:
    fields = line.split(sep)
    fields[column - 1] = value
    return sep.join(fields)


def test_criteo_sample_matches_pure_python(criteo_lines, tmp_path):
    path = write(tmp_path / "a.tsv", criteo_lines)
    data = read_files([path], DataFormat.CRITEO, DataConfig())
    fields = [line.split("\t") for line in criteo_lines]
    assert data.num_rows == 200 and data.schema.num_dense == 13 and data.schema.num_sparse == 26
    assert data.labels.tolist() == [float(f[0]) for f in fields]
    raw = np.array([[float(v) if v else 0.0 for v in f[1:14]] for f in fields])
    np.testing.assert_allclose(data.dense, np.sign(raw) * np.log1p(np.abs(raw)), rtol=1e-6)
    c3 = np.array([hash_string(f[16]) for f in fields])
    assert (data.sparse["C3"].values == c3).all()
    assert (data.sparse["C3"].offsets == np.arange(201)).all()
    assert (data.sparse["C22"].values == MISSING_ID).any()  # empty fields are the missing ID


def test_whole_sample_and_no_transform():
    data = read_files([CRITEO_DIR / "dev.tsv"], DataFormat.CRITEO, DataConfig(dense_transform=DenseTransform.NONE))
    assert data.num_rows == 409 and data.dense.dtype == np.float32 and data.dense.max() > 100


BAD_CRITEO = [
    # (column, value, expected message after path:line:)
    (1, "2", "1: column 'label': expected a label 0 or 1, got '2'"),
    (1, "", "1: column 'label': expected a label 0 or 1, got ''"),
    (3, "abc", "3: column 'I2': expected a number, got 'abc'"),
]


@pytest.mark.parametrize("column, value, message", BAD_CRITEO)
@pytest.mark.parametrize("file_index", [0, 1])
def test_criteo_bad_value_names_file_line_column(criteo_lines, tmp_path, column, value, message, file_index):
    files = [write(tmp_path / f"part{i}.tsv", criteo_lines[i * 100:(i + 1) * 100]) for i in range(2)]
    lines = criteo_lines[file_index * 100:(file_index + 1) * 100]
    lines[56] = with_field(lines[56], column, value)
    write(files[file_index], lines)
    message = message.replace("expected a number", "expected a finite number")
    with pytest.raises(DataError, match=re.escape(f"{files[file_index]}:57:{message}")):
        read_files(files, DataFormat.CRITEO, DataConfig())


@pytest.mark.parametrize("file_index", [0, 1])
def test_criteo_wrong_field_count(criteo_lines, tmp_path, file_index):
    files = [write(tmp_path / f"part{i}.tsv", criteo_lines[i * 100:(i + 1) * 100]) for i in range(2)]
    lines = criteo_lines[file_index * 100:(file_index + 1) * 100]
    lines[9] = lines[9].rsplit("\t", 1)[0]  # 39 fields
    lines[70] = lines[70] + "\textra"  # 41 fields
    write(files[file_index], lines)
    with pytest.raises(DataError, match=re.escape(f"{files[file_index]}:10:40: column 'C26': expected 40 fields, got 39")):
        read_files(files, DataFormat.CRITEO, DataConfig())
    lines[9] = criteo_lines[file_index * 100 + 9]
    write(files[file_index], lines)
    with pytest.raises(DataError, match=re.escape(f"{files[file_index]}:71:41: expected 40 fields, got 41")):
        read_files(files, DataFormat.CRITEO, DataConfig())


def test_first_error_wins_and_skip_counts(criteo_lines, tmp_path):
    lines = list(criteo_lines)
    lines[4] = lines[4] + "\tx"  # line 5: field count
    lines[2] = with_field(lines[2], 5, "1.2.3")  # line 3: dense value, reported first
    lines[150] = ""  # line 151: blank line, not silently dropped
    lines[170] = with_field(lines[170], 1, "yes")  # line 171
    path = write(tmp_path / "bad.tsv", lines)
    with pytest.raises(DataError, match=re.escape(f"{path}:3:5: column 'I4'")):
        read_files([path], DataFormat.CRITEO, DataConfig())
    data = read_files([path, write(tmp_path / "ok.tsv", criteo_lines[:10])], DataFormat.CRITEO, SKIP)
    assert data.skipped_rows == 4 and data.num_rows == 206
    keep = [i for i in range(200) if i not in (2, 4, 150, 170)]
    assert data.labels[:196].tolist() == [float(criteo_lines[i].split("\t")[0]) for i in keep]
    c1 = np.array([hash_string(criteo_lines[i].split("\t")[14]) for i in keep])
    assert (data.sparse["C1"].values[:196] == c1).all()


def test_line_numbers_survive_many_blocks(criteo_lines, tmp_path, monkeypatch):
    import terarec.data.readers as readers

    monkeypatch.setattr(readers, "_BLOCK_SIZE", 2048)  # many blocks, rejected rows across them
    lines = [line if i % 7 else line + "\tx" for i, line in enumerate(criteo_lines)]
    lines[183] = with_field(lines[183], 2, "oops")
    path = write(tmp_path / "many.tsv", lines)
    data = read_files([path], DataFormat.CRITEO, SKIP)
    assert data.skipped_rows == 29 + 1 and data.num_rows == 170
    only_value_error = [line if i != 0 else criteo_lines[0] for i, line in enumerate(criteo_lines)]
    only_value_error[183] = with_field(only_value_error[183], 2, "oops")
    write(path, only_value_error)
    with pytest.raises(DataError, match=re.escape(f"{path}:184:2: column 'I1'")):
        read_files([path], DataFormat.CRITEO, DataConfig())


CSV_HEADER = "click,price,user,item"


@pytest.mark.parametrize("file_index", [0, 1])
@pytest.mark.parametrize("bad_line, message", [
    ("1,abc,u,i", "4:2: column 'price': expected a finite number, got 'abc'"),
    ("0.5,1,u,i", "4:1: column 'click': expected a label 0 or 1, got '0.5'"),
    ("1,2,u", "4:4: column 'item': expected 4 fields, got 3"),
    ("1,2,u,i,j", "4:5: expected 4 fields, got 5"),
])
def test_csv_bad_rows(tmp_path, file_index, bad_line, message):
    good = [CSV_HEADER, "1,3.5,u1,i1", "0,,u2,i2", "1.0,-2,u3,i3", "0.0,4,,i4"]
    files = [write(tmp_path / f"{i}.csv", good) for i in range(2)]
    lines = list(good)
    lines[3] = bad_line
    write(files[file_index], lines)
    cfg = DataConfig(label="click", dense_features=("price",))
    with pytest.raises(DataError, match=re.escape(f"{files[file_index]}:{message}")):
        read_files(files, DataFormat.CSV, cfg)
    data = read_files(files, DataFormat.CSV, DataConfig(label="click", dense_features=("price",),
                                                        on_bad_row=BadRowPolicy.SKIP))
    assert data.skipped_rows == 1 and data.num_rows == 7


def test_csv_columns_and_delimiter(tmp_path):
    path = write(tmp_path / "a.csv", ["click;price;user;item", "1;3.5;u1;i1", "0;;u2;i2"])
    cfg = DataConfig(label="click", dense_features=("price",), ignore=("item",), delimiter=";",
                     dense_transform=DenseTransform.NONE)
    data = read_files([path], DataFormat.CSV, cfg)
    assert data.schema.sparse_features == ("user",) and data.dense[:, 0].tolist() == [3.5, 0.0]


def test_label_threshold_turns_ratings_into_clicks(tmp_path):
    path = write(tmp_path / "ratings.tsv", ["rating\tuser\titem", "4\tu1\ti1", "3.5\tu2\ti2", "5\tu1\ti3", "1\tu3\ti1"])
    cfg = DataConfig(label="rating", delimiter="\t", label_threshold=4.0)
    assert read_files([path], DataFormat.CSV, cfg).labels.tolist() == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(DataError, match=re.escape(f"{path}:2:1: column 'rating': expected a label 0 or 1, got '4'")):
        read_files([path], DataFormat.CSV, DataConfig(label="rating", delimiter="\t"))
    bad = write(tmp_path / "bad.tsv", ["rating\tuser", "4\tu1", "five\tu2"])
    with pytest.raises(DataError, match=re.escape(f"{bad}:3:1: column 'rating': expected a number, got 'five'")):
        read_files([bad], DataFormat.CSV, cfg)
    with pytest.raises(ConfigError, match="data.label_threshold must be a number"):
        DataConfig(label="rating", label_threshold="high")


def test_unknown_columns_suggest(tmp_path):
    path = write(tmp_path / "a.csv", [CSV_HEADER, "1,2,u,i"])
    with pytest.raises(ConfigError, match=r"data.dense_features names column 'prize'.*did you mean 'price'.*Available"):
        read_files([path], DataFormat.CSV, DataConfig(label="click", dense_features=("prize",)))
    with pytest.raises(ConfigError, match="data.label is required"):
        read_files([path], DataFormat.CSV, DataConfig())
    with pytest.raises(ConfigError, match="data.ignore names column 'C99'"):
        read_files([CRITEO_DIR / "dev.tsv"], DataFormat.CRITEO, DataConfig(ignore=("C99",)))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: no such file"):
        read_files([tmp_path / "nope.tsv"], DataFormat.CRITEO, DataConfig())
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(DataError, match="empty.tsv: file is empty"):
        read_files([tmp_path / "empty.tsv"], DataFormat.CRITEO, DataConfig())


def test_parquet_scalars_lists_and_nulls(tmp_path):
    table = pa.table({
        "label": pa.array([1, 0, 1, 0], pa.int8()),
        "price": pa.array([1.0, None, 3.0, 4.0]),
        "user": pa.array([123, 7, None, 9]),
        "items": pa.array([["a", "b"], [], None, ["c", None]], pa.list_(pa.string())),
    })
    path = tmp_path / "a.parquet"
    pq.write_table(table, path)
    cfg = DataConfig(label="label", dense_features=("price",), dense_transform=DenseTransform.NONE)
    data = read_files([path], DataFormat.PARQUET, cfg)
    assert data.dense[:, 0].tolist() == [1.0, 0.0, 3.0, 4.0]
    assert data.sparse["user"].values[0] == hash_string("123") and data.sparse["user"].values[2] == MISSING_ID
    items = data.sparse["items"]
    assert items.offsets.tolist() == [0, 2, 2, 3, 5]
    assert items.values.tolist() == [hash_string("a"), hash_string("b"), MISSING_ID, hash_string("c"), MISSING_ID]
    pq.write_table(table.set_column(0, "label", pa.array([1, 0, 2, 0])), path)
    with pytest.raises(DataError, match=re.escape(f"{path}:3:1: column 'label': expected a label 0 or 1, got '2'")):
        read_files([path], DataFormat.PARQUET, cfg)
