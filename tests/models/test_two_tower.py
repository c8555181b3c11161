"""The two-tower model and its in-batch softmax, against plain PyTorch written out row by row."""

from __future__ import annotations

import math

import pytest
import torch

from terarec.errors import ConfigError
from terarec.models import InputSpec, ModelConfig, ModelInput, ModelType, TwoTower, TwoTowerConfig, in_batch_softmax_loss


def _reference_loss(users, items, ids, temperature, log_q, positives) -> torch.Tensor:
    """The sampled softmax of each user, one at a time, in plain Python over the items."""
    losses = []
    for i in range(users.shape[0]):
        p = int(positives[i])
        terms = []
        for j in range(items.shape[0]):
            if j != p and int(ids[j]) == int(ids[p]):
                continue  # the same item as the positive is not a negative
            logit = float(users[i] @ items[j]) / temperature
            if log_q is not None:
                logit -= float(log_q[j])
            terms.append((j, logit))
        top = max(logit for _, logit in terms)
        norm = top + math.log(sum(math.exp(logit - top) for _, logit in terms))
        losses.append(norm - dict(terms)[p])
    return torch.tensor(sum(losses) / len(losses))


@pytest.mark.parametrize("correct", [False, True])
def test_in_batch_softmax_matches_the_reference(correct: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(6, 5, generator=generator), dim=1)
    items = torch.nn.functional.normalize(torch.randn(9, 5, generator=generator), dim=1)
    ids = torch.tensor([3, 4, 3, 5, 6, 7, 4, 8, 9])  # repeats: accidental hits to mask
    log_q = torch.log(torch.rand(9, generator=generator) * 0.5 + 0.01) if correct else None
    positives = torch.tensor([0, 1, 2, 3, 4, 5]) + 3  # as on rank 1 of a global batch
    got = in_batch_softmax_loss(users, items, ids, 0.1, log_q, positives)
    expected = _reference_loss(users, items, ids, 0.1, log_q, positives)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_log_q_correction_lowers_the_penalty_on_popular_negatives() -> None:
    users = torch.eye(3)
    items = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.6, 0.8, 0]])
    ids = torch.tensor([1, 2, 3])
    popular_third = torch.log(torch.tensor([0.01, 0.01, 0.98]))
    plain = in_batch_softmax_loss(users[:2], items, ids, 0.5, None)
    corrected = in_batch_softmax_loss(users[:2], items, ids, 0.5, popular_third)
    assert corrected < plain


def test_gradients_reach_both_towers() -> None:
    spec = InputSpec(0, ("user", "item"), (4, 4))
    config = ModelConfig(type=ModelType.TWO_TOWER, two_tower=TwoTowerConfig(("user",), ("item",), mlp=(8,), output_dim=3))
    torch.manual_seed(0)
    model = TwoTower(config, spec)
    pooled = torch.randn(5, 8, requires_grad=True)
    users, items = model.towers(ModelInput(torch.zeros(5, 0), pooled, spec, model.layout))
    in_batch_softmax_loss(users, items, torch.arange(5), 0.05).backward()
    assert pooled.grad[:, :4].abs().sum() > 0 and pooled.grad[:, 4:].abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    assert torch.allclose(items.norm(dim=1), torch.ones(5))


def test_tower_features_are_checked() -> None:
    spec = InputSpec(0, ("user", "item"), (4, 4))
    with pytest.raises(ConfigError, match=r"model.two_tower.item_features: \['sku'\] are not features"):
        TwoTower(ModelConfig(two_tower=TwoTowerConfig(("user",), ("sku",))), spec)
    with pytest.raises(ConfigError, match="model.two_tower.user_features is empty"):
        TwoTower(ModelConfig(two_tower=TwoTowerConfig((), ("item",))), spec)
    with pytest.raises(ConfigError, match="in both user_features and item_features"):
        TwoTowerConfig(("user",), ("user",))
    dense = TwoTower(ModelConfig(two_tower=TwoTowerConfig(("user",), ("item",))), InputSpec(2, ("user", "item"), (4, 4)))
    assert dense.user_tower[0].in_features == 6 and dense.item_tower[0].in_features == 4
