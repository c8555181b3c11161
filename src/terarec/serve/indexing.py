"""``terarec index RUN``: every item of a retrieval run through the item tower, into an ANN index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from terarec.data import load_splits
from terarec.errors import ConfigError
from terarec.serve.item_index import IndexKind, ItemIndex, measure_index
from terarec.train.config import DensePrecision
from terarec.train.evaluate import open_checkpoint
from terarec.train.retrieval import embed_rows

__all__ = ["index_run"]


def index_run(run: Path, out: Path | None = None, kind: IndexKind = IndexKind.IVF) -> dict[str, object]:
    """Builds and saves the item index of a two-tower run, and measures it.

    The run's data is read again with its settings (the same catalogue and queries), every
    catalogue item goes through the item tower of the run's model (its best validated
    checkpoint, else its newest), and the vectors are indexed (:class:`ItemIndex`) and saved in
    ``out`` with ``vectors.npy``. The index is measured with the run's evaluation queries:
    recall@10 and @100 against exact search, and single-query searches per second.

    Args:
        run (Path): a run directory (or one of its checkpoints).
        out (Path, optional): where the index goes; ``None``: ``RUN/index``. Default: ``None``
        kind (IndexKind, optional): the index family. Default: ``IndexKind.IVF``

    Returns:
        dict[str, object]: the index's size, kind and parameters and its measurements (also in
        ``OUT/index.json``).

    Raises:
        ConfigError: when the run did not train a retrieval model.
    """
    run = Path(run)
    with open_checkpoint(run) as (config, _, network, collection):
        splits = load_splits(config.data)
        if splits.retrieval is None:
            raise ConfigError(f"{run}: not a retrieval run (data.format=interactions, model.type=two_tower); nothing to index")
        retrieval = splits.retrieval
        bf16 = config.train.dense_precision is DensePrecision.BF16
        batch = config.train.eval_batch_size
        items = embed_rows(network, collection, retrieval.catalogue, "item", batch, bf16)
        users = embed_rows(network, collection, retrieval.eval.queries, "user", batch, bf16)
    index = ItemIndex.build(items, np.asarray(retrieval.items.to_numpy(zero_copy_only=False)), kind)
    report: dict[str, object] = {
        "kind": kind.value,
        "params": index.params,
        "num_items": len(index),
        "dim": index.dim,
        **measure_index(index, items, users),
    }
    target = Path(out) if out is not None else (run if run.is_dir() and (run / "metrics.json").exists() else run.parent) / "index"
    index.save(target, vectors=items, report=report)
    report["path"] = str(target)
    return report
