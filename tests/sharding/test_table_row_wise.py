"""Table-row-wise sharding (TorchRec's TWRW) over gloo: four ranks on this machine that take
themselves for two hosts of two (``local_size=2``) train the tables as one process would, send
exactly the pooled bytes the cost model predicts, and save checkpoints one process loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from terarec.data import load_splits
from terarec.embedding import (
    EmbeddingCollection,
    EmbeddingTableConfig,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
)
from terarec.sharding import (
    CommPrecision,
    DenseWorkload,
    Plan,
    ShardedEmbeddingCollection,
    ShardEstimator,
    ShardingType,
    ShardPlacement,
    Storage,
    TablePlacement,
    TableSharding,
    TableWorkload,
    Tier,
    Topology,
    estimate_plan,
)
from terarec.sharding.sharded import _cut
from terarec.sparse import JaggedTensor
from terarec.train import load_config
from terarec.train.builders import build_table_configs
from terarec.train.placement import plan_tables
from tests.helpers import tiny_overrides
from tests.sharding.helpers import load_unsharded, one_process_run, random_global_batch, rendezvous_file
from tests.sharding.test_sharded import _rows

WORLD_SIZE, LOCAL_SIZE, LOCAL_BATCH, STEPS = 4, 2, 16, 3
TWRW, TW, RW = ShardingType.TABLE_ROW_WISE, ShardingType.TABLE_WISE, ShardingType.ROW_WISE
TABLES = [
    EmbeddingTableConfig("t_sum", 600, 8, ("a", "b"), optimizer=OptimizerConfig(OptimizerType.ADAGRAD, 0.1)),
    EmbeddingTableConfig(
        "t_mean", 400, 4, ("c",), pooling=PoolingType.MEAN, optimizer=OptimizerConfig(OptimizerType.SGD, 0.5)
    ),
    EmbeddingTableConfig("t_whole", 300, 4, ("d",)),
    EmbeddingTableConfig("t_rows", 500, 4, ("e",)),
]
SHARDINGS = {
    "t_sum": TableSharding(TWRW, (3, 2)),  # host 1, its rows in reverse rank order
    "t_mean": TableSharding(TWRW, (0, 1)),  # host 0, mean-pooled
    "t_whole": TableSharding(TW, (1,)),  # rank 1 also sends columns that skip the host stage
    "t_rows": TableSharding(RW, (2, 0)),
}
FEATURES = ("a", "b", "c", "d", "e")
WIDTH = 8 + 8 + 4 + 4 + 4
MEAN_BAG = 1.5  # bags of 0 to 3 IDs


def _global_batch(step: int) -> tuple[dict[str, JaggedTensor], torch.Tensor]:
    """The global batch of ``step`` (ragged bags, some empty) and a gradient for its pooled rows."""
    return random_global_batch(100 + step, WORLD_SIZE * LOCAL_BATCH, FEATURES, WIDTH)


def _rank_main(rank: int, rendezvous: str, out: str, precision: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE)
    try:
        sharded = ShardedEmbeddingCollection(
            TABLES, SHARDINGS, seed=3, comm_precision=CommPrecision(precision), local_size=LOCAL_SIZE
        )
        lo, hi = rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH
        outputs = []
        for step in range(STEPS):
            sparse, grad = _global_batch(step)
            prepared = sharded.prepare({f: _rows(j, lo, hi) for f, j in sparse.items()})
            outputs.append(sharded.lookup(prepared).values.detach().numpy())
            sharded.apply_gradients(prepared, grad[lo:hi] * WORLD_SIZE)  # the pieces average over ranks
        np.save(Path(out) / f"pooled-{rank}.npy", np.stack(outputs))
        sent = sharded.comm_bytes_by_kind
        np.save(Path(out) / f"bytes-{rank}.npy", np.array([sent["ids"], sent["pooled"]]))
        assert sharded.local is not None  # every rank holds a piece here
        held = {
            f"{name}/{field}": np.array(getattr(table, field))
            for name, table in sharded.local.tables.items()
            for field in ("weights", "state")
        }
        np.savez(Path(out) / f"held-{rank}.npz", **held)
        sharded.save(Path(out) / "checkpoint")
    finally:
        dist.destroy_process_group()


def _train(out: Path, precision: str) -> np.ndarray:
    """Trains on four ranks; returns the pooled rows of every step, ranks' examples side by side."""
    mp.start_processes(_rank_main, args=(rendezvous_file(out), str(out), precision), nprocs=WORLD_SIZE, start_method="spawn")
    return np.concatenate([np.load(out / f"pooled-{r}.npy") for r in range(WORLD_SIZE)], axis=1)


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    out = tmp_path_factory.mktemp("twrw-fp32")
    return out, _train(out, "fp32")


def _reference() -> tuple[np.ndarray, EmbeddingCollection]:
    return one_process_run(TABLES, STEPS, _global_batch)


def _loaded(directory: Path) -> EmbeddingCollection:
    return load_unsharded(TABLES, directory)


def test_table_row_wise_trains_like_one_process(fp32_run: tuple[Path, np.ndarray]) -> None:
    out, pooled = fp32_run
    reference_pooled, reference = _reference()
    # partial sums add up in another order (inside the host, then at the requester)
    np.testing.assert_allclose(pooled, reference_pooled, rtol=1e-5, atol=1e-5)
    saved = _loaded(out / "checkpoint")
    for name, table in reference.tables.items():
        for field in ("weights", "state"):
            got, want = np.array(getattr(saved.tables[name], field)), np.array(getattr(table, field))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name}.{field}")


def test_table_row_wise_checkpoint_loads_in_one_process_exactly(fp32_run: tuple[Path, np.ndarray]) -> None:
    out, _ = fp32_run
    saved = _loaded(out / "checkpoint")
    for rank in range(WORLD_SIZE):
        held = np.load(out / f"held-{rank}.npz")
        for table in TABLES:
            ranks = SHARDINGS[table.name].ranks
            if rank not in ranks:
                continue
            rows = np.array_split(np.arange(table.num_embeddings), len(ranks))[ranks.index(rank)]
            for field in ("weights", "state"):
                whole = np.array(getattr(saved.tables[table.name], field))
                want = held[f"{table.name}/{field}"]
                np.testing.assert_array_equal(whole[rows], want, err_msg=f"{table.name}.{field}")


def _plan(precision: CommPrecision, shardings: dict[str, TableSharding] = SHARDINGS) -> Plan:
    """The cost model's prediction for ``shardings``."""
    topology = Topology(WORLD_SIZE, ram_per_rank=1 << 30, ranks_per_host=LOCAL_SIZE)
    estimator = ShardEstimator(topology, LOCAL_BATCH, precision)
    placements, workloads = [], []
    for table in TABLES:
        kind, ranks = shardings[table.name].sharding_type, shardings[table.name].ranks
        blocks = np.array_split(np.arange(table.num_embeddings), len(ranks))
        shards = tuple(
            ShardPlacement(r, Tier.RAM, int(rows[0]), len(rows), 0, table.embedding_dim, Storage())
            for r, rows in zip(ranks, blocks)
        )
        placements.append(TablePlacement(table.name, kind, table.num_embeddings, table.embedding_dim, shards))
        workloads.append(TableWorkload(table, (MEAN_BAG,) * len(table.feature_names), zipf_exponent=0.0))
    return estimate_plan(estimator, placements, workloads, DenseWorkload(), "test")


def _assert_bytes(out: Path, precision: CommPrecision) -> None:
    sent = sum(np.load(out / f"bytes-{r}.npy") for r in range(WORLD_SIZE)) / STEPS
    predicted = _plan(precision).comm_bytes
    # pooled rows and gradients, the host stage's included, are exact; IDs follow the mean bag size
    assert sent[1] == predicted["pooled"]
    assert sent[0] == pytest.approx(predicted["ids"], rel=0.1)


def test_table_row_wise_sends_the_bytes_the_planner_predicts(fp32_run: tuple[Path, np.ndarray]) -> None:
    out, _ = fp32_run
    _assert_bytes(out, CommPrecision.FP32)
    # as many bytes as row-wise over the same ranks, but one reduced row per bag leaves the host
    as_row_wise = dict(SHARDINGS, t_sum=TableSharding(RW, (3, 2)), t_mean=TableSharding(RW, (0, 1)))
    row_wise = _plan(CommPrecision.FP32, as_row_wise)
    table_row_wise = _plan(CommPrecision.FP32)
    assert table_row_wise.comm_bytes["pooled"] == row_wise.comm_bytes["pooled"]
    assert max(r.network_seconds for r in table_row_wise.ranks) < max(r.network_seconds for r in row_wise.ranks)


def test_bf16_on_the_wire_in_the_host_stage_too(tmp_path: Path) -> None:
    pooled = _train(tmp_path, "bf16")
    reference_pooled, reference = _reference()
    np.testing.assert_allclose(pooled, reference_pooled, rtol=1e-2, atol=1e-3)  # bf16: 8 mantissa bits
    saved = _loaded(tmp_path / "checkpoint")
    for name, table in reference.tables.items():
        # SGD at 0.5 moves a row by ~1 in 3 steps, with gradients good to 2**-9 of that
        got, want = np.array(saved.tables[name].weights), np.array(table.weights)
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=5e-3, err_msg=name)
    _assert_bytes(tmp_path, CommPrecision.BF16)


def test_a_table_row_wise_table_spans_exactly_one_host() -> None:
    with pytest.raises(ValueError, match="spans every rank of one host"):
        _cut(TABLES, dict(SHARDINGS, t_sum=TableSharding(TWRW, (1, 2))), WORLD_SIZE, LOCAL_SIZE)
    with pytest.raises(ValueError, match="spans every rank of one host"):
        _cut(TABLES, dict(SHARDINGS, t_sum=TableSharding(TWRW, (2,))), WORLD_SIZE, LOCAL_SIZE)
    # with one host of every rank it is row-wise over all of them
    pieces = _cut(TABLES[:1], {"t_sum": TableSharding(TWRW, (0, 2, 1, 3))}, WORLD_SIZE, WORLD_SIZE)
    blocks = [(p.rank, p.first_row, p.num_rows) for p in pieces]
    assert blocks == [(0, 0, 150), (2, 150, 150), (1, 300, 150), (3, 450, 150)]


@pytest.mark.parametrize(("world_size", "per_host"), [(4, 2), (2, 2)])
def test_sharding_overrides_pin_a_table_table_row_wise(tmp_path: Path, world_size: int, per_host: int) -> None:
    """Training's planner accepts the pin and gives the table every rank of one host."""
    keys = dict(tiny_overrides(tmp_path))
    keys["sharding.overrides"] = [{"table": "C1", "sharding_type": "table_row_wise"}]
    config = load_config(overrides=list(keys.items()))
    splits = load_splits(config.data)
    tables = build_table_configs(config.embedding, splits.train.schema.sparse_features, splits.stats.distinct_ids)
    plan = plan_tables(config, tables, splits.train, world_size, per_host, tmp_path)
    placement = next(p for p in plan.placements if p.name == "C1")
    assert placement.sharding_type is TWRW
    assert placement.ranks in [tuple(range(h, h + per_host)) for h in range(0, world_size, per_host)]
