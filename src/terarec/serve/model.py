"""A model directory opened for serving: scores candidates and retrieves items.

:class:`ServedModel` checks the directory against its manifest, rebuilds the dense network from
``network.safetensors`` (no pickle is ever read), opens the tables read-only and memory-mapped
(:class:`~terarec.embedding.FrozenCollection`: processes serving one directory share one copy
of the rows in the page cache) and, for a two-tower model, loads the item index. Requests are
records of feature values, read as training read its files
(:func:`~terarec.data.records_to_data`), so a served score equals the score ``terarec eval``
gives the same example.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from terarec._dataclass_codec import from_mapping
from terarec.data import Batch, BatchLoader, Schema, records_to_data
from terarec.embedding import DeepHashTableConfig, EmbeddingTableConfig, FrozenCollection
from terarec.errors import DataError
from terarec.models import TwoTower
from terarec.serve.export import INDEX, NETWORK, TABLES, verify_model_dir
from terarec.serve.item_index import ItemIndex
from terarec.train.builders import build_network
from terarec.train.config import Config, DensePrecision

__all__ = ["Retrieved", "ServedModel", "freeze_long_lived_objects", "tiered_caches"]


def freeze_long_lived_objects() -> None:
    """Moves every object alive now out of the garbage collector's reach (``gc.freeze``).

    A serving process holds millions of long-lived objects (torch, numba, the web stack, the
    model), and a full collection walks all of them while holding the interpreter, which holds up
    every request for 100 ms and more. Called once the served model is loaded (at start and after
    each swap), later collections walk only what requests allocate. A model dropped after a swap
    is still freed: nothing in it forms a reference cycle, so its reference count frees it.
    """
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class Retrieved:
    """The items :meth:`ServedModel.retrieve` found, best first, and their scores (the inner
    product of the user's and the item's unit vectors)."""

    items: list[str]
    scores: list[float]


def tiered_caches(tables: Sequence[EmbeddingTableConfig], cache_bytes: int | None) -> dict[str, int]:
    """Each tiered table's cache: its share of ``cache_bytes`` by the size of its weights (at least
    one row), or (with ``None``) the cache it trained with.

    Example::

        >>> from terarec.embedding import TieredConfig
        >>> small = EmbeddingTableConfig("a", 1000, 8, ("a",), tiered=TieredConfig(cache_bytes=4096))
        >>> big = EmbeddingTableConfig("b", 3000, 8, ("b",), tiered=TieredConfig(cache_bytes=8192))
        >>> tiered_caches([small, big, EmbeddingTableConfig("c", 10, 8, ("c",))], None)
        {'a': 4096, 'b': 8192}
        >>> tiered_caches([small, big], 1 << 20)
        {'a': 262144, 'b': 786432}
    """
    tiered = [table for table in tables if table.tiered is not None]
    if cache_bytes is None:
        return {table.name: int(table.tiered.cache_bytes) for table in tiered}  # type: ignore[union-attr]
    row_bytes = {table.name: table.embedding_dim * table.weights_dtype.itemsize for table in tiered}
    sizes = {table.name: table.num_embeddings * row_bytes[table.name] for table in tiered}
    total = sum(sizes.values())
    return {name: max(row_bytes[name], cache_bytes * size // total) for name, size in sizes.items()}


class ServedModel:
    """A model directory of ``terarec export``, ready to answer requests.

    Args:
        directory (Path): the model directory.
        cache_bytes (int, optional): RAM for the rows of the tables trained tiered (on disk),
            shared among them in proportion to their size: each reads its rows through a cache of
            its share instead of mapping its file. ``None`` gives each the cache it trained with
            (``tiered.cache_bytes``). Tables trained in RAM are memory-mapped. Default: ``None``

    Attributes:
        version (str): the model's version (``step-<N>-<export time>``).
        step (int): the training step of the exported checkpoint.
        task (str): ``click`` (scores are click probabilities), ``ranking`` (scores order a
            query's candidates) or ``retrieval`` (scores are the two towers' logits).
        features (tuple[str, ...]): the features a request may carry.

    Raises:
        DataError: naming the file, when the directory is incomplete or corrupt, or the cache
            cannot hold a row of a tiered table.
    """

    def __init__(self, directory: Path, cache_bytes: int | None = None) -> None:
        directory = Path(directory)
        description = verify_model_dir(directory)
        self.directory = directory
        self.version = str(description["version"])
        self.step = int(description["step"])
        self.task = str(description["task"])
        self.features = tuple(description["features"])
        self.empty_when_missing = tuple(description["empty_when_missing"])
        self.config = Config.from_dict(description["config"])
        self.schema = Schema.from_dict(description["schema"])
        tables = [from_mapping(EmbeddingTableConfig, raw) for raw in description["tables"]]
        hashed = [from_mapping(DeepHashTableConfig, raw) for raw in description["deep_hash_tables"]]
        seed = self.config.train.seed
        self.network = build_network(self.config.model, self.schema.num_dense, tables, hashed, seed)
        weights = safetensors.torch.load_file(directory / NETWORK)
        try:
            self.network.load_state_dict(weights)
        except RuntimeError as err:
            raise DataError(f"{directory / NETWORK}: does not fit the model of model.json ({err})") from err
        self.network.eval()
        try:
            self.tables = FrozenCollection(tables, directory / TABLES, seed, tiered_caches(tables, cache_bytes))
        except ValueError as err:
            raise DataError(str(err)) from err
        self.index = ItemIndex.load(directory / INDEX) if (directory / INDEX).is_dir() else None
        self.bf16 = self.config.train.dense_precision is DensePrecision.BF16

    def batch(self, records: Sequence[Mapping[str, object]]) -> Batch:
        """``records`` read as the model's input (see :func:`~terarec.data.records_to_data`)."""
        data = records_to_data(records, self.schema, self.config.data, self.empty_when_missing, source="request")
        rows = np.arange(data.num_rows, dtype=np.int64)
        return BatchLoader(data, max(data.num_rows, 1), shuffle=False, prefetch=0).make_batch(rows)

    def _run(self, records: Sequence[Mapping[str, object]], compute: str) -> torch.Tensor:
        batch = self.batch(records)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            pooled = self.tables.lookup(batch.sparse)
            if compute == "user":
                model = self.network.model
                assert isinstance(model, TwoTower)
                return model.user_vectors(self.network.inputs(batch.dense, pooled, batch.sparse)).float()
            return self.network(batch.dense, pooled, batch.sparse).float()  # type: ignore[union-attr]

    def score(self, context: Mapping[str, object], candidates: Sequence[Mapping[str, object]]) -> list[float]:
        """One score per candidate, in order: the model's output for the context's features
        together with the candidate's (a candidate's value wins over the context's).

        Raises:
            RecordError: for an unknown feature or a bad value (its ``row`` is the candidate's).
        """
        if not candidates:
            return []
        logits = self._run([{**context, **candidate} for candidate in candidates], "logits")
        scores = torch.sigmoid(logits) if self.task == "click" else logits
        return scores.tolist()

    def warm_up(self) -> None:
        """Answers one request of each kind, so the kernels are loaded before the first real one."""
        self.score({}, [{}])
        if self.index is not None:
            self.retrieve({}, 1)

    def retrieve(self, context: Mapping[str, object], k: int) -> Retrieved:
        """The ``k`` items nearest to the context's user vector, from the item index.

        Raises:
            LookupError: when the model has no item index (not a two-tower model).
            RecordError: for an unknown feature or a bad value.
        """
        if self.index is None:
            raise LookupError(f"the model of {self.directory} has no item index: /retrieve needs a two-tower model")
        user = self._run([context], "user").numpy()
        positions, scores = self.index.search(np.ascontiguousarray(user, np.float32), min(k, len(self.index)))
        found = positions[0] >= 0
        return Retrieved(self.index.items[positions[0][found]].tolist(), scores[0][found].astype(float).tolist())
