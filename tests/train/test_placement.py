"""The run's tables on several ranks: what each rank is asked to hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from terarec.data import load_splits
from terarec.embedding import EmbeddingCollection
from terarec.errors import PlanError
from terarec.train.builders import build_table_configs
from terarec.train.distributed import World
from terarec.train.placement import build_collection
from tests.helpers import tiny_config


def test_a_rank_whose_share_does_not_fit_is_refused_with_its_share(tmp_path: Path) -> None:
    """build_collection checks this rank's block of each split table, not the whole tables, and
    names the rank; it refuses before creating anything (no process group is needed here)."""
    config = tiny_config(tmp_path)
    splits = load_splits(config.data)
    tables = build_table_configs(config.embedding, splits.train.schema.sparse_features, splits.stats.distinct_ids)
    placement = {t.name: {"sharding": "row_wise", "ranks": [0, 1]} for t in tables}
    estimates = EmbeddingCollection.estimate_memory(tables)
    share = sum(e.ram_bytes // 2 for e in estimates.values())
    budget = int(share / 0.9) - 1  # tables may use 90% of the budget: one byte short of the share
    too_small = dataclasses.replace(config, train=dataclasses.replace(config.train, memory_budget_bytes=budget))
    with pytest.raises(PlanError, match=r"^rank 1, its share of the tables: .* Or use more ranks\.$") as refused:
        build_collection(too_small, tables, splits.train, World(rank=1, size=2), tmp_path / "tables", placement)
    assert f"need {share} bytes" in str(refused.value)
