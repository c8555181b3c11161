"""End to end through the ``terarec`` command on the real Criteo sample in ../shared/data."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from terarec.cli import main

CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
# One pass in small batches: AUC 0.716-0.726 over seeds 0-3; a second epoch overfits (0.65).
CRITEO_FLAGS = ["--epochs", "1", "--batch-size", "64", "--threads", "2", "--no-progress"]


def _train(args: list[str], out: Path) -> dict[str, object]:
    assert main(["train", *args, *CRITEO_FLAGS, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


def _eval_paths(criteo_dir: Path) -> str:
    return f"{criteo_dir / 'dev.tsv'},{criteo_dir / 'test.tsv'}"


@pytest.mark.slow
def test_criteo_sample_reaches_auc_070_and_eval_reproduces_it(criteo_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "criteo"
    metrics = _train(["--data", str(criteo_dir / "train.tsv"), "--eval-data", _eval_paths(criteo_dir), "--format", "criteo"], out)
    assert metrics["eval_examples"] == 800
    assert metrics["auc"] >= 0.70, metrics["auc"]
    assert metrics["ne"] < 1.0
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out), "--data", _eval_paths(criteo_dir), "--json", str(report)]) == 0
    evaluated = json.loads(report.read_text())
    assert evaluated["auc"] == metrics["auc"] and evaluated["logloss"] == metrics["logloss"]
    assert f"AUC {metrics['auc']:.4f}" in capsys.readouterr().out


@pytest.mark.slow
def test_prepared_csv_and_parquet_inputs_train_identically_to_raw_tsv(criteo_dir: Path, tmp_path: Path) -> None:
    """The same rows through four input paths hash to the same IDs and train to the same weights."""
    read = pacsv.read_csv(
        criteo_dir / "train.tsv",
        read_options=pacsv.ReadOptions(column_names=CRITEO_COLUMNS),
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in CRITEO_COLUMNS[14:]}),
    )
    evaluation = pacsv.read_csv(
        criteo_dir / "dev.tsv",
        read_options=pacsv.ReadOptions(column_names=CRITEO_COLUMNS),
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in CRITEO_COLUMNS[14:]}),
    )
    pacsv.write_csv(read, tmp_path / "train.csv")
    pacsv.write_csv(evaluation, tmp_path / "dev.csv")
    pq.write_table(read, tmp_path / "train.parquet")
    pq.write_table(evaluation, tmp_path / "dev.parquet")
    dense = ",".join(CRITEO_COLUMNS[1:14])

    raw = _train(["--data", str(criteo_dir / "train.tsv"), "--eval-data", str(criteo_dir / "dev.tsv")], tmp_path / "raw")
    assert main(["prepare", "--data", str(criteo_dir / "train.tsv"), "--out", str(tmp_path / "prepared")]) == 0
    prepared = _train(["--data", str(tmp_path / "prepared"), "--eval-data", str(criteo_dir / "dev.tsv")], tmp_path / "prep")
    csv = _train(
        ["--data", str(tmp_path / "train.csv"), "--eval-data", str(tmp_path / "dev.csv"), "--label", "label", "--dense", dense],
        tmp_path / "csv",
    )
    parquet = _train(
        ["--data", str(tmp_path / "train.parquet"), "--eval-data", str(tmp_path / "dev.parquet"), "--label", "label", "--dense", dense],
        tmp_path / "parquet",
    )
    for other in (prepared, csv, parquet):
        assert (other["auc"], other["logloss"]) == (raw["auc"], raw["logloss"])
