"""Continuous training: ``terarec train --stream DIR`` trains on data files as they arrive in DIR.

Files are trained in name order, each exactly once: one pass over its rows, shuffled within the
file (seeded by ``train.seed`` and the file's place in the stream). Every checkpoint holds the
position (the last file trained to its end, and how many batches of the file in progress are
done), and a stream run resumes from its newest checkpoint by itself, so a trainer that stops
(SIGTERM, a crash, ``kill -9``) and starts again neither skips nor repeats a file or a batch: a
stream trained in pieces gives the same weights as one trained without stopping.

The schema, the table sizes and the automatic batch size come from the first file (recorded in
the checkpoints, so a restart needs no first file). Every example is scored before the model
trains on it, so each file reports the AUC and log loss of a model that had not seen it
(progressive validation). ``data.eval_path`` adds an evaluation of the final model.

Checkpoints are written every ``train.checkpoint_every`` steps and every
``train.checkpoint_seconds``, after each file when neither is set, and whenever the trainer has
trained everything that has arrived: a server following the run (``terarec serve --watch``)
then serves the newest data's model within seconds of the trainer catching up. SIGTERM or SIGINT
stop after the batch in flight and a final checkpoint; ``train.stream.idle_seconds`` stops once
no file has arrived for that long.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terarec.data import Batch, ColumnarData, DataFormat, DatasetStats, Schema, StreamDirectory, compute_stats
from terarec.data import load_dataset, read_stream_file
from terarec.embedding import EmbeddingCollection
from terarec.errors import ConfigError, DataError
from terarec.models import ModelType, model_class
from terarec.train.builders import build_deep_hash_tables, build_dense_optimizer, build_network, build_table_configs
from terarec.train.checkpoint import (
    TrainerState,
    checkpoint_step,
    latest_checkpoint,
    load_checkpoint,
    read_run_spec,
    save_checkpoint,
)
from terarec.train.config import Config, DensePrecision, LRDecay
from terarec.train.distributed import World
from terarec.train.metrics import compute_metrics
from terarec.train.placement import build_collection
from terarec.train.reporting import StepReporter
from terarec.train.signals import StopRequest
from terarec.train.schedule import auto_batch_size
from terarec.train.steps import (
    TrainingStep,
    TrainResult,
    advance,
    build_updates,
    check_cache_sizes,
    configure_threads,
    prepare_in_background,
    run_spec,
)
from terarec.train.tasks import ClickTask

__all__ = ["FileResult", "fit_stream"]


@dataclass(frozen=True)
class FileResult:
    """One file of a stream, trained: its ``name``, ``rows``, ``skipped_rows`` (``data.on_bad_row=skip``),
    the ``steps`` and ``seconds`` it took, and the progressive ``auc`` and ``logloss`` of the
    ``scored`` examples (those this process trained: fewer when it resumed inside the file)."""

    name: str
    rows: int
    skipped_rows: int
    steps: int
    seconds: float
    scored: int
    auc: float
    logloss: float


def _check_settings(config: Config, world: World) -> None:
    settings = config.train
    if world.size > 1:
        raise ConfigError("train.stream trains on one process; drop --nproc-per-node")
    if config.data.path is not None:
        raise ConfigError("train.stream.path and data.path are both set: a stream run reads its files from train.stream.path")
    if config.data.group_col is not None or config.model.type is ModelType.TWO_TOWER:
        raise ConfigError("train.stream trains click models (labels 0/1); learning to rank and two-tower retrieval train on a whole dataset")
    if settings.epochs is not None:
        raise ConfigError("train.epochs does not apply to train.stream: each file is trained once")
    if settings.lr_decay is not LRDecay.NONE:
        raise ConfigError("train.lr_decay needs a known number of steps; a stream has none (use train.warmup_steps only)")
    if settings.eval_every or config.data.val_path is not None:
        raise ConfigError("train.stream validates progressively (each file before it trains on it); drop train.eval_every and data.val_path")


class _StreamRun:
    """The state of one streaming run while it trains (see the module docstring)."""

    def __init__(self, config: Config, world: World, stop: StopRequest) -> None:
        _check_settings(config, world)
        self.world, self.stop = world, stop
        self.stream = stream = config.train.stream
        self.data_config = config.data
        assert stream.path is not None
        self.directory = StreamDirectory(Path(stream.path), config.data.format)  # a resumed run's: below
        self.run_dir = Path(config.train.out)
        self.threads = configure_threads(config.train.num_threads)
        self.files: list[dict[str, object]] = []
        self.late: list[str] = []
        self.ignored: list[str] = []
        self.state = TrainerState()
        checkpoint = latest_checkpoint(self.run_dir)
        schema, stats, first_file = self._origin(checkpoint)
        settings = replace(config.train, batch_size=config.train.batch_size or auto_batch_size(stats.num_rows))
        self.config = config = replace(config, train=settings)
        self.settings, self.schema = settings, schema
        self.batch_size = int(settings.batch_size or 0)
        model_type = model_class(config.model.type)
        tables = build_table_configs(config.embedding, schema.sparse_features, stats.distinct_ids, model_type)
        deep_hash_tables = build_deep_hash_tables(config.embedding, schema.sparse_features, model_type)
        check_cache_sizes(tables, max(self.batch_size, settings.eval_batch_size))
        self.tables = tables
        torch.manual_seed(settings.seed)
        tables_dir = Path(settings.tables_dir) if settings.tables_dir else self.run_dir / "tables"
        self.collection, _, placement = build_collection(config, tables, None, world, tables_dir)
        self.network = build_network(config.model, schema.num_dense, tables, deep_hash_tables, settings.seed)
        self.optimizer = build_dense_optimizer(settings, list(self.network.parameters()))
        if checkpoint is not None:
            self.state = load_checkpoint(checkpoint, self.network, self.collection, self.optimizer, restore_rng=True)  # type: ignore[arg-type]
            self.directory = StreamDirectory(Path(stream.path), config.data.format, read=self.state.stream_files)
        self.saved_state = self.state if checkpoint is not None else None
        self.spec = run_spec(
            config, schema, tables, deep_hash_tables, world, placement,
            stream={"path": stream.path, "first_file": first_file, "first_file_stats": stats.to_dict()},
        )
        eval_data = None
        if config.data.eval_path is not None:
            eval_data = load_dataset(config.data.eval_path, config.data)
            if eval_data.schema != schema:
                raise DataError(f"data.eval_path {config.data.eval_path}: its columns differ from the stream's: "
                                f"dense {list(eval_data.schema.dense_features)}, sparse {list(eval_data.schema.sparse_features)}")
        bf16 = settings.dense_precision is DensePrecision.BF16
        self.task = ClickTask(None, eval_data, settings.eval_batch_size, bf16)
        self.updates = build_updates(config, self.collection, tables)
        self.train_step = TrainingStep(config, self.task, self.network, self.network, self.optimizer, self.collection, self.updates, world)
        self.last_save = time.monotonic()

    def _origin(self, checkpoint: Path | None) -> tuple[Schema, DatasetStats, str]:
        """The stream's schema, its first file's statistics (which size the tables) and that
        file's name: from the newest checkpoint, else from the first file to arrive."""
        if checkpoint is not None:
            spec = read_run_spec(checkpoint)
            origin = spec.get("stream")
            if not isinstance(origin, dict):
                raise ConfigError(f"{self.run_dir} holds checkpoints of a run that did not stream; give train.out a new directory")
            return Schema.from_dict(spec["schema"]), DatasetStats.from_dict(origin["first_file_stats"]), str(origin["first_file"])  # type: ignore[arg-type]
        first = self._wait_for_file(None, on_caught_up=None)
        if first is None:
            raise DataError(f"{self.stream.path}: no data file arrived (train.stream.idle_seconds={self.stream.idle_seconds})")
        data = self._read(first, None)
        return data.schema, compute_stats(data), first.name

    # --- files -------------------------------------------------------------------------------

    def _last_file(self) -> str | None:
        return self.state.stream_files[-1] if self.state.stream_files else None

    def _format(self, path: Path) -> DataFormat:
        fmt = self.directory.format_of(path)
        if fmt is None:
            raise ConfigError(f"{path}: the file's suffix names no data format; set data.format")
        return fmt

    def _read(self, path: Path, schema: Schema | None) -> ColumnarData:
        return read_stream_file(path, self._format(path), self.data_config, schema)

    def _wait_for_file(self, after: str | None, on_caught_up: Callable[[], object] | None) -> Path | None:
        """The next ready file after ``after``, calling ``on_caught_up`` once when there is none
        yet; ``None`` on a stop request or after ``train.stream.idle_seconds`` without one."""
        stream = self.stream
        idle_since = time.monotonic()
        caught_up = False
        while not self.stop.requested:
            listing = self.directory.poll(after)
            for name in listing.late:
                print(f"stream: {name} arrived after a file that sorts after it was trained; it is not read "
                      f"(name files in the order they are to be trained)", flush=True)
            for name in listing.ignored:
                print(f"stream: {name} is not read: its suffix names no data format", flush=True)
            self.late.extend(listing.late)
            self.ignored.extend(listing.ignored)
            if listing.ready:
                return listing.ready[0]
            if not caught_up and on_caught_up is not None:
                on_caught_up()
            caught_up = True
            if stream.idle_seconds is not None and time.monotonic() - idle_since >= stream.idle_seconds:
                return None
            self.stop.wait(stream.poll_seconds)
        return None

    # --- checkpoints -------------------------------------------------------------------------

    def checkpoint_if_changed(self) -> Path | None:
        """A checkpoint of the state now, unless the newest one holds it already."""
        if self.state == self.saved_state:
            return None
        saved = save_checkpoint(
            self.run_dir, self.state, self.network, self.optimizer, self.collection, self.spec,  # type: ignore[arg-type]
            self.settings.keep_checkpoints, self.world,
        )
        self.saved_state, self.last_save = self.state, time.monotonic()
        self.write_metrics(saved)
        return saved

    def _due_by_time(self) -> bool:
        seconds = self.settings.checkpoint_seconds
        return bool(seconds) and time.monotonic() - self.last_save >= seconds

    # --- training ----------------------------------------------------------------------------

    def _segment(self, loader: Any, count: int, segment_over: threading.Event) -> Iterator[Batch]:
        """Up to ``count`` batches of the file from the state's position; ends early, before
        preparing a batch, once ``segment_over`` is set (so every prepared batch is trained)."""
        batches = loader.iterate(self.state.epoch, self.state.batch_in_epoch)
        with contextlib.closing(batches):
            for batch in islice(batches, count):
                if segment_over.is_set():
                    return
                yield batch

    def train_file(self, path: Path, reporter: StepReporter) -> bool:
        """Trains the rest of ``path``; returns whether it was trained to its end."""
        state = self.state
        try:
            data = self._read(path, self.schema)
        except DataError:
            self.checkpoint_if_changed()  # what was trained before the bad file is kept
            raise
        if state.stream_file is None:
            self.state = state = replace(state, stream_file=path.name, stream_file_rows=data.num_rows, batch_in_epoch=0)
        elif state.stream_file_rows != data.num_rows:
            raise DataError(
                f"{path}: has {data.num_rows} rows, but {state.stream_file_rows} when training on it began; "
                f"a file must not change once it has its final name"
            )
        loader = self.task.batch_loader(data, self.batch_size, shuffle=self.settings.shuffle, seed=self.settings.seed)
        started, start_step, file_epoch = time.perf_counter(), state.step, state.epoch
        scores: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        every, cap = self.settings.checkpoint_every, self.settings.steps
        while self.state.epoch == file_epoch and loader.num_batches > 0:
            step = self.state.step
            count = loader.num_batches - self.state.batch_in_epoch
            if every:
                count = min(count, (step // every + 1) * every - step)
            if cap:
                count = min(count, cap - step)
            if count <= 0:
                break
            segment_over = threading.Event()
            prepared = prepare_in_background(self.collection, self._segment(loader, count, segment_over))
            with contextlib.closing(prepared) as batches:
                for batch, lookups in batches:
                    output = self.train_step(batch, lookups, self.state.step, 0)
                    self.state = advance(self.state, output.examples, loader.num_batches)
                    assert output.scores is not None
                    scores.append(output.scores.reshape(-1).numpy())
                    labels.append(batch.labels.reshape(-1).numpy())
                    if reporter.log_step(self.state.step, float(output.loss), output.examples):
                        reporter.log_metrics("tables", self.collection.counters(), self.state.step)
                    if self.stop.requested or self._due_by_time():
                        segment_over.set()
            self.updates.drain()
            finished = self.state.epoch != file_epoch
            if finished:
                self.state = self._finished(path.name, self.state.epoch)
            if (every and self.state.step % every == 0) or self._due_by_time() or (finished and not every and not self.settings.checkpoint_seconds):
                self.checkpoint_if_changed()
            if self.stop.requested or (cap and self.state.step >= cap):
                break
        if loader.num_batches == 0:  # an empty file: trained to its end by taking note of it
            self.state = self._finished(path.name, file_epoch + 1)
        if self.state.epoch == file_epoch:
            return False
        self._record_file(path, data, self.state.step - start_step, time.perf_counter() - started, scores, labels)
        return True

    def _finished(self, name: str, epoch: int) -> TrainerState:
        """The state once file ``name`` is trained to its end, ``epoch`` files in."""
        return replace(self.state, epoch=epoch, stream_files=(*self.state.stream_files, name), stream_file=None, stream_file_rows=0)

    def _record_file(
        self, path: Path, data: ColumnarData, steps: int, seconds: float, scores: list[np.ndarray], labels: list[np.ndarray]
    ) -> None:
        scored = int(sum(part.size for part in labels))
        metrics = {"auc": float("nan"), "logloss": float("nan")}
        if scored:
            logits = np.concatenate(scores).astype(np.float64)
            probabilities = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid, without overflow
            metrics = compute_metrics(np.concatenate(labels), probabilities).to_dict()
        result = FileResult(
            path.name, data.num_rows, data.skipped_rows, steps, seconds, scored, float(metrics["auc"]), float(metrics["logloss"])
        )
        self.files.append(asdict(result))
        rate = result.rows / seconds if seconds > 0 else 0.0
        print(
            f"stream: trained {result.name}: {result.rows:,} rows in {steps:,} steps ({rate:,.0f} examples/s); "
            f"progressive AUC {result.auc:.4f}, log loss {result.logloss:.4f} on {scored:,} examples",
            flush=True,
        )

    def run(self) -> TrainResult:
        started = time.perf_counter()
        start_examples = self.state.examples_seen
        progress = self.settings.progress
        with (
            StepReporter(self.run_dir, None, self.state.step, self.settings.log_every, progress) as reporter,
            contextlib.closing(self.updates),
        ):
            cap = self.settings.steps
            while not self.stop.requested and not (cap and self.state.step >= cap):
                if self.state.stream_file is not None:
                    path = self.directory.path / self.state.stream_file
                    if not path.is_file():
                        raise DataError(f"{path}: the file in progress at step {self.state.step} is gone; it must stay until trained")
                else:
                    found = self._wait_for_file(self._last_file(), on_caught_up=self.checkpoint_if_changed)
                    if found is None:
                        break
                    path = found
                if self.train_file(path, reporter):
                    reporter.log_metrics("stream", {k: v for k, v in self.files[-1].items() if k in ("auc", "logloss")}, self.state.step)
            self.checkpoint_if_changed()  # a fresh run has no checkpoint yet, so this writes one
            train_seconds = time.perf_counter() - started
            checkpoint = latest_checkpoint(self.run_dir)
            assert checkpoint is not None
            evaluation: dict[str, float] = {}
            if self.task.splits["eval"] is not None:
                evaluation = self.task.evaluate(self.network, self.collection, "eval", self.world)
                reporter.log_metrics("eval", evaluation, self.state.step)
        trained = self.state.examples_seen - start_examples
        metrics = self.write_metrics(checkpoint, evaluation, trained / train_seconds if train_seconds > 0 else 0.0)
        return TrainResult(metrics=metrics, run_dir=self.run_dir, checkpoint=checkpoint)

    def write_metrics(self, checkpoint: Path, evaluation: dict[str, float] | None = None, rate: float | None = None) -> dict[str, object]:
        """``OUT/metrics.json`` of the stream so far (written at every checkpoint and at the end)."""
        result: dict[str, object] = {
            **(evaluation or {}),
            "stream": {
                "path": self.stream.path,
                "files": list(self.files),
                "files_trained": self.state.epoch,
                "last_file": self._last_file(),
                "file_in_progress": self.state.stream_file,
                "late_files": list(self.late),
                "ignored_files": list(self.ignored),
            },
            "steps": self.state.step,
            "model_step": checkpoint_step(checkpoint),
            "train_examples": self.state.examples_seen,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "world_size": self.world.size,
            "checkpoint": str(checkpoint),
            "dense_parameters": sum(p.numel() for p in self.network.parameters()),
            "tables": self.collection.counters(),
            "table_ram_bytes": sum(e.ram_bytes for e in EmbeddingCollection.estimate_memory(self.tables).values()),
            "config": self.config.to_dict(),
        }
        if rate is not None:
            result["examples_per_second"] = rate
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        return result


def fit_stream(config: Config, world: World) -> TrainResult:
    """Trains on the files arriving in ``config.train.stream.path`` (see the module docstring)
    until SIGTERM, SIGINT, ``train.steps`` or ``train.stream.idle_seconds``; writes a final
    checkpoint and ``OUT/metrics.json``.

    Raises:
        ConfigError: for settings that need a dataset known up front (epochs, learning-rate
            decay, validation splits), several ranks, or a run directory of a run that did not stream.
        DataError: for a malformed file (file, line and column named; what was trained before
            it is checkpointed), a file whose columns differ from the first one's, or a file in
            progress that changed or disappeared.
    """
    with StopRequest() as stop:
        return _StreamRun(config, world, stop).run()
