"""FixedTable against plain PyTorch: nn.EmbeddingBag and the torch sparse optimizers."""

from __future__ import annotations

from tests.embedding import embedding_reference as ref
import numpy as np
import pytest
import torch

from terarec.embedding import (
    EmbeddingTableConfig,
    FixedTable,
    InitConfig,
    InitType,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
)

STEPS = 5


def _batches(num_steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(num_steps):
        lengths = rng.integers(0, 6, size=16)
        lengths[3] = 0
        ids = rng.integers(0, 30, size=int(lengths.sum()))  # 30 IDs into 50 rows: repeats
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        yield torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(offsets.astype(np.int64))


class _RowwiseAdagrad:
    """Hand-written FBGEMM EXACT_ROWWISE_ADAGRAD over a dense weight gradient."""

    def __init__(self, weight: torch.Tensor, lr: float, eps: float) -> None:
        self.weight, self.lr, self.eps = weight, lr, eps
        self.state = torch.zeros(weight.shape[0])

    @torch.no_grad()
    def step(self) -> None:
        grad = self.weight.grad.coalesce()
        rows, g = grad.indices()[0], grad.values()
        self.state[rows] += (g * g).mean(dim=1)
        self.weight[rows] -= (self.lr / (self.state[rows].sqrt() + self.eps))[:, None] * g

    def zero_grad(self) -> None:
        self.weight.grad = None


def _torch_optimizer(kind: OptimizerType, weight: torch.Tensor, cfg: OptimizerConfig):
    if kind is OptimizerType.SGD:
        return torch.optim.SGD([weight], lr=cfg.learning_rate)
    if kind is OptimizerType.ADAGRAD:
        return torch.optim.Adagrad(
            [weight], lr=cfg.learning_rate, eps=cfg.eps, initial_accumulator_value=cfg.initial_accumulator_value
        )
    if kind is OptimizerType.ADAM:
        return torch.optim.SparseAdam([weight], lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    return _RowwiseAdagrad(weight, cfg.learning_rate, cfg.eps)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("pooling", list(PoolingType))
@pytest.mark.parametrize("kind", list(OptimizerType))
def test_matches_torch_embedding_bag_and_optimizer(pooling: PoolingType, kind: OptimizerType) -> None:
    opt_cfg = OptimizerConfig(kind, learning_rate=0.05, eps=1e-6, initial_accumulator_value=0.1)
    if kind is OptimizerType.ROWWISE_ADAGRAD:
        opt_cfg = OptimizerConfig(kind, learning_rate=0.05, eps=1e-6)
    config = EmbeddingTableConfig("t", 50, 8, ("f",), pooling=pooling, optimizer=opt_cfg, init=InitConfig(scale=0.1))
    table = FixedTable(config, seed=3)
    bag = torch.nn.EmbeddingBag(50, 8, mode=pooling.value, sparse=True, include_last_offset=True)
    with torch.no_grad():
        bag.weight.copy_(torch.tensor(table.weights))
    optimizer = _torch_optimizer(kind, bag.weight, opt_cfg)
    rng = np.random.default_rng(1)
    for values, offsets in _batches(STEPS):
        rows = torch.from_numpy(table.prepare(values, offsets).rows)
        expected = bag(rows, offsets)
        torch.testing.assert_close(table.lookup(values, offsets), expected.detach(), rtol=1e-6, atol=1e-7)
        grad = torch.from_numpy(rng.standard_normal((16, 8)).astype(np.float32))
        optimizer.zero_grad()
        (expected * grad).sum().backward()
        optimizer.step()
        table.apply_gradients(values, offsets, grad)
        torch.testing.assert_close(torch.tensor(table.weights), bag.weight.detach(), rtol=1e-6, atol=1e-7)
    assert table.step == STEPS


def test_rows_are_hashed_ids() -> None:
    table = FixedTable(EmbeddingTableConfig("t", 1000, 4, ("f",)))
    ids = np.array([5, -5, 2**62, 5], dtype=np.int64)
    prepared = table.prepare(torch.from_numpy(ids), torch.tensor([0, 2, 4]))
    np.testing.assert_array_equal(prepared.rows, ref.hash_to_rows(ids, 1000))


def test_initial_rows_follow_the_counter_based_formula() -> None:
    config = EmbeddingTableConfig("t_user", 300, 5, ("f",), init=InitConfig(InitType.NORMAL, scale=0.3))
    table = FixedTable(config, seed=11)
    from terarec.embedding._hashing import derive_table_seed


    expected = ref.init_normal(np.arange(300, dtype=np.int64), 5, int(derive_table_seed(11, "t_user")), 0.3)
    np.testing.assert_allclose(table.weights, expected, rtol=1e-6, atol=1e-7)
    zeros = FixedTable(EmbeddingTableConfig("z", 10, 3, ("f",), init=InitConfig(InitType.ZEROS)))
    assert not zeros.weights.any()


def test_rows_do_not_depend_on_table_size_with_fixed_scale() -> None:
    small = FixedTable(EmbeddingTableConfig("t", 100, 4, ("f",), init=InitConfig(scale=0.1)))
    large = FixedTable(EmbeddingTableConfig("t", 300, 4, ("f",), init=InitConfig(scale=0.1)))
    np.testing.assert_array_equal(small.weights, large.weights[:100])


def test_adagrad_state_starts_at_initial_accumulator_value() -> None:
    for kind in (OptimizerType.ADAGRAD, OptimizerType.ROWWISE_ADAGRAD):
        cfg = OptimizerConfig(kind, initial_accumulator_value=0.25)
        table = FixedTable(EmbeddingTableConfig("t", 10, 3, ("f",), optimizer=cfg))
        assert (table.state == 0.25).all()
    adam = FixedTable(EmbeddingTableConfig("t", 10, 3, ("f",), optimizer=OptimizerConfig(OptimizerType.ADAM)))
    assert adam.state.shape == (10, 6) and not adam.state.any()


def test_weights_view_is_read_only() -> None:
    table = FixedTable(EmbeddingTableConfig("t", 10, 3, ("f",)))
    with pytest.raises(ValueError):
        table.weights[0, 0] = 1.0


def test_repr_names_size_and_optimizer() -> None:
    text = repr(FixedTable(EmbeddingTableConfig("t_user", 1000, 16, ("user",))))
    assert "t_user" in text and "1000" in text and "rowwise_adagrad" in text and "68000" in text
