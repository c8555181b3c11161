"""Deep Hash Embeddings: a table kind with no table.

Kang et al., "Learning to Embed Categorical Features without Embedding Tables for
Recommendation" (KDD 2021). An ID is encoded by ``K`` hash functions shared by every ID into a
dense vector (each hash a bucket in ``[0, M)``, made uniform on ``[-1, 1]`` or standard
normal), and an MLP decodes that vector into the embedding. The parameters are the MLP's only:
their number does not grow with the IDs, no ID ever shares a row with another (only, with
probability ``~ M^-K``, its whole code), and unseen IDs still get a distinct embedding.

A Deep Hash table is an ``nn.Module``: it trains by autograd with the dense optimizer and
replicates with the dense network (data-parallel under DistributedDataParallel), unlike the
row tables of :class:`~terarec.embedding.EmbeddingCollection`, which update themselves.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from terarec.embedding._deep_hash_kernels import encode_ids
from terarec.embedding._hashing import derive_table_seed, mix_seed

from terarec.embedding.config import PoolingType
from terarec.errors import ConfigError
from terarec.sparse import JaggedTensor

__all__ = ["DeepHashCollection", "DeepHashConfig", "DeepHashEmbedding", "DeepHashTableConfig", "HashTransform"]


class HashTransform(enum.Enum):
    """How a hash bucket becomes a real number of the encoding."""

    UNIFORM = "uniform"
    GAUSSIAN = "gaussian"


@dataclass(frozen=True)
class DeepHashConfig:
    """The encoder and decoder of a Deep Hash table (``embedding.deep_hash.*``, or a table's own).

    Args:
        num_hashes (int, optional): ``K``, hash functions, the encoding's width (even for
            ``gaussian``); the paper's ``1024``. Default: ``1024``
        buckets (int, optional): ``M``, values per hash. Default: ``1_000_000``
        transform (HashTransform, optional): ``uniform`` or ``gaussian``. Default: ``gaussian``
        hidden_dims (tuple[int, ...], optional): widths of the decoder's hidden layers; the
            output layer has the embedding's width. A wide encoding into a narrow layer beat
            deeper and wider decoders of the same size in ``bench/deep_hash.py``.
            Default: ``(128,)``
        batch_norm (bool, optional): batch normalisation before each hidden activation
            (Mish), as in the paper. Default: ``True``

    Example::

        >>> DeepHashConfig(num_hashes=64, hidden_dims=(32,)).num_parameters(16)
        2672
    """

    num_hashes: int = 1024
    buckets: int = 1_000_000
    transform: HashTransform = HashTransform.GAUSSIAN
    hidden_dims: tuple[int, ...] = (128,)
    batch_norm: bool = True

    def __post_init__(self) -> None:
        if self.num_hashes < 1:
            raise ConfigError(f"deep_hash.num_hashes must be >= 1, got {self.num_hashes}")
        if self.transform is HashTransform.GAUSSIAN and self.num_hashes % 2:
            raise ConfigError(f"deep_hash.num_hashes must be even for the gaussian transform, got {self.num_hashes}")
        if not 2 <= self.buckets <= 1 << 53:
            raise ConfigError(f"deep_hash.buckets must be in [2, 2**53], got {self.buckets}")
        if any(width < 1 for width in self.hidden_dims):
            raise ConfigError(f"deep_hash.hidden_dims must all be >= 1, got {list(self.hidden_dims)}")

    def num_parameters(self, embedding_dim: int) -> int:
        """Parameters of the decoder for ``embedding_dim`` outputs (batch norm's two per unit included).

        Example::

            >>> DeepHashConfig(num_hashes=8, hidden_dims=(4,), batch_norm=False).num_parameters(2)
            46
        """
        widths = [self.num_hashes, *self.hidden_dims, embedding_dim]
        linear = sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(widths, widths[1:]))
        return linear + (2 * sum(self.hidden_dims) if self.batch_norm else 0)

    def flops_per_id(self, embedding_dim: int) -> float:
        """Multiply-adds of encoding one ID, forward and backward (``6`` FLOPs per weight, as
        torch's FLOP counter counts a linear layer)."""
        widths = [self.num_hashes, *self.hidden_dims, embedding_dim]
        return 6.0 * sum(fan_in * fan_out for fan_in, fan_out in zip(widths, widths[1:]))


@dataclass(frozen=True)
class DeepHashTableConfig:
    """One Deep Hash table: the features it embeds and the width it gives them.

    Args:
        name (str): table name.
        embedding_dim (int): output width per feature.
        feature_names (tuple[str, ...]): features sharing this table (and so its hashes and decoder).
        pooling (PoolingType, optional): how a bag's embeddings combine. Default: ``PoolingType.SUM``
        deep_hash (DeepHashConfig, optional): the encoder and decoder. Default: ``DeepHashConfig()``
    """

    name: str
    embedding_dim: int
    feature_names: tuple[str, ...]
    pooling: PoolingType = PoolingType.SUM
    deep_hash: DeepHashConfig = DeepHashConfig()

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ConfigError(f"table {self.name!r}: embedding_dim must be >= 1, got {self.embedding_dim}")
        if not self.feature_names:
            raise ConfigError(f"table {self.name!r}: feature_names must name at least one feature")

    @property
    def num_parameters(self) -> int:
        return self.deep_hash.num_parameters(self.embedding_dim)


class DeepHashEmbedding(nn.Module):
    """A Deep Hash table: pools, per bag, the decoded hash encodings of its IDs.

    Each distinct ID of the batch is encoded and decoded once; bags then gather and pool
    those rows (sum or mean; an empty bag is zeros), for every feature of the table, each
    row scaled by its ID's weight when the bags carry weights.

    Args:
        config (DeepHashTableConfig): the table.
        seed (int, optional): picks the hash functions (with the table's name); the decoder's
            weights come from torch's RNG. Default: ``0``

    Shape:
        - Input: per feature of the table, a :class:`~terarec.sparse.JaggedTensor` of ``B`` bags
        - Output: :math:`(B, F_t \\cdot D)`, the features side by side

    Example::

        >>> _ = torch.manual_seed(0)
        >>> table = DeepHashEmbedding(DeepHashTableConfig("t", 4, ("user",), deep_hash=DeepHashConfig(16, hidden_dims=(8,))))
        >>> bags = JaggedTensor(torch.tensor([7, 9, 7]), torch.tensor([0, 2, 3]))
        >>> table({"user": bags}).shape
        torch.Size([2, 4])
    """

    def __init__(self, config: DeepHashTableConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        table_seed = derive_table_seed(seed, config.name)
        hashes = np.arange(config.deep_hash.num_hashes, dtype=np.uint64)
        self._hash_seeds = np.array([mix_seed(table_seed, h) for h in hashes], dtype=np.uint64)
        settings = config.deep_hash
        layers: list[nn.Module] = []
        width = settings.num_hashes
        for hidden in settings.hidden_dims:
            layers.append(nn.Linear(width, hidden))
            if settings.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.Mish())
            width = hidden
        layers.append(nn.Linear(width, config.embedding_dim))
        self.decoder = nn.Sequential(*layers)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """The dense hash encoding of ``ids`` (:math:`(N)` ``int64``), :math:`(N, K)` ``float32``.

        Example::

            >>> settings = DeepHashConfig(6, transform=HashTransform.UNIFORM, hidden_dims=())
            >>> codes = DeepHashEmbedding(DeepHashTableConfig("t", 4, ("user",), deep_hash=settings)).encode(torch.tensor([3, 3, 4]))
            >>> bool((codes[0] == codes[1]).all()), bool((codes[0] == codes[2]).all()), bool(codes.abs().max() <= 1)
            (True, False, True)
        """
        settings = self.config.deep_hash
        values = np.ascontiguousarray(ids.numpy(), dtype=np.int64)
        out = np.empty((values.shape[0], settings.num_hashes), dtype=np.float32)
        encode_ids(values, self._hash_seeds, settings.buckets, settings.transform is HashTransform.GAUSSIAN, out)
        return torch.from_numpy(out)

    def forward(self, sparse: Mapping[str, JaggedTensor]) -> torch.Tensor:
        features = [sparse[name] for name in self.config.feature_names]
        ids = torch.cat([jagged.values for jagged in features])
        distinct, inverse = torch.unique(ids, return_inverse=True)
        # Batch norm needs two rows to estimate a variance; a single distinct ID keeps its
        # running statistics (as in evaluation) rather than failing.
        decoder_training = self.decoder.training
        if decoder_training and distinct.numel() < 2:
            self.decoder.eval()
        try:
            vectors = self.decoder(self.encode(distinct))
        finally:
            self.decoder.train(decoder_training)
        mean = self.config.pooling is PoolingType.MEAN
        pooled, start = [], 0
        for jagged in features:
            count = jagged.values.numel()
            indices, starts = inverse[start : start + count], jagged.offsets[:-1]
            if jagged.weights is None:
                bags = functional.embedding_bag(indices, vectors, starts, mode="mean" if mean else "sum")
            else:
                bags = functional.embedding_bag(indices, vectors, starts, mode="sum", per_sample_weights=jagged.weights)
                if mean:
                    bags = bags / jagged.lengths().clamp(min=1).unsqueeze(1)
            pooled.append(bags)
            start += count
        return torch.cat(pooled, dim=1)


class DeepHashCollection(nn.Module):
    """Every Deep Hash table of a model, called like the row tables' collection: all their
    features' pooled embeddings side by side, tables and features in config order.

    Args:
        tables (Sequence[DeepHashTableConfig]): the tables (may be none).
        seed (int, optional): see :class:`DeepHashEmbedding`. Default: ``0``

    Shape:
        - Input: per feature, a :class:`~terarec.sparse.JaggedTensor` of ``B`` bags
        - Output: :math:`(B, \\sum_f D_f)`

    Example::

        >>> config = DeepHashConfig(16, hidden_dims=(8,))
        >>> tables = DeepHashCollection([DeepHashTableConfig("a", 3, ("a",), deep_hash=config)])
        >>> tables.feature_names, tables.embedding_dims
        (('a',), (3,))
    """

    def __init__(self, tables: Sequence[DeepHashTableConfig] = (), seed: int = 0) -> None:
        super().__init__()
        self.configs = tuple(tables)
        self.tables = nn.ModuleDict({config.name: DeepHashEmbedding(config, seed) for config in self.configs})

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(name for config in self.configs for name in config.feature_names)

    @property
    def embedding_dims(self) -> tuple[int, ...]:
        return tuple(config.embedding_dim for config in self.configs for _ in config.feature_names)

    def __len__(self) -> int:
        return len(self.configs)

    def forward(self, sparse: Mapping[str, JaggedTensor]) -> torch.Tensor:
        missing = [name for name in self.feature_names if name not in sparse]
        if missing:
            raise ValueError(f"sparse features {missing} are missing from the batch (got {sorted(sparse)})")
        return torch.cat([table(sparse) for table in self.tables.values()], dim=1)
