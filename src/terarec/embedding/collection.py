"""Many tables behind one call, and the thin autograd bridge to the dense model.

:class:`EmbeddingCollection` is terarec's ``EmbeddingBagCollection``: it maps sparse features
to tables, prepares a batch (hash and de-duplicate; no weights read, so it may run ahead on a
background thread), looks it up into one :class:`PooledEmbeddings` leaf tensor that the dense
model consumes, and applies that tensor's ``.grad`` with each table's fused optimizer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from terarec.embedding.config import EmbeddingTableConfig
from terarec.embedding.dynamic_table import DynamicTable
from terarec.embedding.fused import PreparedGroup, group_tables
from terarec.embedding.memory import MemoryEstimate, format_bytes
from terarec.embedding.table import FixedTable, RowTable
from terarec.embedding.types import EmbeddingTable, PreparedIds
from terarec.sparse import JaggedTensor, concat_bags

__all__ = ["EmbeddingCollection", "PooledEmbeddings", "PreparedBatch", "load_tables", "save_tables"]


@dataclass(frozen=True)
class PreparedBatch:
    """A batch's IDs, mapped and de-duplicated per table by :meth:`EmbeddingCollection.prepare`.

    Tables that run as one :class:`~terarec.embedding.fused.TableGroup` are prepared together,
    into one :class:`~terarec.embedding.fused.PreparedGroup` each; the other tables one by one.
    A table read by ``k`` features holds their bags one feature after another, ``k B`` bags,
    so each of its rows is updated once per step with the gradients of all its features.

    Attributes:
        batch_size (int): ``B``.
        tables (dict[str, PreparedIds]): per table that runs alone, its :math:`(k B)` bags.
        groups (tuple[PreparedGroup, ...]): per table group of the collection, its IDs.
        table_names (tuple[str, ...]): every table of the collection that prepared it.
    """

    batch_size: int
    tables: dict[str, PreparedIds]
    groups: tuple[PreparedGroup, ...] = ()
    table_names: tuple[str, ...] = ()

    @property
    def global_batch_size(self) -> int:
        """Examples of the step over all ranks: ``batch_size`` for one process."""
        return self.batch_size


@dataclass(frozen=True)
class PooledEmbeddings:
    """Pooled embeddings of all features, as one autograd leaf.

    ``values`` is created with ``requires_grad=True``: the dense model consumes it (or the
    views :meth:`to_dict` and :meth:`stacked` give) and ``loss.backward()`` fills
    ``values.grad``, which :meth:`EmbeddingCollection.apply_gradients` takes.

    Attributes:
        values (Tensor): :math:`(B, \\sum_f D_f)` ``float32``, features side by side.
        feature_names (tuple[str, ...]): column blocks of ``values``, in order.
        embedding_dims (tuple[int, ...]): width ``D_f`` of each block.
    """

    values: torch.Tensor
    feature_names: tuple[str, ...]
    embedding_dims: tuple[int, ...]

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Per feature its :math:`(B, D_f)` view of ``values``."""
        out, start = {}, 0
        for name, dim in zip(self.feature_names, self.embedding_dims):
            out[name] = self.values[:, start : start + dim]
            start += dim
        return out

    def stacked(self) -> torch.Tensor:
        """``values`` viewed as :math:`(B, F, D)`; all features must share ``D``."""
        if len(set(self.embedding_dims)) > 1:
            raise ValueError(f"stacked() needs one embedding_dim for all features, got {self.embedding_dims}")
        dim = self.embedding_dims[0] if self.embedding_dims else 0
        return self.values.view(self.values.shape[0], len(self.feature_names), dim)


class EmbeddingCollection:
    """A set of embedding tables, each read by one or more sparse features.

    Symbols: ``F`` features, ``B`` batch, ``D_f`` the embedding dim of feature ``f``'s table,
    ``k`` the features of one table. Features are ordered table by table (in the given
    order), then in each table's ``feature_names`` order.

    Args:
        tables (Sequence[EmbeddingTableConfig]): one config per table; names unique and
            every feature read by one table only.
        seed (int, optional): global seed of row initialisation. Default: ``0``
        directory (Path, optional): where tiered tables keep their files. Default: ``None``

    Attributes:
        tables (dict[str, EmbeddingTable]): per table name, its table: a
            :class:`~terarec.embedding.dynamic_table.DynamicTable` when its config is dynamic,
            else a :class:`~terarec.embedding.table.FixedTable`.
        training (bool): whether :meth:`prepare` may change tables (admission, eviction,
            dirty rows); see :meth:`train`.
        feature_names (tuple[str, ...]): the ``F`` features, in output order.
        embedding_dims (tuple[int, ...]): ``D_f`` per feature.

    Shape:
        - input: per feature a :class:`~terarec.sparse.JaggedTensor` of ``B`` bags
        - :meth:`lookup` values and the gradient of :meth:`apply_gradients`:
          :math:`(B, \\sum_f D_f)`

    Example::

        >>> # feature "user":  bag 0: [1]       bag 1: [2]
        >>> # feature "item":  bag 0: [7, 8]    bag 1: []
        >>> # feature "seen":  bag 0: [7]       bag 1: [8, 9]   (shares the item table)
        >>> ec = EmbeddingCollection([
        ...     EmbeddingTableConfig("t_user", 100, 4, ("user",)),
        ...     EmbeddingTableConfig("t_item", 1000, 4, ("item", "seen")),
        ... ])
        >>> batch = ec.prepare({
        ...     "user": JaggedTensor(torch.tensor([1, 2]), torch.tensor([0, 1, 2])),
        ...     "item": JaggedTensor(torch.tensor([7, 8]), torch.tensor([0, 2, 2])),
        ...     "seen": JaggedTensor(torch.tensor([7, 8, 9]), torch.tensor([0, 1, 3])),
        ... })
        >>> pooled = ec.lookup(batch)
        >>> pooled.values.shape, pooled.stacked().shape, ec.feature_names
        (torch.Size([2, 12]), torch.Size([2, 3, 4]), ('user', 'item', 'seen'))
        >>> pooled.stacked().sum().backward()
        >>> ec.apply_gradients(batch, pooled.values.grad)
    """

    def __init__(self, tables: Sequence[EmbeddingTableConfig], seed: int = 0, directory: Path | None = None) -> None:
        configs = _checked_configs(tables)
        self._set_tables(
            [(DynamicTable if c.dynamic is not None else FixedTable)(c, seed, directory) for c in configs]
        )

    @classmethod
    def from_tables(cls, tables: Sequence[EmbeddingTable]) -> EmbeddingCollection:
        """A collection over already built tables of any kind (fixed, dynamic, tiered, shards)."""
        _checked_configs([table.config for table in tables])
        collection = cls.__new__(cls)
        collection._set_tables(list(tables))
        return collection

    def _set_tables(self, tables: list[EmbeddingTable]) -> None:
        self.training = True
        self.tables: dict[str, EmbeddingTable] = {table.config.name: table for table in tables}
        self.feature_names = tuple(f for t in tables for f in t.config.feature_names)
        self.embedding_dims = tuple(t.embedding_dim for t in tables for _ in t.config.feature_names)
        self._width = sum(self.embedding_dims)
        self._table_names = tuple(self.tables)
        # Tables that can run as one do (one numba call per phase for the group); the rest,
        # with their first output column, run one by one.
        self._groups, self._alone = group_tables(tables)

    def train(self, mode: bool = True) -> EmbeddingCollection:
        """Sets every table's training mode (as ``nn.Module.train``); returns ``self``."""
        self.training = bool(mode)
        for table in self.tables.values():
            table.train(mode)
        return self

    def eval(self) -> EmbeddingCollection:
        """``train(False)``: preparing batches changes no table (for evaluation and serving)."""
        return self.train(False)

    def counters(self) -> dict[str, float]:
        """Every table's counters (see :meth:`RowTable.counters`) as ``"<table>/<counter>"``."""
        return {
            f"{name}/{key}": value
            for name, table in self.tables.items()
            if isinstance(table, RowTable)
            for key, value in table.counters().items()
        }

    @classmethod
    def estimate_memory(cls, configs: Sequence[EmbeddingTableConfig]) -> dict[str, MemoryEstimate]:
        """Bytes per table, computed from the configs alone (nothing is allocated).

        Example::

            >>> EmbeddingCollection.estimate_memory([EmbeddingTableConfig("t", 10**12, 64, ("f",))])["t"].ram_bytes
            260000000000000
        """
        return {config.name: config.memory_estimate() for config in _checked_configs(configs)}

    def memory_estimate(self) -> dict[str, MemoryEstimate]:
        """Bytes each allocated table holds."""
        return {name: table.memory_estimate() for name, table in self.tables.items()}

    def prepare(self, sparse: Mapping[str, JaggedTensor], parallel: bool = False) -> PreparedBatch:
        """Maps and de-duplicates every table's IDs; reads no weights, so it is safe on a
        background thread while the previous batch trains. Features not read by any table
        are ignored.

        ``parallel=True`` spreads the tables of each fused group over numba's threads (same
        result, faster) for a caller that prepares, looks up and updates one batch after another on one thread. Leave it
        off on a background thread: its parallel kernel would compete with the lookup and
        update for the same cores, and numba's fallback ``workqueue`` threading layer aborts
        when two threads launch parallel kernels at once.

        Raises:
            ValueError: if a feature is missing or the features' batch sizes differ.
            TypeError: if a feature is not a :class:`~terarec.sparse.JaggedTensor`.
        """
        batch_size = None
        for name in self.feature_names:
            if name not in sparse:
                raise ValueError(f"sparse feature {name!r} is missing from the batch (got {sorted(sparse)})")
            jagged = sparse[name]
            if not isinstance(jagged, JaggedTensor):
                raise TypeError(f"sparse feature {name!r} must be a JaggedTensor, got {type(jagged).__name__}")
            if batch_size is None:
                batch_size = jagged.batch_size
            elif jagged.batch_size != batch_size:
                raise ValueError(
                    f"sparse feature {name!r} has {jagged.batch_size} bags, expected {batch_size} "
                    f"like {self.feature_names[0]!r}"
                )
        if batch_size is None and sparse:
            # No table reads a feature (every feature is embedded elsewhere): pooled is (B, 0).
            batch_size = next(iter(sparse.values())).batch_size
        prepared = {}
        for table, _ in self._alone:
            features = [sparse[f] for f in table.config.feature_names]
            values, offsets = concat_bags(features)
            prepared[table.config.name] = table.prepare(values, offsets)
        groups = tuple(group.prepare(sparse, parallel) for group in self._groups)
        return PreparedBatch(batch_size or 0, prepared, groups, self._table_names)

    def lookup(self, prepared: PreparedBatch) -> PooledEmbeddings:
        """Pools every feature's bags into one leaf tensor that requires grad."""
        self._check_batch(prepared)
        batch = prepared.batch_size
        values = torch.empty(batch, self._width)
        out = values.numpy()
        for group, ids in zip(self._groups, prepared.groups):
            group.lookup(ids, out)
        for table, start in self._alone:
            k, dim = len(table.config.feature_names), table.embedding_dim
            pooled = table.lookup_prepared(prepared.tables[table.config.name])  # (k B, D), feature-major
            values[:, start : start + k * dim].view(batch, k, dim).copy_(pooled.view(k, batch, dim).transpose(0, 1))
        values.requires_grad_(True)
        return PooledEmbeddings(values, self.feature_names, self.embedding_dims)

    def apply_gradients(self, prepared: PreparedBatch, grad: torch.Tensor) -> None:
        """Applies each table's fused optimizer to its block of ``grad`` (usually
        ``pooled.values.grad``), :math:`(B, \\sum_f D_f)` ``float32``."""
        self._check_batch(prepared)
        batch, width = prepared.batch_size, self._width
        if not isinstance(grad, torch.Tensor) or grad.dtype != torch.float32:
            got = grad.dtype if isinstance(grad, torch.Tensor) else type(grad).__name__
            raise TypeError(f"grad must be a float32 tensor, got {got}")
        if tuple(grad.shape) != (batch, width):
            raise ValueError(f"grad must have shape {(batch, width)} (B, sum D), got {tuple(grad.shape)}")
        if grad.device.type != "cpu":
            raise ValueError(f"grad must be on the CPU, got device {grad.device}")
        grad = grad.detach()
        if self._groups:
            array = grad.contiguous().numpy()  # a view unless grad is strided
            for group, ids in zip(self._groups, prepared.groups):
                group.apply_gradients(ids, array)
        for table, start in self._alone:
            k, dim = len(table.config.feature_names), table.embedding_dim
            block = grad[:, start : start + k * dim].reshape(batch, k, dim).transpose(0, 1)
            table.apply_gradients_prepared(prepared.tables[table.config.name], block.contiguous().view(k * batch, dim))

    def _check_batch(self, prepared: PreparedBatch) -> None:
        if not isinstance(prepared, PreparedBatch):
            raise TypeError(f"prepared must be a PreparedBatch, got {type(prepared).__name__}")
        if prepared.table_names != self._table_names or len(prepared.groups) != len(self._groups):
            raise ValueError(
                f"prepared batch is for tables {sorted(prepared.table_names)}, not {sorted(self._table_names)}"
            )

    def save(self, directory: Path) -> None:
        """Writes each table into ``directory / <table name>`` plus a ``collection.json``."""
        save_tables(directory, self.tables, self._features_by_table())

    def load(self, directory: Path) -> None:
        """Restores what :meth:`save` wrote; refuses a directory saved for other tables."""
        load_tables(directory, self.tables, self._features_by_table())

    def _features_by_table(self) -> dict[str, list[str]]:
        return {name: list(t.config.feature_names) for name, t in self.tables.items()}

    def __repr__(self) -> str:
        lines = []
        for name, table in self.tables.items():
            cfg, memory = table.config, table.memory_estimate()
            disk = f", disk={format_bytes(memory.disk_bytes)}" if memory.disk_bytes else ""
            lines.append(
                f"  ({name}): {type(table).__name__}({cfg.num_embeddings} x {cfg.embedding_dim}, "
                f"features={list(cfg.feature_names)}, pooling={cfg.pooling.value}, "
                f"optimizer={cfg.optimizer.type.value}, ram={memory.ram_bytes} bytes "
                f"({format_bytes(memory.ram_bytes)}){disk})"
            )
        return "EmbeddingCollection(\n" + "\n".join(lines) + "\n)"


def _checked_configs(configs: Sequence[EmbeddingTableConfig]) -> list[EmbeddingTableConfig]:
    configs = list(configs)
    names, owner = set(), {}
    for config in configs:
        if not isinstance(config, EmbeddingTableConfig):
            raise TypeError(f"tables must hold EmbeddingTableConfig, got {type(config).__name__}")
        if config.name in names:
            raise ValueError(f"duplicate table name {config.name!r}")
        names.add(config.name)
        for feature in config.feature_names:
            if feature in owner:
                raise ValueError(f"feature {feature!r} is read by tables {owner[feature]!r} and {config.name!r}")
            owner[feature] = config.name
    return configs


def save_tables(
    directory: Path, tables: Mapping[str, EmbeddingTable], features_by_table: Mapping[str, list[str]] | None
) -> None:
    """Writes each of ``tables`` into ``directory / <table name>`` and, given
    ``features_by_table`` (every table of the model and its features), the ``collection.json``
    that :func:`load_tables` checks. A sharded collection calls it on every rank with that
    rank's tables (the manifest from one rank), so the layout does not depend on the placement."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        sub = directory / _table_directory_name(name)
        sub.mkdir(exist_ok=True)
        table.save(sub)
    if features_by_table is not None:
        manifest = {"tables": {name: list(features) for name, features in features_by_table.items()}}
        (directory / "collection.json").write_text(json.dumps(manifest, indent=2) + "\n")


def load_tables(directory: Path, tables: Mapping[str, EmbeddingTable], features_by_table: Mapping[str, list[str]]) -> None:
    """Loads each of ``tables`` from a directory :func:`save_tables` wrote, after checking that
    it was saved for the same model (``features_by_table``, every table and its features)."""
    directory = Path(directory)
    path = directory / "collection.json"
    if not path.is_file():
        raise ValueError(f"{path}: missing; not a saved embedding collection")
    saved = json.loads(path.read_text()).get("tables", {})
    expected = {name: list(features) for name, features in features_by_table.items()}
    if saved != expected:
        raise ValueError(f"{path}: saved tables {saved} do not match this collection's {expected}")
    for name, table in tables.items():
        table.load(directory / _table_directory_name(name))


def _table_directory_name(name: str) -> str:
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"table name {name!r} cannot be used as a directory name")
    return name
