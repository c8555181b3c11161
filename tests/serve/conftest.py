"""Runs trained once per session and exported for the serving tests."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from terarec.serve import export_run
from terarec.train import fit, load_config
from tests.helpers import CRITEO, SHARED_DATA

ML = SHARED_DATA / "movielens_100k"
CRITEO_TRAIN = CRITEO / "train.tsv"
CRITEO_EVAL = CRITEO / "test.tsv"


def train_and_export(root: Path, name: str, overrides: dict[str, object]) -> tuple[Path, Path]:
    """A run trained with ``overrides`` in ``root/name`` and its export in ``root/name-model``."""
    run = root / name
    settings = {"train.num_threads": 2, "train.progress": False, "train.out": str(run), **overrides}
    fit(load_config(overrides=list(settings.items())))
    model = root / f"{name}-model"
    export_run(run, model)
    return run, model


CRITEO_RUN = {
    "data.path": str(CRITEO_TRAIN),
    "data.eval_path": str(CRITEO_EVAL),
    "data.format": "criteo",
    "train.steps": 40,
    "train.batch_size": 128,
    "data.val_fraction": 0,
}


@pytest.fixture(scope="session")
def criteo_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A DCN-v2 (the default model) on the Criteo sample, with bucketized and crossed features."""
    overrides = {**CRITEO_RUN, "data.bucketize": "I1,I2", "data.crosses": "[[C1, C2]]"}
    return train_and_export(tmp_path_factory.mktemp("criteo"), "run", overrides)


@pytest.fixture(scope="session")
def two_tower_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    overrides = {
        "data.path": str(ML / "ml-100k.inter"),
        "data.format": "interactions",
        "data.interactions.user_features": str(ML / "ml-100k.user"),
        "model.type": "two_tower",
        "train.steps": 60,
    }
    return train_and_export(tmp_path_factory.mktemp("two_tower"), "run", overrides)


def criteo_records(path: Path, rows: int) -> list[dict[str, object]]:
    """The first ``rows`` examples of a Criteo TSV file as request records (label left out)."""
    records = []
    with open(path, newline="") as handle:
        for fields in csv.reader(handle, delimiter="\t"):
            record: dict[str, object] = {f"I{i}": (int(fields[i]) if fields[i] else None) for i in range(1, 14)}
            record.update({f"C{i}": fields[13 + i] for i in range(1, 27)})
            records.append(record)
            if len(records) == rows:
                break
    return records
