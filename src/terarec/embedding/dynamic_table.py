"""Collisionless embedding tables: every admitted ID gets a row of its own."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from terarec.embedding import _hashing
from terarec.embedding.config import EmbeddingTableConfig
from terarec.embedding.dynamic import DynamicRowMapper, DynamicTableStats
from terarec.embedding.table import RowTable

__all__ = ["DynamicTable"]


class DynamicTable(RowTable):
    """An embedding table that maps raw IDs to rows without collisions, admitting and evicting IDs.

    Production ID spaces (users, items, crosses) are unbounded: a hashed table makes unrelated
    IDs share rows, and a table sized for every ID ever seen wastes memory on IDs seen once.
    Here each ID that passes admission (``config.dynamic``: ``min_count`` sightings in a
    count-min sketch, then ``admit_probability``) gets a row of its own, initialised from the
    ID (a pure function of seed, table and ID, so a resumed or re-admitted ID starts the same);
    rows unseen for ``ttl_steps`` or pushed out when the table is full are evicted
    (``eviction``: LFU or LRU). Unadmitted IDs read as zeros and get no update. All of it
    happens while :meth:`prepare` runs in training mode; in eval mode the table only reads.
    ``num_embeddings`` is the capacity; with ``config.tiered`` the rows live on disk.

    Args:
        config (EmbeddingTableConfig): a table config whose ``dynamic`` is set.
        seed (int, optional): global seed. Default: ``0``
        directory (Path, optional): where a tiered table keeps its file. Default: ``None``

    Shape:
        - values: :math:`(N)` ``int64`` raw IDs
        - offsets: :math:`(B + 1)` ``int64``
        - :meth:`lookup` output and ``grad_pooled``: :math:`(B, D)` ``float32``

    Example::

        >>> import torch
        >>> from terarec.embedding.config import DynamicConfig
        >>> config = EmbeddingTableConfig("users", 1000, 4, ("user",), dynamic=DynamicConfig(min_count=2))
        >>> table = DynamicTable(config)
        >>> values, offsets = torch.tensor([10**15, 7]), torch.tensor([0, 1, 2])
        >>> table.lookup(values, offsets).abs().sum().item()  # first sighting: not admitted yet
        0.0
        >>> table.lookup(values, offsets).abs().sum().item() > 0  # second: admitted, initialised
        True
        >>> table.stats().live_rows, table.stats().admitted
        (2, 2)
    """

    kind = "dynamic"
    _rows_may_be_missing = True

    def __init__(self, config: EmbeddingTableConfig, seed: int = 0, directory: Path | None = None) -> None:
        if config.dynamic is None:
            raise ValueError(f"table {config.name!r}: a DynamicTable needs config.dynamic")
        table_seed = int(_hashing.derive_table_seed(seed, config.name))
        self._dynamic_mapper = DynamicRowMapper(config.num_embeddings, config.dynamic, table_seed)
        super().__init__(config, self._dynamic_mapper, seed, directory)

    def stats(self) -> DynamicTableStats:
        """Live rows and cumulative admitted / rejected / evicted counts."""
        return self._dynamic_mapper.stats()

    def counters(self) -> dict[str, float]:
        return {**super().counters(), **{k: float(v) for k, v in asdict(self.stats()).items()}}
