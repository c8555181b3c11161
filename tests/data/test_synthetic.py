import numpy as np

from terarec.data import SyntheticConfig, generate_synthetic


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_deterministic_and_seed_dependent():
    cfg = SyntheticConfig(num_examples=2000, num_eval_examples=500, num_sparse=5, bag_sizes=(1, 2, 1, 4, 1))
    a, b = generate_synthetic(cfg), generate_synthetic(cfg)
    for x, y in ((a.train, b.train), (a.eval, b.eval)):
        assert x.labels.tobytes() == y.labels.tobytes() and x.dense.tobytes() == y.dense.tobytes()
        for name in x.schema.sparse_features:
            assert x.sparse[name].values.tobytes() == y.sparse[name].values.tobytes()
    assert a.eval_probabilities.tobytes() == b.eval_probabilities.tobytes()
    c = generate_synthetic(SyntheticConfig(num_examples=2000, num_eval_examples=500, num_sparse=5,
                                           bag_sizes=(1, 2, 1, 4, 1), seed=1))
    assert not np.array_equal(a.train.sparse["C1"].values, c.train.sparse["C1"].values)
    assert a.train.sparse["C4"].offsets[-1] == 4 * 2000


def test_shape_skew_and_ground_truth_auc():
    ds = generate_synthetic(SyntheticConfig(num_examples=20_000, num_eval_examples=60_000))
    assert ds.train.dense.shape == (20_000, 13) and len(ds.train.sparse) == 26
    assert ds.cardinalities["C1"] == 40_000 and ds.cardinalities["C6"] == 3
    assert (ds.train.dense >= 0).all()
    values = ds.train.sparse["C1"].values
    ids, counts = np.unique(values, return_counts=True)
    assert counts.max() > 0.05 * len(values)  # power law: a hot ID
    assert not set(np.sort(ids)[:3].tolist()) & {0, 1, 2}  # raw 64-bit IDs, not ranks
    assert np.unique(ds.train.sparse["C6"].values).shape[0] <= 3
    assert 0.22 <= ds.eval.labels.mean() <= 0.28
    assert 0.78 <= auc(ds.eval.labels, ds.eval_probabilities) <= 0.82
