import numpy as np
import pytest

from terarec.data import BatchLoader, JaggedColumn, SyntheticConfig, gather_jagged, generate_synthetic, prepare
from terarec.data import DataConfig, DataFormat, open_prepared, read_files
from pathlib import Path

CRITEO_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "criteo_kaggle_9k"


def reference_gather(values, offsets, rows):
    bags = [values[offsets[r]:offsets[r + 1]] for r in rows]
    out_offsets = np.concatenate([[0], np.cumsum([len(b) for b in bags])]).astype(np.int64)
    return np.concatenate(bags + [np.zeros(0, np.int64)]).astype(np.int64), out_offsets


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_gather_jagged_matches_reference(dtype):
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 4, 300)
    lengths[7] = 5000  # one huge bag
    lengths[:5] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.integers(0, 50, offsets[-1]).astype(np.int64)  # repeated IDs
    rows = rng.integers(0, 300, 400).astype(dtype)
    rows[:3] = [7, 0, 7]
    got = gather_jagged(JaggedColumn(values, offsets), rows)
    want_values, want_offsets = reference_gather(values, offsets, rows)
    assert np.array_equal(got.values, want_values) and np.array_equal(got.offsets, want_offsets)


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(SyntheticConfig(num_examples=1003, num_eval_examples=1, num_sparse=3,
                                              bag_sizes=(1, 3, 2))).train


def collect(loader, epoch, start=0):
    return [(b.labels.numpy().copy(), b.dense.numpy().copy(), b.sparse["C2"].values.numpy().copy())
            for b in loader.iterate(epoch, start)]


def test_order_and_shards(data):
    loaders = [BatchLoader(data, 100, seed=3, rank=r, world_size=2, prefetch=r) for r in range(2)]
    assert loaders[0].num_batches == 6
    order = np.random.default_rng([3, 1]).permutation(1003)
    for r, loader in enumerate(loaders):
        batches = collect(loader, epoch=1)
        assert len(batches) == 6
        for b, (labels, dense, c2) in enumerate(batches):
            rows = order[(2 * b + r) * 100:(2 * b + r + 1) * 100]
            assert np.array_equal(labels, data.labels[rows]) and np.array_equal(dense, data.dense[rows])
            assert np.array_equal(c2, data.sparse["C2"].values.reshape(-1, 3)[rows].ravel())
    assert [len(b[0]) for b in collect(loaders[1], 0)][-1] == 0  # rows 1000..1002 all go to rank 0
    assert BatchLoader(data, 100, world_size=2, drop_last=True).num_batches == 5
    unshuffled = collect(BatchLoader(data, 500, shuffle=False), 0)
    assert np.array_equal(np.concatenate([b[0] for b in unshuffled]), data.labels)


def test_resume_equals_uninterrupted(data):
    loader = BatchLoader(data, 64, seed=9)
    full = collect(loader, epoch=2)
    resumed = collect(loader, epoch=2, start=5)
    assert len(resumed) == len(full) - 5
    for x, y in zip(full[5:], resumed):
        assert all(np.array_equal(a, b) for a, b in zip(x, y))


def test_early_stop_and_errors(data):
    loader = BatchLoader(data, 10, prefetch=2)
    it = loader.iterate(0)
    next(it)
    it.close()  # stops the background thread
    class Broken(BatchLoader):
        def make_batch(self, rows):
            raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError, match="disk on fire"):
        list(Broken(data, 10).iterate(0))
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(data, 10, rank=2, world_size=2)


def test_memory_mapped_equals_in_ram(tmp_path):
    raw = read_files([CRITEO_DIR / "dev.tsv"], DataFormat.CRITEO, DataConfig())
    prepare([CRITEO_DIR / "dev.tsv"], DataFormat.CRITEO, DataConfig(), tmp_path / "p")
    mapped = open_prepared(tmp_path / "p")
    a = collect(BatchLoader(raw, 50, seed=1), 0)
    b = collect(BatchLoader(mapped, 50, seed=1), 0)
    assert all(np.array_equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))
