"""The two-tower retrieval model and its in-batch sampled-softmax loss."""

from __future__ import annotations

import torch
from torch.nn import functional

from terarec.embedding import OptimizerConfig, OptimizerType, PoolingType
from terarec.errors import ConfigError
from terarec.models.base import RecModel
from terarec.models.config import ModelConfig
from terarec.models.inputs import InputSpec, ModelInput
from terarec.models.layers import MLP

__all__ = ["TwoTower", "in_batch_softmax_loss"]


class TwoTower(RecModel):
    """A user tower and an item tower (Yi et al., "Sampling-Bias-Corrected Neural Modeling for
    Large Corpus Item Recommendations", RecSys 2019).

    Each tower concatenates its features' pooled embeddings (``model.two_tower.user_features``,
    ``item_features``; the user tower also reads the dense features, the query's context) and maps them by an MLP (``model.two_tower.mlp`` hidden widths, none by
    default: one linear map) to an L2-normalised vector of ``output_dim``; a
    user-item pair scores ``<u, v> / temperature``. Retrieval ranks every item by that score,
    so item vectors can be indexed once (``terarec index``) and searched per user. A bag
    feature such as ``history`` pools the embeddings of its items (sum or mean, per table).

    Trained on positive user-item events with the other items of the batch as negatives
    (:func:`in_batch_softmax_loss`). Options: ``model.two_tower`` and the MLP options of
    :class:`~terarec.models.ModelConfig`; other arguments as :class:`~terarec.models.RecModel`.

    Shape:
        - Input: :class:`~terarec.models.ModelInput` holding both towers' features
        - Output: :math:`(B)`, the score of each row's user with its item

    Example::

        >>> from terarec.models import ModelType, TwoTowerConfig
        >>> _ = torch.manual_seed(0)
        >>> spec = InputSpec(0, ("user", "history", "item"), (8, 8, 8))
        >>> towers = TwoTowerConfig(user_features=("user", "history"), item_features=("item",), output_dim=4)
        >>> model = TwoTower(ModelConfig(type=ModelType.TWO_TOWER, two_tower=towers), spec)
        >>> inputs = ModelInput(torch.zeros(3, 0), torch.randn(3, 24), spec, model.layout)
        >>> users, items = model.towers(inputs)
        >>> users.shape, bool(torch.allclose(users.norm(dim=1), torch.ones(3)))
        (torch.Size([3, 4]), True)
        >>> bool(torch.allclose(model(inputs), (users * items).sum(1) / 0.2))
        True
    """

    embedding_optimizer = OptimizerConfig(OptimizerType.ROWWISE_ADAGRAD, learning_rate=0.1)
    default_embedding_dim = 64
    # A history bag holds tens of items: its mean keeps the user vector's scale independent of its length.
    default_pooling = PoolingType.MEAN

    def __init__(self, config: ModelConfig, spec: InputSpec) -> None:
        super().__init__(spec)
        settings = config.two_tower
        self.user_features = settings.user_features
        self.item_features = settings.item_features
        self.temperature = float(settings.temperature)
        dims = dict(zip(spec.feature_names, spec.embedding_dims))
        for key, names in (("user_features", self.user_features), ("item_features", self.item_features)):
            if not names:
                raise ConfigError(f"model.two_tower.{key} is empty: name the tower's features (or train on data.format=interactions)")
            unknown = [name for name in names if name not in dims]
            if unknown:
                raise ConfigError(f"model.two_tower.{key}: {unknown} are not features of the data ({list(spec.feature_names)})")
        layers = [*settings.mlp, settings.output_dim]
        user_width = spec.num_dense + sum(dims[n] for n in self.user_features)
        self.user_tower = MLP.from_config(config, user_width, layers, final_activation=False)
        self.item_tower = MLP.from_config(config, sum(dims[n] for n in self.item_features), layers, final_activation=False)

    def _tower(self, tower: MLP, names: tuple[str, ...], inputs: ModelInput, dense: bool) -> torch.Tensor:
        embeddings = inputs.embeddings()
        parts = ([inputs.dense] if dense else []) + [embeddings[name] for name in names]
        return functional.normalize(tower(torch.cat(parts, dim=1)), dim=1)

    def user_vectors(self, inputs: ModelInput) -> torch.Tensor:
        """The users' unit vectors, :math:`(B, D_{out})`, from the dense features (the query's
        context) and the user features."""
        return self._tower(self.user_tower, self.user_features, inputs, dense=True)

    def item_vectors(self, inputs: ModelInput) -> torch.Tensor:
        """The items' unit vectors, :math:`(B, D_{out})`."""
        return self._tower(self.item_tower, self.item_features, inputs, dense=False)

    def towers(self, inputs: ModelInput) -> tuple[torch.Tensor, torch.Tensor]:
        """Both towers' vectors: ``(users, items)``."""
        return self.user_vectors(inputs), self.item_vectors(inputs)

    def forward(self, inputs: ModelInput) -> torch.Tensor:
        users, items = self.towers(inputs)
        return (users * items).sum(dim=1) / self.temperature


def in_batch_softmax_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    item_ids: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax over the batch's items: each user's own item against every other.

    User ``i`` is scored against every item ``j`` as ``<u_i, v_j> / temperature - log_q_j``;
    the loss is the cross-entropy of its positive ``positives[i]``. An item equal to the
    positive at another position (the same ID) is not a negative: its logit is masked.

    Args:
        users (Tensor): the users' vectors.
        items (Tensor): the items' vectors, of these users and (in distributed training) of the
            other ranks' users.
        item_ids (Tensor): the items' 64-bit IDs.
        temperature (float): divides the dot products.
        log_q (Tensor, optional): the log of each item's probability of being in a batch (its
            share of the training events); ``None`` applies no correction. Default: ``None``
        positives (Tensor, optional): each user's column in ``items``; ``None`` means ``i``.
            Default: ``None``

    Shape:
        - users: :math:`(B, D)`; items: :math:`(N, D)`, :math:`N \\ge B`
        - item_ids, log_q: :math:`(N)`; positives: :math:`(B)`
        - Output: scalar, the mean over users

    Example::

        >>> users = torch.eye(2)
        >>> loss = in_batch_softmax_loss(users, users, torch.tensor([7, 8]), temperature=1.0)
        >>> round(float(loss), 4) == round(float(torch.log(1 + torch.exp(torch.tensor(-1.0)))), 4)
        True
    """
    if positives is None:
        positives = torch.arange(users.shape[0])
    logits = users @ items.T / temperature
    if log_q is not None:
        logits = logits - log_q.to(logits.dtype)
    accidental = item_ids.unsqueeze(0) == item_ids[positives].unsqueeze(1)
    accidental[torch.arange(users.shape[0]), positives] = False
    logits = logits.masked_fill(accidental, torch.finfo(logits.dtype).min)
    return functional.cross_entropy(logits, positives)
