"""Helpers shared by the training, CLI and end-to-end tests."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numba
import numpy as np
import torch

from terarec.train import Config, load_config

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CRITEO = SHARED_DATA / "criteo_kaggle_9k"

# A synthetic run small enough for a unit test: ~20k examples, tables of at most 2k rows.
TINY = {
    "data.synthetic.num_examples": 12_000,
    "data.synthetic.num_eval_examples": 3_000,
    "data.synthetic.max_cardinality": 2_000,
    "embedding.embedding_dim": 8,
    "model.type": "dlrm",
    "model.dlrm.bottom_mlp": "16",
    "model.dlrm.top_mlp": "32",
    "train.batch_size": 256,
    "train.epochs": 1,
    "data.val_fraction": 0,
    "train.num_threads": 2,
    "train.progress": False,
}


# A cache of 520 rows x (8 weights + 1 state) floats per table, two batches' worth for tables of
# up to 2000 rows: rows are evicted and reloaded all the time.
TINY_CACHE = str(520 * 36)


def tiny_overrides(out: Path, **extra: object) -> list[tuple[str, object]]:
    """Dotted overrides for a tiny synthetic run writing to ``out``; ``extra`` uses ``__`` for dots."""
    merged: dict[str, object] = {**TINY, "train.out": str(out)}
    merged.update({key.replace("__", "."): value for key, value in extra.items()})
    return list(merged.items())


def tiny_config(out: Path, **extra: object) -> Config:
    return load_config(overrides=tiny_overrides(out, **extra))


def checkpoint_weights(checkpoint: Path) -> dict[str, np.ndarray]:
    """Every trained number in a checkpoint: dense weights and each table's rows and state."""
    weights = {
        f"model/{name}": tensor.numpy()
        for name, tensor in torch.load(checkpoint / "model.pt", weights_only=True).items()
    }
    for path in sorted((checkpoint / "tables").rglob("*.npy")):
        weights[str(path.relative_to(checkpoint))] = np.load(path, allow_pickle=False)
    return weights


def assert_bit_identical(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert np.array_equal(left[name].reshape(-1).view(np.uint8), right[name].reshape(-1).view(np.uint8)), f"{name} differs"


@contextlib.contextmanager
def numba_threads(count: int) -> Iterator[None]:
    """Runs the body with ``count`` numba threads, then restores the previous count."""
    previous = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def trained_numbers(checkpoint: Path, scratch: Path) -> dict[str, np.ndarray]:
    """Every trained number of a checkpoint whatever its tables' kinds (tiered tables keep
    snapshot chains, not arrays): loads it as ``terarec eval`` does and reads the tables back."""
    from terarec._dataclass_codec import from_mapping
    from terarec.embedding import DeepHashTableConfig, EmbeddingCollection, EmbeddingTableConfig
    from terarec.train import load_checkpoint
    from terarec.train.builders import build_network
    from terarec.train.checkpoint import read_run_spec

    spec = read_run_spec(checkpoint)
    config = Config.from_dict(spec["config"])
    tables = [from_mapping(EmbeddingTableConfig, raw) for raw in spec["tables"]]
    hashed = [from_mapping(DeepHashTableConfig, raw) for raw in spec["deep_hash_tables"]]
    collection = EmbeddingCollection(tables, seed=config.train.seed, directory=scratch)
    model = build_network(config.model, len(spec["schema"]["dense_features"]), tables, hashed, config.train.seed)
    load_checkpoint(checkpoint, model, collection)
    out = {f"model/{k}": v.numpy() for k, v in model.state_dict().items()}
    for name, table in collection.tables.items():
        out[f"{name}/weights"], out[f"{name}/state"] = np.array(table.weights), np.array(table.state)
    return out


CRITEO_ROWS = (CRITEO / "train.tsv").read_text().splitlines(keepends=True)

# A stream run small enough for a unit test: DCN-v2 with narrow layers on the Criteo sample's files.
STREAM = {
    "data.format": "criteo",
    "train.batch_size": 128,
    "train.num_threads": 2,
    "train.progress": False,
    "train.stream.idle_seconds": 0.3,
    "train.stream.poll_seconds": 0.05,
    "embedding.embedding_dim": 8,
    "model.dcnv2.mlp": "[32]",
    "model.dcnv2.low_rank": 8,
}


def arrive(directory: Path, name: str, lines: list[str]) -> Path:
    """Writes a file as a producer should: under a hidden name, then renamed in."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{name}"
    partial.write_text("".join(lines))
    return partial.rename(directory / name)


def stream_command(run: Path, incoming: Path, *flags: str) -> list[str]:
    """``terarec train --stream`` of :data:`STREAM`'s run as a command, without an idle timeout
    (it runs until stopped) and polling every 50 ms."""
    command = [sys.executable, "-m", "terarec", "train", "--stream", str(incoming), "--out", str(run), "--no-progress"]
    for key, value in STREAM.items():
        if not key.startswith("train.stream"):
            command += ["--set", f"{key}={value}"]
    return [*command, "--set", "train.stream.poll_seconds=0.05", *flags]
