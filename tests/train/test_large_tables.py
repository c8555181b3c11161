"""Training with dynamic and tiered tables: same results as in RAM, exact resume, counters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terarec.errors import ConfigError, PlanError
from terarec.train import evaluate_checkpoint, fit
from terarec.train.config import Config
from tests.helpers import TINY_CACHE, assert_bit_identical, trained_numbers
from tests.helpers import tiny_config as _tiny_config


def tiny_config(out: Path, **extra: object) -> Config:
    return _tiny_config(out, train__eval_batch_size=256, **extra)

DYNAMIC = {"embedding__dynamic__min_count": 2, "embedding__dynamic__ttl_steps": 40, "embedding__dynamic__sketch_width": 4096}


def test_tiered_tables_train_exactly_like_ram_tables(tmp_path: Path) -> None:
    ram = fit(tiny_config(tmp_path / "ram", train__steps=25))
    tiered = fit(tiny_config(tmp_path / "tiered", train__steps=25, embedding__tiered__cache_bytes=TINY_CACHE))
    for key in ("auc", "logloss", "ne", "calibration"):
        assert ram.metrics[key] == tiered.metrics[key]
    assert_bit_identical(trained_numbers(ram.checkpoint, tmp_path / "s1"), trained_numbers(tiered.checkpoint, tmp_path / "s2"))
    counters = tiered.metrics["tables"]
    assert 0.0 < counters["C1/cache_hit_rate"] < 1.0 and counters["C1/disk_written_bytes"] > 0
    assert (tmp_path / "tiered" / "tables" / "C1.slab").is_file()


def test_dynamic_tiered_run_resumes_exactly_and_reports_counters(tmp_path: Path) -> None:
    # a short TTL, so rows expire (and are written back and reloaded) across the resume
    common = {**DYNAMIC, "embedding__dynamic__ttl_steps": 5, "embedding__tiered__cache_bytes": TINY_CACHE,
              "train__checkpoint_every": 10}
    straight = fit(tiny_config(tmp_path / "straight", train__steps=45, **common))
    fit(tiny_config(tmp_path / "resumed", train__steps=25, **common))
    resumed = fit(tiny_config(tmp_path / "resumed", train__steps=45, train__resume=True, **common))
    assert resumed.metrics["auc"] == straight.metrics["auc"]
    assert_bit_identical(trained_numbers(straight.checkpoint, tmp_path / "s1"), trained_numbers(resumed.checkpoint, tmp_path / "s2"))
    counters = json.loads((tmp_path / "straight" / "metrics.json").read_text())["tables"]
    assert counters["C1/live_rows"] > 0 and counters["C1/rejected"] > 0 and counters["C1/evicted_ttl"] > 0
    # The dynamic tables' counters resume exactly; the cache's counters, disk traffic and phase
    # times restart with the process.
    def dynamic(all_counters: dict[str, float]) -> dict[str, float]:
        return {
            k: v for k, v in all_counters.items()
            if not k.split("/")[1].startswith(("cache", "disk")) and not k.endswith("_seconds")
        }

    assert dynamic(counters) == dynamic(resumed.metrics["tables"])


def test_dynamic_tables_learn(tmp_path: Path) -> None:
    dynamic = fit(tiny_config(tmp_path / "dynamic", train__steps=80, **DYNAMIC)).metrics["auc"]
    fixed = fit(tiny_config(tmp_path / "fixed", train__steps=80)).metrics["auc"]
    # admission keeps rare IDs out, which costs this short run nothing against hashed tables
    assert dynamic > 0.55 and dynamic > fixed - 0.01


def test_cache_smaller_than_two_batches_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds 100 rows .* may need 512 rows; set embedding.tiered.cache_bytes >= 18432"):
        fit(tiny_config(tmp_path, train__steps=1, embedding__tiered__cache_bytes=str(100 * 36)))


def test_tiered_tables_that_do_not_fit_on_disk_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="on disk"):
        fit(
            tiny_config(
                tmp_path,
                train__steps=1,
                embedding__tiered__cache_bytes="1000000",
                embedding__max_rows=10**15,
                embedding__min_rows=10**14,
            )
        )


def test_eval_of_a_dynamic_tiered_checkpoint_reproduces_the_run(tmp_path: Path) -> None:
    result = fit(tiny_config(tmp_path, train__steps=20, embedding__tiered__cache_bytes=TINY_CACHE, **DYNAMIC))
    metrics, _ = evaluate_checkpoint(result.checkpoint)
    assert metrics.auc == result.metrics["auc"] and metrics.logloss == result.metrics["logloss"]
    assert not list(tmp_path.glob("checkpoints/.eval-tables-*"))  # the scratch copy is gone
