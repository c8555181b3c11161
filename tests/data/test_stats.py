import numpy as np
import pytest

from terarec.data import DatasetStats, compute_stats, estimate_distinct, generate_synthetic, SyntheticConfig


@pytest.mark.parametrize("distinct", [1, 50, 5000, 200_000])
def test_hll_close_to_exact(distinct):
    rng = np.random.default_rng(distinct)
    ids = rng.integers(-2**63, 2**63 - 1, size=distinct, dtype=np.int64)
    values = ids[rng.integers(0, distinct, size=2 * distinct)]
    exact = np.unique(values).shape[0]
    assert abs(estimate_distinct(values) - exact) <= max(2, 0.03 * exact)


def test_compute_stats_and_json_round_trip():
    ds = generate_synthetic(SyntheticConfig(num_examples=5000, num_eval_examples=10, num_sparse=4))
    stats = compute_stats(ds.train)
    assert stats.num_rows == 5000 and stats.label_mean == pytest.approx(ds.train.labels.mean())
    for name, col in ds.train.sparse.items():
        exact = np.unique(col.values).shape[0]
        assert abs(stats.distinct_ids[name] - exact) <= max(2, 0.03 * exact)
    assert DatasetStats.from_dict(stats.to_dict()) == stats
