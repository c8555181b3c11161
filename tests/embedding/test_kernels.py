"""Every kernel of the embedding layer's hashing, pooling and update modules against its NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from terarec.embedding import _dedupe_kernels, _hashing, _init_kernels, _pooling_kernels, _update_kernels
from terarec.embedding._bf16 import bf16_to_float32, float32_to_bf16
from tests.embedding import embedding_reference as ref

ID_KINDS = ["int32", "int64"]
OPTIMIZERS = ["sgd", "adagrad", "rowwise_adagrad", "adam"]


def _input(id_kind: str, seed: int = 0, batch: int = 37, num_embeddings: int = 50):
    rng = np.random.default_rng(seed)
    ids, offsets = ref.random_jagged(rng, batch, id_kind)
    rows = np.empty_like(ids)
    _hashing.hash_to_rows(ids, num_embeddings, rows)
    return rng, ids, offsets, rows


def test_splitmix64_known_values() -> None:
    # Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c): the first outputs
    # are splitmix64(0), splitmix64(golden), ...
    assert _hashing.splitmix64(np.uint64(0)) == np.uint64(0xE220A8397B1DCDAF)


@pytest.mark.parametrize("id_kind", ID_KINDS)
def test_hash_to_rows(id_kind: str) -> None:
    _, ids, _, rows = _input(id_kind, num_embeddings=97)
    np.testing.assert_array_equal(rows, ref.hash_to_rows(ids, 97))
    assert rows.min() >= 0 and rows.max() < 97


def test_hash_to_rows_is_pinned() -> None:
    # Regression: rows of saved tables depend on this formula; it must never change.
    ids = np.array([0, 1, -1, 2**63 - 1, -(2**63)], dtype=np.int64)
    rows = np.empty_like(ids)
    _hashing.hash_to_rows(ids, 1000, rows)
    assert rows.tolist() == [535, 465, 936, 39, 915]


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_init_rows(kind: str) -> None:
    rows = np.array([0, 1, 2, 10**12, 2**63 - 1], dtype=np.int64)
    out = np.empty((5, 7), dtype=np.float32)
    kernel = _init_kernels.init_rows_uniform if kind == "uniform" else _init_kernels.init_rows_normal
    kernel(out, rows, np.uint64(1234), 0.5)
    expected = (ref.init_uniform if kind == "uniform" else ref.init_normal)(rows, 7, 1234, 0.5)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    if kind == "uniform":
        np.testing.assert_array_equal(out, expected)
        assert np.abs(out).max() <= 0.5


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_init_rows_depends_only_on_seed_row_and_column(kind: str) -> None:
    kernel = _init_kernels.init_rows_uniform if kind == "uniform" else _init_kernels.init_rows_normal
    whole = np.empty((100, 4), dtype=np.float32)
    kernel(whole, np.arange(100, dtype=np.int64), np.uint64(7), 1.0)
    part = np.empty((3, 4), dtype=np.float32)
    kernel(part, np.array([42, 5, 99], dtype=np.int64), np.uint64(7), 1.0)
    np.testing.assert_array_equal(part, whole[[42, 5, 99]])
    other_seed = np.empty((100, 4), dtype=np.float32)
    kernel(other_seed, np.arange(100, dtype=np.int64), np.uint64(8), 1.0)
    assert not np.array_equal(other_seed, whole)


def test_init_rows_statistics() -> None:
    out = np.empty((4000, 8), dtype=np.float32)
    _init_kernels.init_rows_normal(out, np.arange(4000, dtype=np.int64), np.uint64(3), 2.0)
    assert abs(out.mean()) < 0.05 and abs(out.std() - 2.0) < 0.05
    _init_kernels.init_rows_uniform(out, np.arange(4000, dtype=np.int64), np.uint64(3), 2.0)
    assert abs(out.mean()) < 0.05 and abs(out.std() - 2.0 / np.sqrt(3.0)) < 0.05


def test_derive_table_seed_is_stable() -> None:
    a = _hashing.derive_table_seed(0, "t_user")
    assert a == _hashing.derive_table_seed(0, "t_user") and isinstance(a, np.uint64)
    assert a != _hashing.derive_table_seed(1, "t_user") != _hashing.derive_table_seed(0, "t_item")


@pytest.mark.parametrize("id_kind", ID_KINDS)
def test_dedupe(id_kind: str) -> None:
    _, _, offsets, rows = _input(id_kind)
    got = _dedupe_kernels.dedupe(rows, offsets, 50)
    for array, expected in zip(got, ref.dedupe(rows, offsets)):
        np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize("num_rows", [1, 2, 2047, 2048, 2049, 200_000, 40_000_000, 2**54, 2**62])
def test_dedupe_radix_passes(num_rows: int) -> None:
    # One, two, three, five and six radix passes, and the digit boundaries between them; 2**54
    # and 2**62 rows with 3000 positions need 66- and 74-bit keys: the indirect sort, ending
    # after an odd and an even number of passes.
    rng = np.random.default_rng(num_rows % 1000)
    rows = rng.integers(0, num_rows, 3000, dtype=np.int64)
    rows[:3] = [0, num_rows - 1, num_rows - 1]
    offsets = np.array([0, 1000, 1000, 3000], dtype=np.int64)
    for array, expected in zip(_dedupe_kernels.dedupe(rows, offsets, num_rows), ref.dedupe(rows, offsets)):
        np.testing.assert_array_equal(array, expected)


def test_dedupe_empty() -> None:
    unique_rows, occurrence_offsets, occurrences, bag_of = _dedupe_kernels.dedupe(
        np.empty(0, dtype=np.int64), np.zeros(4, dtype=np.int64), 10
    )
    assert unique_rows.shape == (0,) and occurrence_offsets.tolist() == [0]
    assert occurrences.shape == bag_of.shape == (0,)


@pytest.mark.parametrize("id_kind", ID_KINDS)
@pytest.mark.parametrize("mean", [False, True])
def test_pool(id_kind: str, mean: bool) -> None:
    rng, _, offsets, rows = _input(id_kind)
    weights = rng.standard_normal((50, 6)).astype(np.float32)
    out = np.full((len(offsets) - 1, 6), np.nan, dtype=np.float32)
    (_pooling_kernels.pool_mean if mean else _pooling_kernels.pool_sum)(weights, rows, offsets, out)
    np.testing.assert_allclose(out, ref.pool(weights, rows, offsets, mean), rtol=1e-5, atol=1e-5)
    assert (out[np.diff(offsets) == 0] == 0).all()


def _update_case(id_kind: str, optimizer: str, mean: bool):  # type: ignore[no-untyped-def]
    """(kernel inputs, expected weights, expected state) of one update by the plain-PyTorch reference."""
    rng, _, offsets, rows = _input(id_kind)
    dim = 6
    width = {"sgd": 0, "adagrad": dim, "rowwise_adagrad": 1, "adam": 2 * dim}[optimizer]
    # Values a bfloat16 holds exactly, so the bf16 case starts where the fp32 one does.
    weights = bf16_to_float32(float32_to_bf16(rng.standard_normal((50, dim)).astype(np.float32)))
    state = bf16_to_float32(float32_to_bf16(rng.uniform(0.0, 1.0, size=(50, width)).astype(np.float32)))
    grad = rng.standard_normal((len(offsets) - 1, dim)).astype(np.float32)
    unique_rows, occurrence_offsets, occurrences, bag_of = _dedupe_kernels.dedupe(rows, offsets, 50)
    ref_rows, g = ref.row_gradients(rows, offsets, grad, mean)
    expected_w, expected_s = ref.update(optimizer, weights, state, ref_rows, g, lr=0.1, step=3)
    args = (weights, state, unique_rows, unique_rows, occurrence_offsets, occurrences, bag_of, grad, offsets, mean)
    return args, expected_w, expected_s


def _run_update(optimizer: str, args: tuple, seed: int = 0) -> None:  # type: ignore[type-arg]
    args = (*args, np.uint64(seed))
    if optimizer == "sgd":
        _update_kernels.sgd_update(*args, 0.1)
    elif optimizer == "adagrad":
        _update_kernels.adagrad_update(*args, 0.1, 1e-8)
    elif optimizer == "rowwise_adagrad":
        _update_kernels.rowwise_adagrad_update(*args, 0.1, 1e-8)
    else:
        step_size = 0.1 * np.sqrt(1 - 0.999**3) / (1 - 0.9**3)
        _update_kernels.adam_update(*args, step_size, 0.9, 0.999, 1e-8)


@pytest.mark.parametrize("id_kind", ID_KINDS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("mean", [False, True])
def test_fused_update(id_kind: str, optimizer: str, mean: bool) -> None:
    args, expected_w, expected_s = _update_case(id_kind, optimizer, mean)
    _run_update(optimizer, args)
    weights, state = args[:2]
    np.testing.assert_allclose(state, expected_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights, expected_w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("mean", [False, True])
def test_fused_update_bf16(optimizer: str, mean: bool) -> None:
    """bfloat16 weights and state: the float32 result rounded to one of its two bfloat16
    neighbours (relative error below 2^-7 = 0.0078), untouched rows bit for bit as they were,
    and the same bits for the same seed."""
    args, expected_w, expected_s = _update_case("int64", optimizer, mean)
    weights, state = float32_to_bf16(args[0]), float32_to_bf16(args[1])
    again = (weights.copy(), state.copy())
    _run_update(optimizer, (weights, state, *args[2:]), seed=11)
    np.testing.assert_allclose(bf16_to_float32(state), expected_s, rtol=2**-7, atol=1e-6)
    np.testing.assert_allclose(bf16_to_float32(weights), expected_w, rtol=2**-7, atol=1e-3)
    untouched = np.setdiff1d(np.arange(50), args[2])  # args[2]: the slots updated
    np.testing.assert_array_equal(weights[untouched], float32_to_bf16(args[0])[untouched])
    _run_update(optimizer, (*again, *args[2:]), seed=11)
    np.testing.assert_array_equal(again[0], weights)
    np.testing.assert_array_equal(again[1], state)


def _sequential_sums(rows_of: list[np.ndarray], table: np.ndarray) -> np.ndarray:
    """``out[i] = ((0 + table[r0]) + table[r1]) + ...`` over ``rows_of[i]`` in order, in float32,
    skipping negative rows: the order every kernel must keep, whatever it unrolls."""
    longest = max((len(r) for r in rows_of), default=0)
    padded = np.full((len(rows_of), longest), -1, dtype=np.int64)
    for i, r in enumerate(rows_of):
        padded[i, : len(r)] = r
    out = np.zeros((len(rows_of), table.shape[1]), dtype=np.float32)
    for k in range(longest):  # one position of every bag at a time, so each sum keeps its order
        valid = padded[:, k] >= 0
        out[valid] += table[padded[valid, k]]
    return out


def test_pool_sums_in_position_order_skipping_missing_rows() -> None:
    rng = np.random.default_rng(3)
    lengths = np.arange(23) % 12  # every remainder of the four-row unroll, empty bags included
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    slots = rng.integers(-1, 30, size=int(offsets[-1])).astype(np.int64)  # -1: no row
    weights = rng.standard_normal((30, 24)).astype(np.float32)
    out = np.empty((len(lengths), 24), dtype=np.float32)
    _pooling_kernels.pool_sum(weights, slots, offsets, out)
    expected = _sequential_sums([slots[offsets[b] : offsets[b + 1]] for b in range(len(lengths))], weights)
    np.testing.assert_array_equal(out, expected)


def test_update_sums_gradients_in_position_order() -> None:
    rng = np.random.default_rng(4)
    bag_size = 3
    rows = rng.integers(0, 7, size=60 * bag_size).astype(np.int64)  # ~25 occurrences per row
    offsets = np.arange(61, dtype=np.int64) * bag_size
    grad = rng.standard_normal((60, 16)).astype(np.float32)
    unique_rows, occurrence_offsets, occurrences, bag_of = _dedupe_kernels.dedupe(rows, offsets, 7)
    weights = np.zeros((7, 16), dtype=np.float32)
    _update_kernels.sgd_update(weights, np.zeros((7, 0), np.float32), unique_rows, unique_rows, occurrence_offsets, occurrences, bag_of,
                        grad, offsets, False, np.uint64(0), 1.0)  # fmt: skip
    bags = [bag_of[occurrences[occurrence_offsets[u] : occurrence_offsets[u + 1]]] for u in range(len(unique_rows))]
    np.testing.assert_array_equal(weights[unique_rows], -_sequential_sums(bags, grad))
