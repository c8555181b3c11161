"""Table-wise sharding over gloo: two ranks train the tables exactly as one process would."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from terarec.embedding import (
    EmbeddingCollection,
    EmbeddingTableConfig,
    OptimizerConfig,
    OptimizerType,
)
from terarec.sharding.table_wise import TableWiseShardedCollection
from terarec.sharding.types import CommPrecision
from terarec.sparse import JaggedTensor

WORLD_SIZE, LOCAL_BATCH, STEPS = 2, 32, 4
TABLES = [
    EmbeddingTableConfig("t_user", 500, 8, ("user",), optimizer=OptimizerConfig(OptimizerType.ADAGRAD, 0.1)),
    EmbeddingTableConfig("t_item", 800, 8, ("item", "seen"), optimizer=OptimizerConfig(OptimizerType.SGD, 0.1)),
    EmbeddingTableConfig("t_ctx", 300, 4, ("ctx",)),
]
OWNERS = {"t_user": 1, "t_item": 0, "t_ctx": 1}
FEATURES = ("user", "item", "seen", "ctx")
WIDTH = 8 + 8 + 8 + 4


def _global_batch(step: int) -> tuple[dict[str, JaggedTensor], torch.Tensor]:
    """The global batch of ``step`` (ragged bags, some empty) and a gradient for its pooled rows."""
    rng = np.random.default_rng(step)
    size = WORLD_SIZE * LOCAL_BATCH
    sparse = {}
    for feature in FEATURES:
        lengths = torch.from_numpy(rng.integers(0, 4, size))
        values = torch.from_numpy(rng.integers(-(2**40), 2**40, int(lengths.sum())))
        sparse[feature] = JaggedTensor.from_lengths(values, lengths)
    return sparse, torch.from_numpy(rng.standard_normal((size, WIDTH)).astype(np.float32))


def _rows(jagged: JaggedTensor, start: int, stop: int) -> JaggedTensor:
    offsets = jagged.offsets
    return JaggedTensor.from_lengths(jagged.values[offsets[start] : offsets[stop]], jagged.lengths()[start:stop])


def _rank_main(rank: int, port: int, out: str, precision: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        sharded = TableWiseShardedCollection(TABLES, OWNERS, seed=3, comm_precision=CommPrecision(precision))
        lo, hi = rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH
        outputs = []
        for step in range(STEPS):
            sparse, grad = _global_batch(step)
            prepared = sharded.prepare({f: _rows(j, lo, hi) for f, j in sparse.items()})
            pooled = sharded.lookup(prepared)
            outputs.append(pooled.values.detach().numpy())
            # Each rank's loss is the mean over its own examples: its gradient is W times the
            # global-mean one, and the owners average it back over the ranks.
            sharded.apply_gradients(prepared, grad[lo:hi] * WORLD_SIZE)
        np.save(Path(out) / f"pooled-{rank}.npy", np.stack(outputs))
        sharded.save(Path(out) / "checkpoint")
        for name, table in sharded.local.tables.items():
            np.save(Path(out) / f"{name}.npy", np.array(table.weights))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _reference() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    collection = EmbeddingCollection(TABLES, seed=3)
    outputs = []
    for step in range(STEPS):
        sparse, grad = _global_batch(step)
        prepared = collection.prepare(sparse)
        outputs.append(collection.lookup(prepared).values.detach().numpy())
        collection.apply_gradients(prepared, grad)
    return np.stack(outputs), {name: np.array(t.weights) for name, t in collection.tables.items()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_ranks_train_like_one_process(tmp_path: Path, precision: str) -> None:
    mp.start_processes(_rank_main, args=(_free_port(), str(tmp_path), precision), nprocs=WORLD_SIZE, start_method="spawn")
    pooled, weights = _reference()
    sharded_pooled = np.concatenate([np.load(tmp_path / f"pooled-{r}.npy") for r in range(WORLD_SIZE)], axis=1)
    if precision == "fp32":
        np.testing.assert_array_equal(sharded_pooled, pooled)
        for name, expected in weights.items():
            np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), expected)
    else:  # bf16 on the wire: 8 mantissa bits
        np.testing.assert_allclose(sharded_pooled, pooled, rtol=1e-2, atol=1e-3)
        for name, expected in weights.items():
            np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), expected, rtol=1e-2, atol=1e-3)


def _resume_rank_main(rank: int, port: int, out: str) -> None:
    """Loads the checkpoint with the owners swapped and trains one more step."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        swapped = {name: WORLD_SIZE - 1 - owner for name, owner in OWNERS.items()}
        sharded = TableWiseShardedCollection(TABLES, swapped, seed=3)
        sharded.load(Path(out) / "checkpoint")
        sparse, grad = _global_batch(STEPS)
        lo, hi = rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH
        prepared = sharded.prepare({f: _rows(j, lo, hi) for f, j in sparse.items()})
        sharded.lookup(prepared)
        sharded.apply_gradients(prepared, grad[lo:hi] * WORLD_SIZE)
        for name, table in sharded.local.tables.items():
            np.save(Path(out) / f"resumed-{name}.npy", np.array(table.weights))
    finally:
        dist.destroy_process_group()


def test_checkpoint_loads_on_one_process_and_on_other_owners(tmp_path: Path) -> None:
    """Table-wise checkpoints have one layout for every placement: resharding is loading."""
    mp.start_processes(_rank_main, args=(_free_port(), str(tmp_path), "fp32"), nprocs=WORLD_SIZE, start_method="spawn")
    single = EmbeddingCollection(TABLES, seed=0)
    single.load(tmp_path / "checkpoint")  # world size 2 -> 1
    _, weights = _reference()
    for name, expected in weights.items():
        np.testing.assert_array_equal(np.array(single.tables[name].weights), expected)
    # world size 2 -> 2 with every table on the other rank, then one more step: as one process.
    mp.start_processes(_resume_rank_main, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, start_method="spawn")
    sparse, grad = _global_batch(STEPS)
    prepared = single.prepare(sparse)
    single.lookup(prepared)
    single.apply_gradients(prepared, grad)
    for name in weights:
        np.testing.assert_array_equal(np.load(tmp_path / f"resumed-{name}.npy"), np.array(single.tables[name].weights))
