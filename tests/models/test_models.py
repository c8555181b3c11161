"""One contract suite for every registered model: shapes, gradients, cost, determinism, errors."""

from __future__ import annotations

import pytest
import torch

from terarec.errors import ConfigError
from terarec.models import (
    MODELS,
    Activation,
    DCNStructure,
    DCNv2Config,
    InputSpec,
    ModelConfig,
    ModelInput,
    ModelType,
    RecModel,
    TwoTowerConfig,
    build_model,
    model_class,
)

FEATURES = ("user", "item", "ad")


def _spec(model_type: ModelType, dims: tuple[int, ...] = (4, 4, 4), num_dense: int = 2) -> InputSpec:
    deep = model_class(model_type).layout.deep
    return InputSpec(num_dense, FEATURES, dims if deep else (0,) * len(dims))


def _inputs(model: RecModel, batch: int = 6, seed: int = 0) -> ModelInput:
    generator = torch.Generator().manual_seed(seed)
    width = sum(model.layout.table_dim(d) for d in model.spec.embedding_dims)
    pooled = torch.randn(batch, width, generator=generator, requires_grad=True)
    return ModelInput(torch.randn(batch, model.spec.num_dense, generator=generator), pooled, model.spec, model.layout)


def _config(model_type: ModelType, **options: object) -> ModelConfig:
    """The model's config; the two towers split the features between them, with a hidden layer
    so that batch norm, dropout and activations are exercised."""
    towers = TwoTowerConfig(user_features=("user", "ad"), item_features=("item",), mlp=(8,))
    return ModelConfig(type=model_type, two_tower=towers, **options)  # type: ignore[arg-type]


@pytest.fixture(params=list(ModelType), ids=lambda t: t.value)
def model_type(request: pytest.FixtureRequest) -> ModelType:
    return request.param


def test_every_model_type_is_registered() -> None:
    assert set(MODELS) == set(ModelType)


def test_logits_per_example_and_gradients_reach_every_pooled_column(model_type: ModelType) -> None:
    torch.manual_seed(0)
    model = build_model(_config(model_type), _spec(model_type))
    inputs = _inputs(model)
    logits = model(inputs)
    assert logits.shape == (6,)
    model.loss(logits, torch.ones(6)).backward()
    assert inputs.pooled.grad is not None
    assert (inputs.pooled.grad.abs().sum(dim=0) > 0).all(), "a pooled column gets no gradient"
    assert all(p.grad is not None for p in model.parameters()), "a parameter is not used"


def test_examples_are_scored_independently_in_eval_mode(model_type: ModelType) -> None:
    torch.manual_seed(0)
    model = build_model(_config(model_type, batch_norm=True, dropout=0.3), _spec(model_type)).eval()
    inputs = _inputs(model)
    with torch.no_grad():
        whole = model(inputs)
        first = model(ModelInput(inputs.dense[:1], inputs.pooled[:1], inputs.spec, inputs.layout))
    torch.testing.assert_close(first, whole[:1])


def test_the_same_seed_builds_the_same_weights(model_type: ModelType) -> None:
    def weights() -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        return build_model(_config(model_type), _spec(model_type)).state_dict()

    first, second = weights(), weights()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_dense_cost_counts_parameters_and_does_not_disturb_the_model(model_type: ModelType) -> None:
    torch.manual_seed(0)
    model = build_model(_config(model_type, batch_norm=True), _spec(model_type))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cost = model.dense_cost()
    assert cost.num_parameters == sum(p.numel() for p in model.parameters())
    assert cost.flops_per_example > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bf16_autocast_and_smelu_run(model_type: ModelType) -> None:
    torch.manual_seed(0)
    model = build_model(_config(model_type, activation=Activation.SMELU), _spec(model_type))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(_inputs(model))
    assert logits.shape == (6,) and torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("model_type", [ModelType.DNN, ModelType.DCNV2, ModelType.WIDE_DEEP, ModelType.FINALMLP])
def test_models_over_concatenated_embeddings_take_unequal_dims(model_type: ModelType) -> None:
    torch.manual_seed(0)
    model = build_model(_config(model_type), _spec(model_type, dims=(2, 5, 3)))
    assert model(_inputs(model)).shape == (6,)


@pytest.mark.parametrize(
    ("model_type", "reason"),
    [(ModelType.DEEPFM, "factorisation-machine"), (ModelType.XDEEPFM, "CIN"), (ModelType.DLRM, "dot interactions")],
)
def test_models_that_multiply_embeddings_refuse_unequal_dims_naming_the_key(model_type: ModelType, reason: str) -> None:
    with pytest.raises(ConfigError, match=rf"model.type={model_type.value} needs one embedding_dim .*{reason}.*embedding.embedding_dim"):
        build_model(_config(model_type), _spec(model_type, dims=(2, 5, 3)))


def test_dcnv2_structures_and_experts_build() -> None:
    spec = _spec(ModelType.DCNV2)
    for options in (
        DCNv2Config(structure=DCNStructure.STACKED),
        DCNv2Config(low_rank=2, num_experts=3),
        DCNv2Config(mlp=()),
    ):
        model = build_model(ModelConfig(dcnv2=options), spec)
        assert model(_inputs(model)).shape == (6,)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("model.type", "fm"), "model.type"),
        (("model.dropout", "1.5"), r"model.dropout must be in \[0, 1\)"),
        (("model.dcnv2.low_rank", "0"), "model.dcnv2.low_rank must be >= 1 or null"),
        (("model.dcnv2.num_layer", "4"), "did you mean 'num_layers'"),
        (("model.xdeepfm.cin_layers", "5,4"), "even cin_layers"),
        (("model.finalmlp.num_heads", "3"), "must be >= 1 and divide"),
        (("model.dnn.mlp", "0,4"), "model.dnn.mlp must be a list of widths >= 1"),
    ],
)
def test_bad_model_config_names_the_key(override: tuple[str, str], message: str) -> None:
    from terarec.train import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_experts_need_low_rank() -> None:
    from terarec.train import load_config

    with pytest.raises(ConfigError, match="set model.dcnv2.low_rank too"):
        load_config(overrides=[("model.dcnv2.low_rank", "null"), ("model.dcnv2.num_experts", "4")])
