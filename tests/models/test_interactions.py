"""Interaction layers against plain loops over their definitions."""

from __future__ import annotations

import itertools

import torch

from terarec.models import (
    MLP,
    CompressedInteraction,
    CrossNetV2,
    DotInteraction,
    FactorizationMachine,
    InteractionAggregation,
    SmeLU,
)


def test_factorization_machine_is_the_sum_of_pairwise_dot_products() -> None:
    x = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = sum((x[:, i] * x[:, j]).sum(dim=1) for i, j in itertools.combinations(range(4), 2))
    torch.testing.assert_close(FactorizationMachine()(x).squeeze(1), expected)


def test_dot_interaction_lists_each_pair_once_after_the_first_vector() -> None:
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1))
    out = DotInteraction(4)(x)
    pairs = [(x[:, i] * x[:, j]).sum(dim=1) for i in range(4) for j in range(i)]
    torch.testing.assert_close(out, torch.cat([x[:, 0], torch.stack(pairs, dim=1)], dim=1))


def test_cross_layer_follows_the_dcn_v2_formula_and_low_rank_equals_its_product() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(3, 6, dtype=torch.float64)
    low = CrossNetV2(6, num_layers=2, low_rank=2).double()
    full = CrossNetV2(6, num_layers=2).double()
    with torch.no_grad():
        for layer in range(2):
            full.weights[layer].weight.copy_((low.down[layer, 0] @ low.up[layer, 0]).T)
            low.biases[layer].normal_()
            full.biases[layer].copy_(low.biases[layer])
    x = x0
    for layer in range(2):
        w = (low.down[layer, 0] @ low.up[layer, 0]).T
        x = x0 * (x @ w.T + low.biases[layer]) + x
    torch.testing.assert_close(low(x0), x)
    torch.testing.assert_close(full(x0), x)


def test_cross_mixture_of_experts_mixes_each_expert_by_its_gate() -> None:
    torch.manual_seed(0)
    net = CrossNetV2(5, num_layers=1, low_rank=3, num_experts=2).double()
    x0 = torch.randn(4, 5, dtype=torch.float64)
    gate = torch.softmax(net.gates[0](x0), dim=1)
    expected = x0.clone()
    for e in range(2):
        low = torch.tanh(torch.tanh(x0 @ net.down[0, e]) @ net.core[0, e])
        expected += gate[:, e : e + 1] * x0 * (low @ net.up[0, e] + net.biases[0])
    torch.testing.assert_close(net(x0), expected)


def test_cin_matches_its_definition() -> None:
    torch.manual_seed(0)
    cin = CompressedInteraction(3, (4, 2), split_half=True).double()
    x0 = torch.randn(2, 3, 5, dtype=torch.float64)
    hidden, outputs = x0, []
    for k, conv in enumerate(cin.convs):
        weight, bias = conv.weight[:, :, 0], conv.bias  # (H_k, F * H_{k-1})
        maps = torch.zeros(2, weight.shape[0], 5, dtype=torch.float64)
        for h in range(weight.shape[0]):
            for i in range(3):
                for j in range(hidden.shape[1]):
                    maps[:, h] += weight[h, i * hidden.shape[1] + j] * x0[:, i] * hidden[:, j]
            maps[:, h] += bias[h]
        if k == 0:
            hidden, out = maps[:, :2], maps[:, 2:]
        else:
            out = maps
        outputs.append(out.sum(dim=2))
    torch.testing.assert_close(cin(x0), torch.cat(outputs, dim=1))
    assert cin.out_features == 4


def test_interaction_aggregation_is_linear_plus_per_head_bilinear() -> None:
    torch.manual_seed(0)
    layer = InteractionAggregation(4, 6, num_heads=2).double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    expected = layer.linear_x(x) + layer.linear_y(y)
    for h in range(2):
        xh, yh = x[:, 2 * h : 2 * h + 2], y[:, 3 * h : 3 * h + 3]
        expected = expected + ((xh @ layer.bilinear[h]) * yh).sum(dim=1, keepdim=True)
    torch.testing.assert_close(layer(x, y), expected)


def test_smelu_is_continuous_with_a_continuous_gradient() -> None:
    beta = 0.5
    x = torch.tensor([-beta, beta], dtype=torch.float64)
    eps = 1e-6
    act = SmeLU(beta)
    torch.testing.assert_close(act(x - eps), act(x + eps), atol=1e-5, rtol=0)
    points = torch.tensor([-beta - eps, -beta + eps, beta - eps, beta + eps], dtype=torch.float64, requires_grad=True)
    act(points).sum().backward()
    torch.testing.assert_close(points.grad, torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64), atol=1e-5, rtol=0)


def test_mlp_options_place_batch_norm_before_and_dropout_after_each_hidden_activation() -> None:
    kinds = [type(m).__name__ for m in MLP(3, [4, 5, 1], final_activation=False, batch_norm=True, dropout=0.2)]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
