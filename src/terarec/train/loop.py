"""The training loop: ``fit()`` reads top to bottom, one verb per stage."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from terarec.data import Batch, BatchLoader
from terarec.embedding import EmbeddingCollection
from terarec.errors import ConfigError
from terarec.models import model_class
from terarec.train.builders import (
    build_deep_hash_tables,
    build_dense_optimizer,
    build_network,
    build_table_configs,
)
from terarec.train.checkpoint import (
    TrainerState,
    best_checkpoint,
    checkpoint_step,
    discard_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    mark_best,
    save_checkpoint,
)
from terarec.train.config import Config, StoppingMetric, TrainConfig
from terarec.train.distributed import World, broadcast_buffers, join_world, leave_world, sum_over_ranks
from terarec.train.ingest import load_rank_splits
from terarec.train.metrics import auc
from terarec.train.placement import build_collection, saved_placement
from terarec.train.reporting import StepReporter
from terarec.train.schedule import resolve_auto
from terarec.train.steps import (
    TrainResult,
    TrainingStep,
    advance,
    build_updates,
    check_cache_sizes,
    configure_threads,
    prepare_in_background,
    run_spec,
)
from terarec.train.stream import fit_stream
from terarec.train.task_selection import build_task, configure_for_data
from terarec.train.validation import record_validation, should_stop

__all__ = ["TrainResult", "fit"]


def _batches_from(loader: BatchLoader, state: TrainerState, count: int) -> Iterator[Batch]:
    """``count`` batches from ``state``'s position onwards, epoch after epoch."""
    epoch, start = state.epoch, state.batch_in_epoch
    while count > 0:
        with contextlib.closing(loader.iterate(epoch, start)) as batches:
            for batch in batches:
                yield batch
                count -= 1
                if count == 0:
                    return
        epoch, start = epoch + 1, 0


def _segment_end(step: int, total_steps: int, *intervals: int) -> int:
    """The step where the pipeline must drain: the next checkpoint or validation, or the end of training."""
    ends = [(step // every + 1) * every for every in intervals if every]
    return min([total_steps, *ends])


def _comm_bytes(collection: object) -> int:
    return getattr(collection, "comm_bytes", 0)


def fit(config: Config) -> TrainResult:
    """Trains the model ``config`` describes, evaluates it, and writes ``OUT/metrics.json``.

    Deterministic: the same config (seed included), data, thread count and number of ranks
    give bit-identical weights and metrics; a run resumed from a checkpoint
    (``train.resume``) continues exactly as if it had never stopped.

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), every rank runs this: each reads its share
    of every batch of ``train.batch_size`` examples, the planner places the tables over the
    ranks (table-, row-, table-row- or column-wise; replicated when pinned), the dense network trains
    under DistributedDataParallel, and rank 0 reports
    and writes ``metrics.json``. ``sharding.mode=hybrid`` applies embedding updates
    asynchronously (Persia), with at most ``sharding.staleness`` steps of delay.

    With ``train.stream.path`` set, trains on data files as they arrive there instead
    (:func:`~terarec.train.stream.fit_stream`).
    """
    world = join_world(config.sharding.timeout_seconds)
    try:
        if config.train.stream.path is not None:
            return fit_stream(config, world)
        return _fit(config, world)
    finally:
        leave_world(world)


def _fit(config: Config, world: World) -> TrainResult:
    run_dir = Path(config.train.out)
    threads = configure_threads(config.train.num_threads or max(1, (os.cpu_count() or 1) // world.local_size))
    splits = load_rank_splits(config.data, world, run_dir)
    config = configure_for_data(config, splits)
    requested = config.train
    config = replace(config, train=resolve_auto(requested, splits.stats.num_rows))
    settings = config.train
    task = build_task(config, splits, world)
    stopping_metric = settings.early_stopping.metric or task.metric
    batch_size, epochs = int(settings.batch_size or 0), int(settings.epochs or 0)
    if batch_size % world.size or batch_size < world.size:
        raise ConfigError(f"train.batch_size ({batch_size}) must be a multiple of the {world.size} ranks")
    schema = splits.train.schema
    model_type = model_class(config.model.type)
    table_configs = build_table_configs(config.embedding, schema.sparse_features, splits.stats.distinct_ids, model_type)
    deep_hash_tables = build_deep_hash_tables(config.embedding, schema.sparse_features, model_type)
    tables_dir = Path(settings.tables_dir) if settings.tables_dir else run_dir / "tables"
    # An owner prepares its tables for the global batch.
    check_cache_sizes(table_configs, max(batch_size, settings.eval_batch_size))

    checkpoint = latest_checkpoint(run_dir) if settings.resume else None
    if settings.resume and checkpoint is None:
        raise ConfigError(f"train.resume is set but {run_dir} holds no checkpoint to resume from")
    torch.manual_seed(settings.seed)
    collection, plan, placement = build_collection(
        config, table_configs, splits.train, world, tables_dir, saved_placement(checkpoint, world.size)
    )
    network = build_network(config.model, schema.num_dense, table_configs, deep_hash_tables, settings.seed)
    # Buffers (batch norm's running statistics) follow rank 0's; a network without them skips
    # the broadcast DDP would otherwise make before every forward.
    has_buffers = any(buffer.is_floating_point() for buffer in network.buffers())
    trainable = DistributedDataParallel(network, broadcast_buffers=has_buffers) if world.size > 1 else network
    optimizer = build_dense_optimizer(settings, list(network.parameters()))
    spec = run_spec(config, splits.train.schema, table_configs, deep_hash_tables, world, placement)
    state = TrainerState()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, network, collection, optimizer, restore_rng=True)  # type: ignore[arg-type]

    # With several ranks the last, partial global batch is dropped: a rank could get no rows.
    loader = task.batch_loader(
        splits.train,
        batch_size // world.size,
        shuffle=settings.shuffle,
        seed=settings.seed,
        drop_last=world.size > 1,
        rank=world.rank,
        world_size=world.size,
    )
    if loader.num_batches == 0:
        raise ConfigError(
            f"data.path: the training data ({splits.train.source}) has {splits.train.num_rows} rows, "
            f"not one batch of {batch_size}"
        )
    total_steps = settings.steps or epochs * loader.num_batches
    validate_every = (settings.eval_every or loader.num_batches) if splits.val is not None else 0
    if world.is_primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None and (discarded := discard_checkpoints(run_dir)):
            print(f"removed {discarded} checkpoint(s) of an earlier run in {run_dir} (--resume continues a run)")
        print(_schedule_line(requested, settings, splits.stats.num_rows, total_steps, stopping_metric if validate_every else None), flush=True)
        if splits.retrieval is not None:
            print(_data_report_line(splits.retrieval.report), flush=True)
    world.barrier()
    updates = build_updates(config, collection, table_configs)
    train_step = TrainingStep(config, task, network, trainable, optimizer, collection, updates, world)
    started = time.perf_counter()
    start_examples, start_step, start_comm = state.examples_seen, state.step, _comm_bytes(collection)
    progress = settings.progress and world.is_primary
    with (
        StepReporter(run_dir, total_steps, state.step, settings.log_every, progress, world.is_primary) as reporter,
        contextlib.closing(updates),
    ):
        # Pipeline: while this thread trains on batch n, the loader gathers batch n+2 and a
        # second thread maps, de-duplicates and (tiered tables) loads the rows of batch n+1.
        # Results are the same as without it. A stateful table (dynamic: admission, eviction)
        # changes while preparing, so the pipeline drains before each checkpoint and each
        # validation: the checkpoint then holds no trace of a batch it has not trained on.
        while state.step < total_steps and not should_stop(state, settings):
            stop = _segment_end(state.step, total_steps, settings.checkpoint_every, validate_every)
            prepared_batches = prepare_in_background(collection, _batches_from(loader, state, stop - state.step))
            with contextlib.closing(prepared_batches) as batches:
                for batch, prepared in batches:
                    output = train_step(batch, prepared, state.step, total_steps)
                    state = advance(state, output.examples, loader.num_batches)
                    if reporter.log_step(state.step, float(output.loss), output.examples):
                        reporter.log_metrics("tables", collection.counters(), state.step)
            updates.drain()
            improved = False
            if validate_every and (state.step % validate_every == 0 or state.step == total_steps):
                assert splits.val is not None
                broadcast_buffers(world, network)
                validation = task.evaluate(network, collection, "val", world)
                reporter.log_metrics("validation", validation, state.step)
                state, improved = record_validation(state, validation, settings, stopping_metric)
            if improved or (settings.checkpoint_every and state.step % settings.checkpoint_every == 0):
                saved = save_checkpoint(
                    run_dir, state, network, optimizer, collection, spec, settings.keep_checkpoints, world
                )
                if improved and world.is_primary:
                    mark_best(saved)
        train_seconds = time.perf_counter() - started
        comm_bytes = sum_over_ranks(world, _comm_bytes(collection) - start_comm)
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None or checkpoint_step(checkpoint) != state.step:
            checkpoint = save_checkpoint(run_dir, state, network, optimizer, collection, spec, settings.keep_checkpoints, world)
        best = best_checkpoint(run_dir) if state.best_step is not None else None
        if best is not None and settings.early_stopping.restore_best and state.best_step != state.step:
            load_checkpoint(best, network, collection)
            checkpoint = best
        broadcast_buffers(world, network)
        metrics = task.evaluate(network, collection, "eval", world)
        reporter.log_metrics("eval", metrics, state.step)
        loss_curve = [[step, loss] for step, loss in reporter.loss_curve]

    trained = state.examples_seen - start_examples
    estimates = EmbeddingCollection.estimate_memory(table_configs)
    result: dict[str, object] = {
        **metrics,
        "examples_per_second": trained / train_seconds if train_seconds > 0 else 0.0,
        "train_seconds": train_seconds,
        "steps": state.step,
        "model_step": checkpoint_step(checkpoint),
        "stopped_early": state.step < total_steps,
        "batch_size": settings.batch_size,
        "epochs": settings.epochs,
        "validation": list(state.validations),
        "train_loss": loss_curve,
        "train_examples": state.examples_seen,
        "eval_examples": metrics["examples"],
        "train_rows": splits.train.num_rows,
        "val_rows": splits.val.num_rows if splits.val is not None else 0,
        "skipped_rows": splits.train.skipped_rows + splits.eval.skipped_rows,
        "threads": threads,
        "world_size": world.size,
        "checkpoint": str(checkpoint),
        "dense_parameters": sum(p.numel() for p in network.parameters()),
        "table_ram_bytes": sum(estimate.ram_bytes for estimate in estimates.values()),
        "table_disk_bytes": sum(estimate.disk_bytes for estimate in estimates.values()),
        "tables": collection.counters(),
        "config": config.to_dict(),
    }
    if state.best_value is not None:
        result[f"best_validation_{stopping_metric.value}"] = state.best_value
    if splits.retrieval is not None:
        result["data_report"] = splits.retrieval.report
    if plan is not None:
        result["placement"] = placement
        result["predicted_step_seconds"] = plan.step_seconds
        result["predicted_comm_bytes_per_step"] = plan.comm_bytes["ids"] + plan.comm_bytes["pooled"]
        result["comm_bytes_per_step"] = comm_bytes / max(state.step - start_step, 1)
    if splits.eval_probabilities is not None:
        result["ground_truth_auc"] = auc(splits.eval.labels, splits.eval_probabilities)
    if world.is_primary:
        (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    return TrainResult(metrics=result, run_dir=run_dir, checkpoint=checkpoint)


def _schedule_line(
    requested: TrainConfig, settings: TrainConfig, rows: int, total_steps: int, validation: StoppingMetric | None
) -> str:
    """One line saying how long training runs, and which of its lengths were chosen from the data."""
    line = f"batch size {settings.batch_size}, "
    line += f"{total_steps} steps" if settings.steps else f"up to {settings.epochs} epoch(s) = {total_steps} steps"
    line += f" over {rows:,} training rows"
    auto = [f"train.{name}" for name in ("batch_size", "epochs") if getattr(requested, name) is None]
    if auto and not (settings.steps and auto == ["train.epochs"]):
        line += f" ({' and '.join(auto)} chosen from the row count)"
    if validation is not None and settings.early_stopping.patience:
        line += f"; stops early when validation {validation.value} stops improving"
    return line


def _data_report_line(report: dict[str, int]) -> str:
    """What reading and splitting an interaction log kept and left out, in one line."""
    return "interactions: " + ", ".join(f"{key.replace('_', ' ')} {value:,}" for key, value in report.items())
