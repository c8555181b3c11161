"""Distributed ingestion: with several ranks, raw input files are parsed once, not once per rank.

Rank 0 prepares the raw files (:func:`terarec.data.prepare`: Criteo TSV, CSV, Parquet) into
``OUT/ingested/`` and computes the training split's statistics; the other ranks wait for it,
receive the statistics, and every rank memory-maps the prepared columns, so each reads only
the rows of its own slices of the global batches (and of the evaluation split). A data path
that is already prepared is memory-mapped as it is. The examples, their order and the
statistics are those of the raw files, so results depend on the world size and seed only, not
on how the input is split into files or who parsed it.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from terarec.data import DataConfig, DataFormat, DataSplits, load_splits
from terarec.data.sources import prepare_path, resolve_path
from terarec.data.stats import DatasetStats
from terarec.errors import ConfigError
from terarec.train.distributed import World

__all__ = ["INGEST_TIMEOUT", "load_rank_splits"]

# How long the other ranks wait for rank 0 to prepare the input. Preparing a large dataset
# outlasts sharding.timeout_seconds, which bounds a step's collectives; a rank 0 that dies
# while preparing still stops the run at once (torchrun stops the others).
INGEST_TIMEOUT = timedelta(hours=24)


def load_rank_splits(config: DataConfig, world: World, run_dir: Path) -> DataSplits:
    """This rank's view of the run's data: :func:`~terarec.data.load_splits`, with raw files
    prepared once by rank 0 when there are several ranks (see the module docstring).

    Args:
        config (DataConfig): the run's ``data`` section.
        world (World): this rank's place in the run.
        run_dir (Path): the run's output directory (shared by every rank), which holds
            ``ingested/`` afterwards.

    Example::

        >>> from terarec.data import SyntheticConfig
        >>> synthetic = DataConfig(synthetic=SyntheticConfig(num_examples=100, num_eval_examples=20))
        >>> load_rank_splits(synthetic, World(), Path("unused")).train.num_rows  # 10 validate
        90
    """
    if world.size > 1 and config.group_col is not None:
        raise ConfigError("learning to rank (data.group_col) trains on one process; drop --nproc-per-node")
    if world.size == 1 or config.path is None or _is_prepared(config.path, config):
        return load_splits(config)
    target = Path(run_dir) / "ingested"
    prepared = dataclasses.replace(
        config,
        path=str(target / "train"),
        eval_path=str(target / "eval") if config.eval_path is not None else None,
        val_path=str(target / "val") if config.val_path is not None else None,
        format=DataFormat.PREPARED,
    )
    payload: list[dict[str, object] | None] = [None]
    if world.is_primary:
        prepare_path(config, target / "train", overwrite=True)
        if config.eval_path is not None:
            prepare_path(dataclasses.replace(config, path=config.eval_path), target / "eval", overwrite=True)
        if config.val_path is not None:
            prepare_path(dataclasses.replace(config, path=config.val_path), target / "val", overwrite=True)
        splits = load_splits(prepared)
        payload[0] = splits.stats.to_dict()
    dist.monitored_barrier(timeout=INGEST_TIMEOUT, wait_all_ranks=True)
    dist.broadcast_object_list(payload, src=0)
    if world.is_primary:
        return splits
    assert payload[0] is not None
    return load_splits(prepared, stats=DatasetStats.from_dict(payload[0]))


def _is_prepared(path: str, config: DataConfig) -> bool:
    """Whether every rank reads ``path`` as it is: prepared data, or an interaction log (each
    rank builds the same training rows and queries from it)."""
    return resolve_path(path, config.format)[1] in (DataFormat.PREPARED, DataFormat.INTERACTIONS)
