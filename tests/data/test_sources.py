from pathlib import Path

import numpy as np
import pytest

from terarec.data import (
    DataConfig,
    DataFormat,
    SyntheticConfig,
    load_dataset,
    load_splits,
    prepare,
    prepare_path,
    resolve_path,
)
from terarec.errors import ConfigError, DataError

CRITEO_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "criteo_kaggle_9k"


def test_synthetic_splits():
    splits = load_splits(DataConfig(synthetic=SyntheticConfig(num_examples=300, num_eval_examples=50)))
    assert (splits.train.num_rows, splits.val.num_rows) == (270, 30) and splits.eval_probabilities.shape == (50,)
    assert splits.cardinalities is not None and splits.stats.num_rows == 270


def test_raw_holdout_and_eval_path():
    splits = load_splits(DataConfig(path=str(CRITEO_DIR / "dev.tsv"), eval_fraction=0.1, val_fraction=0.1))
    assert (splits.train.num_rows, splits.val.num_rows, splits.eval.num_rows) == (331, 37, 41)
    full = load_dataset(str(CRITEO_DIR / "dev.tsv"), DataConfig())
    # evaluation is the file's tail, validation the training rows' tail just before it
    assert np.array_equal(splits.eval.sparse["C1"].values, full.sparse["C1"].values[368:])
    assert np.array_equal(splits.val.sparse["C1"].values, full.sparse["C1"].values[331:368])
    assert np.array_equal(splits.train.labels, full.labels[:331])
    assert splits.eval.sparse["C1"].offsets[0] == 0 and splits.cardinalities is None
    splits = load_splits(DataConfig(path=f"{CRITEO_DIR}/dev.tsv,{CRITEO_DIR}/test.tsv",
                                    eval_path=str(CRITEO_DIR / "test.tsv"), val_path=str(CRITEO_DIR / "dev.tsv")))
    assert (splits.train.num_rows, splits.val.num_rows, splits.eval.num_rows) == (800, 409, 391)
    splits = load_splits(DataConfig(path=str(CRITEO_DIR / "dev.tsv"), val_fraction=0))
    assert (splits.train.num_rows, splits.val, splits.eval.num_rows) == (368, None, 41)


def test_too_few_rows_to_validate_names_the_key():
    with pytest.raises(DataError, match=r"dev.tsv: 368 rows are too few to hold out data.val_fraction=0.001"):
        load_splits(DataConfig(path=str(CRITEO_DIR / "dev.tsv"), val_fraction=0.001))


def test_path_forms(tmp_path):
    assert resolve_path(str(CRITEO_DIR / "*.tsv"))[0] == sorted(CRITEO_DIR.glob("*.tsv"))
    files, fmt = resolve_path(str(CRITEO_DIR))
    assert fmt is DataFormat.CRITEO and len(files) == 3  # not SOURCE.txt
    prepare([CRITEO_DIR / "dev.tsv"], DataFormat.CRITEO, DataConfig(), tmp_path / "prep")
    assert resolve_path(str(tmp_path / "prep"))[1] is DataFormat.PREPARED
    splits = load_splits(DataConfig(path=str(tmp_path / "prep")))
    assert splits.train.num_rows + splits.val.num_rows + splits.eval.num_rows == 409
    with pytest.raises(DataError, match="missing.csv: no such file"):
        resolve_path(str(tmp_path / "missing.csv"))
    (tmp_path / "x.dat").write_text("1\n")
    with pytest.raises(ConfigError, match="--format"):
        resolve_path(str(tmp_path / "x.dat"))


def test_prepare_path(tmp_path):
    stats = prepare_path(DataConfig(path=str(CRITEO_DIR / "dev.tsv")), tmp_path / "p")
    assert stats.rows == stats.num_rows == 409
    with pytest.raises(ConfigError, match="already prepared"):
        prepare_path(DataConfig(path=str(tmp_path / "p")), tmp_path / "q")
