import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from terarec.data import (
    BadRowPolicy,
    DataConfig,
    DataFormat,
    compute_stats,
    open_prepared,
    prepare,
    read_files,
    read_prepared_stats,
)
from terarec.errors import DataError

CRITEO_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "criteo_kaggle_9k"


def assert_same(a, b):
    assert a.schema == b.schema and a.num_rows == b.num_rows
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.dense, b.dense)
    for name in a.schema.sparse_features:
        assert np.array_equal(a.sparse[name].values, b.sparse[name].values)
        assert np.array_equal(a.sparse[name].offsets, b.sparse[name].offsets)


def test_round_trip_equals_raw_read(tmp_path, monkeypatch):
    import terarec.data.readers as readers

    monkeypatch.setattr(readers, "_BLOCK_SIZE", 64 << 10)  # several streamed blocks
    files = [CRITEO_DIR / "dev.tsv", CRITEO_DIR / "train.tsv"]
    raw = read_files(files, DataFormat.CRITEO, DataConfig())
    stats = prepare(files, DataFormat.CRITEO, DataConfig(), tmp_path / "prep")
    prepared = open_prepared(tmp_path / "prep", verify=True)
    assert isinstance(prepared.labels, np.memmap) and not prepared.labels.flags.writeable
    assert_same(raw, prepared)
    assert stats == read_prepared_stats(tmp_path / "prep") == compute_stats(raw)
    meta = json.loads((tmp_path / "prep" / "meta.json").read_text())
    assert meta["num_rows"] == raw.num_rows and meta["columns"]["dense"]["shape"] == [raw.num_rows, 13]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left
    with pytest.raises(DataError, match="already exists"):
        prepare(files, DataFormat.CRITEO, DataConfig(), tmp_path / "prep")


def test_multi_hot_parquet_round_trip(tmp_path):
    table = pa.table({"y": [1, 0, 1], "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string()))})
    pq.write_table(table, tmp_path / "a.parquet")
    cfg = DataConfig(label="y")
    prepare([tmp_path / "a.parquet"], DataFormat.PARQUET, cfg, tmp_path / "prep")
    assert_same(read_files([tmp_path / "a.parquet"], DataFormat.PARQUET, cfg), open_prepared(tmp_path / "prep"))


def test_truncated_and_corrupt_files_detected(tmp_path):
    prepare([CRITEO_DIR / "dev.tsv"], DataFormat.CRITEO, DataConfig(), tmp_path / "prep")
    target = tmp_path / "prep" / "C3.values.i64"
    data = target.read_bytes()
    target.write_bytes(data[:-8])
    with pytest.raises(DataError, match=re.escape(f"{target}: expected {len(data)} bytes (from meta.json), found {len(data) - 8}")):
        open_prepared(tmp_path / "prep")
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    open_prepared(tmp_path / "prep")  # sizes only
    with pytest.raises(DataError, match="C3.values.i64: checksum mismatch"):
        open_prepared(tmp_path / "prep", verify=True)
    with pytest.raises(DataError, match="no meta.json"):
        open_prepared(tmp_path)


def test_bad_input_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.tsv"
    lines = (CRITEO_DIR / "dev.tsv").read_text().splitlines()
    lines[5] = "x" + lines[5]
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{bad}:6:1: column 'label'")):
        prepare([bad], DataFormat.CRITEO, DataConfig(), tmp_path / "prep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv"]
    stats = prepare([bad], DataFormat.CRITEO, DataConfig(on_bad_row=BadRowPolicy.SKIP), tmp_path / "prep")
    assert stats.skipped_rows == 1 and open_prepared(tmp_path / "prep").skipped_rows == 1
