"""Sharded embeddings over gloo: two ranks train the tables as one process would, whatever the
placement (table-wise, row-wise, column-wise, data-parallel), and checkpoints load under any
other placement."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from terarec.embedding import (
    DataType,
    EmbeddingCollection,
    EmbeddingTableConfig,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
)
from terarec.sharding import ShardedEmbeddingCollection, ShardingType, TableSharding
from terarec.sharding.config import CommPrecision
from terarec.sparse import JaggedTensor
from tests.sharding.helpers import load_unsharded, one_process_run, random_global_batch, rendezvous_file

WORLD_SIZE, LOCAL_BATCH, STEPS = 2, 32, 4
TABLES = [
    EmbeddingTableConfig("t_user", 500, 8, ("user",), optimizer=OptimizerConfig(OptimizerType.ADAGRAD, 0.1)),
    EmbeddingTableConfig("t_item", 800, 8, ("item", "seen"), optimizer=OptimizerConfig(OptimizerType.SGD, 0.1)),
    EmbeddingTableConfig("t_ctx", 300, 4, ("ctx",), pooling=PoolingType.MEAN),
]
BF16_TABLES = [dataclasses.replace(t, weights_dtype=DataType.BF16, state_dtype=DataType.BF16) for t in TABLES]
TW, RW, DP = ShardingType.TABLE_WISE, ShardingType.ROW_WISE, ShardingType.DATA_PARALLEL
CW = ShardingType.COLUMN_WISE
PLACEMENTS = {
    "table_wise": {"t_user": TableSharding(TW, (1,)), "t_item": TableSharding(TW, (0,)), "t_ctx": TableSharding(TW, (1,))},
    "column_wise": {"t_user": TableSharding(CW, (1, 0)), "t_item": TableSharding(CW, (0, 1)), "t_ctx": TableSharding(TW, (0,))},
    "mixed": {"t_user": TableSharding(RW, (1, 0)), "t_item": TableSharding(DP, (0, 1)), "t_ctx": TableSharding(RW, (0, 1))},
    "other": {"t_user": TableSharding(TW, (0,)), "t_item": TableSharding(RW, (1, 0)), "t_ctx": TableSharding(DP, (0, 1))},
}
FEATURES = ("user", "item", "seen", "ctx")
WIDTH = 8 + 8 + 8 + 4


def _global_batch(step: int) -> tuple[dict[str, JaggedTensor], torch.Tensor]:
    """The global batch of ``step`` (ragged bags, some empty) and a gradient for its pooled rows."""
    return random_global_batch(step, WORLD_SIZE * LOCAL_BATCH, FEATURES, WIDTH)


def _rows(jagged: JaggedTensor, start: int, stop: int) -> JaggedTensor:
    offsets = jagged.offsets
    return JaggedTensor.from_lengths(jagged.values[offsets[start] : offsets[stop]], jagged.lengths()[start:stop])


def _rank_main(rank: int, rendezvous: str, out: str, placement: str, precision: str, storage: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE)
    try:
        tables = BF16_TABLES if storage == "bf16" else TABLES
        sharded = ShardedEmbeddingCollection(tables, PLACEMENTS[placement], seed=3, comm_precision=CommPrecision(precision))
        lo, hi = rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH
        outputs = []
        for step in range(STEPS):
            sparse, grad = _global_batch(step)
            prepared = sharded.prepare({f: _rows(j, lo, hi) for f, j in sparse.items()})
            pooled = sharded.lookup(prepared)
            outputs.append(pooled.values.detach().numpy())
            # Each rank's loss is the mean over its own examples: its gradient is W times the
            # global-mean one, and the pieces average it back over the ranks.
            sharded.apply_gradients(prepared, grad[lo:hi] * WORLD_SIZE)
        np.save(Path(out) / f"pooled-{rank}.npy", np.stack(outputs))
        sharded.save(Path(out) / "checkpoint")
    finally:
        dist.destroy_process_group()


def _reference() -> tuple[np.ndarray, EmbeddingCollection]:
    return one_process_run(TABLES, STEPS, _global_batch)


def _saved(directory: Path, tables: list[EmbeddingTableConfig] = TABLES) -> EmbeddingCollection:
    return load_unsharded(tables, directory)


def _train(
    tmp_path: Path, placement: str, precision: str = "fp32", storage: str = "fp32"
) -> tuple[np.ndarray, EmbeddingCollection]:
    args = (rendezvous_file(tmp_path), str(tmp_path), placement, precision, storage)
    mp.start_processes(_rank_main, args=args, nprocs=WORLD_SIZE, start_method="spawn")
    pooled = np.concatenate([np.load(tmp_path / f"pooled-{r}.npy") for r in range(WORLD_SIZE)], axis=1)
    return pooled, _saved(tmp_path / "checkpoint", BF16_TABLES if storage == "bf16" else TABLES)


def _assert_tables(actual: EmbeddingCollection, expected: EmbeddingCollection, exact: bool) -> None:
    for name, table in expected.tables.items():
        for field in ("weights", "state"):
            got, want = np.array(getattr(actual.tables[name], field)), np.array(getattr(table, field))
            if exact:
                np.testing.assert_array_equal(got, want, err_msg=f"{name}.{field}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name}.{field}")


@pytest.mark.parametrize("placement", ["table_wise", "column_wise", "mixed"])
def test_two_ranks_train_like_one_process(tmp_path: Path, placement: str) -> None:
    pooled, saved = _train(tmp_path, placement)
    reference_pooled, reference = _reference()
    # Whole rows and column blocks are exact; row-wise partial sums and the replicas'
    # all-reduced row gradients add up in another order.
    exact = placement != "mixed"
    if exact:
        np.testing.assert_array_equal(pooled, reference_pooled)
    else:
        np.testing.assert_allclose(pooled, reference_pooled, rtol=1e-5, atol=1e-6)
    _assert_tables(saved, reference, exact)


def test_bf16_on_the_wire_stays_close(tmp_path: Path) -> None:
    pooled, saved = _train(tmp_path, "mixed", "bf16")
    reference_pooled, reference = _reference()
    np.testing.assert_allclose(pooled, reference_pooled, rtol=1e-2, atol=1e-3)  # bf16: 8 mantissa bits
    for name, table in reference.tables.items():
        np.testing.assert_allclose(np.array(saved.tables[name].weights), np.array(table.weights), rtol=1e-2, atol=1e-3)


def test_bf16_tables_train_like_one_process(tmp_path: Path) -> None:
    """bf16 table storage through row-wise shards and data-parallel replicas: they round as the
    one-process tables do (same seed, step and row), so results differ only where the float32
    sums of partial rows or replica gradients, added in another order, round to another bf16."""
    pooled, saved = _train(tmp_path, "mixed", storage="bf16")
    reference_pooled, reference = one_process_run(BF16_TABLES, STEPS, _global_batch)
    np.testing.assert_allclose(pooled, reference_pooled, rtol=2**-7, atol=1e-4)
    for name, table in reference.tables.items():
        got, want = np.array(saved.tables[name].weights), np.array(table.weights)
        np.testing.assert_allclose(got, want, rtol=2**-7, atol=1e-4)
        # Rounding keyed as in one process: nearly every element equal, bit for bit (all of
        # them when the float32 sums happen to agree); a wrong key would change about half of
        # the touched ones.
        assert np.mean(got == want) > 0.99, name
    saved_dtypes = {np.load(path, mmap_mode="r").dtype for path in (tmp_path / "checkpoint").rglob("weights.npy")}
    assert saved_dtypes == {np.dtype(np.uint16)}


def _resume_rank_main(rank: int, rendezvous: str, out: str) -> None:
    """Loads the checkpoint under another placement and trains one more step."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE)
    try:
        sharded = ShardedEmbeddingCollection(TABLES, PLACEMENTS["other"], seed=3)
        sharded.load(Path(out) / "checkpoint")
        sparse, grad = _global_batch(STEPS)
        lo, hi = rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH
        prepared = sharded.prepare({f: _rows(j, lo, hi) for f, j in sparse.items()})
        sharded.lookup(prepared)
        sharded.apply_gradients(prepared, grad[lo:hi] * WORLD_SIZE)
        sharded.save(Path(out) / "resumed")
    finally:
        dist.destroy_process_group()


def test_checkpoint_loads_on_one_process_and_under_another_placement(tmp_path: Path) -> None:
    """Checkpoints have one layout for every placement: resharding is loading."""
    _, saved = _train(tmp_path, "column_wise")  # world size 2 -> 1
    _, reference = _reference()
    _assert_tables(saved, reference, exact=True)
    # column-wise -> table-wise / row-wise / data-parallel, one more step: as one process.
    mp.start_processes(_resume_rank_main, args=(rendezvous_file(tmp_path), str(tmp_path)), nprocs=WORLD_SIZE, start_method="spawn")
    sparse, grad = _global_batch(STEPS)
    prepared = reference.prepare(sparse)
    reference.lookup(prepared)
    reference.apply_gradients(prepared, grad)
    _assert_tables(_saved(tmp_path / "resumed"), reference, exact=False)
