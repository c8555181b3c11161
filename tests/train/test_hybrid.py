"""Persia-style hybrid training: embedding updates on a background thread, ``staleness`` steps late."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terarec.errors import ConfigError
from terarec.train import fit
from tests.helpers import assert_bit_identical, checkpoint_weights, tiny_config


def test_hybrid_is_reproducible_differs_from_sync_and_still_learns(tmp_path: Path) -> None:
    sync = fit(tiny_config(tmp_path / "sync", train__steps=90))
    runs = [
        fit(tiny_config(tmp_path / f"hybrid{i}", train__steps=90, sharding__mode="hybrid", sharding__staleness=2))
        for i in range(2)
    ]
    first, second = (checkpoint_weights(run.checkpoint) for run in runs)
    assert_bit_identical(first, second)
    reference = checkpoint_weights(sync.checkpoint)
    assert any(not np.array_equal(first[name], reference[name]) for name in reference)
    assert runs[0].metrics["train_examples"] == sync.metrics["train_examples"]
    assert abs(runs[0].metrics["auc"] - sync.metrics["auc"]) < 0.02


def test_hybrid_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    keys = {"train__checkpoint_every": 20, "sharding__mode": "hybrid", "sharding__staleness": 3}
    whole = fit(tiny_config(tmp_path / "whole", train__steps=60, **keys))
    fit(tiny_config(tmp_path / "parts", train__steps=40, **keys))
    resumed = fit(tiny_config(tmp_path / "parts", train__steps=60, train__resume=True, **keys))
    assert_bit_identical(checkpoint_weights(whole.checkpoint), checkpoint_weights(resumed.checkpoint))


@pytest.mark.parametrize("kind", ["dynamic", "tiered"])
def test_hybrid_refuses_tables_whose_rows_move(tmp_path: Path, kind: str) -> None:
    extra = {"embedding__dynamic__min_count": 2} if kind == "dynamic" else {"embedding__tiered__cache_bytes": "4MB"}
    with pytest.raises(ConfigError, match="sharding.mode=hybrid needs fixed in-RAM tables"):
        fit(tiny_config(tmp_path, train__steps=2, sharding__mode="hybrid", **extra))
