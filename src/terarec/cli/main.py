"""The ``terarec`` command: ``train``, ``eval``, ``prepare``, ``plan``, ``index``, ``export``, ``serve`` and ``report``.

Only this module reads ``argv``. Each flag is a shortcut for one dotted config key (shown in
its help); ``--set KEY=VALUE`` reaches any other key, and ``--config FILE`` loads a YAML file
underneath them. Errors the user can fix print as one line, not a traceback.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from terarec import __version__
from terarec.cli import index as _index
from terarec.cli import serve as _serve
from terarec.cli import plan as _plan
from terarec.cli.overrides import flag_overrides
from terarec.errors import TerarecError

if TYPE_CHECKING:
    from terarec.train import TrainResult

__all__ = ["main"]

# flag destination -> dotted config key; every shortcut flag is listed here once.
_TRAIN_SHORTCUTS = {
    "data": "data.path",
    "eval_data": "data.eval_path",
    "val_data": "data.val_path",
    "label_threshold": "data.label_threshold",
    "format": "data.format",
    "label": "data.label",
    "dense": "data.dense_features",
    "ignore": "data.ignore",
    "delimiter": "data.delimiter",
    "on_bad_row": "data.on_bad_row",
    "field_map": "data.libfm_field_map",
    "group_col": "data.group_col",
    "task": "train.task",
    "ranking_loss": "train.ranking.loss",
    "user_col": "data.interactions.user_col",
    "item_col": "data.interactions.item_col",
    "time_col": "data.interactions.time_col",
    "rating_col": "data.interactions.rating_col",
    "min_rating": "data.interactions.min_rating",
    "split": "data.interactions.split",
    "user_features": "data.interactions.user_features",
    "item_features": "data.interactions.item_features",
    "model": "model.type",
    "out": "train.out",
    "seed": "train.seed",
    "epochs": "train.epochs",
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "checkpoint_every": "train.checkpoint_every",
    "checkpoint_seconds": "train.checkpoint_seconds",
    "stream": "train.stream.path",
    "idle_seconds": "train.stream.idle_seconds",
    "threads": "train.num_threads",
    "mode": "sharding.mode",
    "comm_precision": "sharding.comm_precision",
}
_DATA_FLAGS = ("data", "format", "label", "label_threshold", "dense", "ignore", "delimiter", "on_bad_row", "field_map", "group_col")


def _add_data_flags(parser: argparse.ArgumentParser, data_help: str) -> None:
    parser.add_argument("--data", metavar="PATH", help=data_help)
    parser.add_argument("--format", choices=["criteo", "csv", "parquet", "libfm", "interactions", "prepared"], help="input format (data.format); default: from the file name")
    parser.add_argument("--label", metavar="COL", help="label column of CSV/Parquet input (data.label)")
    parser.add_argument("--label-threshold", type=float, metavar="X", help="positive when the label is >= X, e.g. a rating (data.label_threshold)")
    parser.add_argument("--dense", metavar="COLS", help="comma-separated dense columns (data.dense_features); every other column is sparse")
    parser.add_argument("--ignore", metavar="COLS", help="comma-separated columns to leave out (data.ignore)")
    parser.add_argument("--delimiter", metavar="CHAR", help="CSV field delimiter (data.delimiter)")
    parser.add_argument("--on-bad-row", choices=["error", "skip"], help="stop at a malformed row or skip and count it (data.on_bad_row)")
    parser.add_argument("--field-map", metavar="FILE", help="libFM input: 'index field' lines naming each index's field (data.libfm_field_map)")
    parser.add_argument("--group-col", metavar="COL", help="learning to rank: the query (group) column; labels are relevance grades (data.group_col)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="terarec", description="Train and serve recommendation models with huge embedding tables.")
    parser.add_argument("--version", action="version", version=f"terarec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model (synthetic Criteo-shaped data by default)")
    train.add_argument("--config", type=Path, metavar="FILE", help="YAML config; flags override it")
    _add_data_flags(train, "training data: file, comma-separated files, glob or directory (data.path); default: synthetic")
    train.add_argument("--eval-data", metavar="PATH", help="evaluation data (data.eval_path); default: the last 10%% of --data")
    train.add_argument("--val-data", metavar="PATH", help="validation data for early stopping (data.val_path); default: the last 10%% of the training rows")
    interactions = train.add_argument_group("interaction logs (--format interactions: retrieval with --model two_tower)")
    for column in ("user", "item", "time", "rating"):
        interactions.add_argument(f"--{column}-col", metavar="COL", help=f"the {column} column (data.interactions.{column}_col)")
    interactions.add_argument("--min-rating", type=float, metavar="X", help="drop events rated below X (data.interactions.min_rating)")
    interactions.add_argument("--split", choices=["leave_last_out", "time", "random"], help="how events are split (data.interactions.split); default: leave_last_out")
    interactions.add_argument("--user-features", metavar="FILE", help="user side features, e.g. RecBole's .user (data.interactions.user_features)")
    interactions.add_argument("--item-features", metavar="FILE", help="item side features, e.g. RecBole's .item (data.interactions.item_features)")
    train.add_argument("--task", choices=["click", "retrieval", "ranking"], help="what the run learns (train.task); default: from the data")
    train.add_argument("--ranking-loss", choices=["pairwise_logistic", "softmax", "approx_ndcg"], help="learning-to-rank loss (train.ranking.loss); default: softmax")
    train.add_argument("--model", metavar="NAME", help="model (model.type): lr, dnn, dlrm, dcnv2, deepfm, wide_deep, xdeepfm, finalmlp, or two_tower for retrieval; default: dcnv2")
    train.add_argument("--out", metavar="DIR", help="run directory for metrics and checkpoints (train.out)")
    train.add_argument("--seed", type=int, help="seed of tables, dense weights and data order (train.seed)")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="most passes over the training data (train.epochs); default: from the row count")
    length.add_argument("--steps", type=int, help="train for this many steps instead (train.steps)")
    train.add_argument("--batch-size", type=int, help="examples per step (train.batch_size); default: from the row count")
    train.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps (train.checkpoint_every)")
    train.add_argument("--checkpoint-seconds", type=float, metavar="S", help="also checkpoint every S seconds (train.checkpoint_seconds)")
    streaming = train.add_argument_group("continuous training (instead of --data)")
    streaming.add_argument("--stream", metavar="DIR", help="train on data files as they arrive in DIR, in name order, each once; resumes by itself (train.stream.path)")
    streaming.add_argument("--idle-seconds", type=float, metavar="S", help="stop once no file has arrived for S seconds (train.stream.idle_seconds); default: run until SIGTERM/SIGINT")
    train.add_argument("--threads", type=int, help="torch and numba threads (train.num_threads); default: all cores")
    train.add_argument("--resume", action="store_true", help="continue exactly from the newest checkpoint in --out")
    train.add_argument(
        "--nproc-per-node",
        type=int,
        metavar="N",
        help="train on N processes of this machine, started by torchrun (tables sharded over them); "
        "across machines run `torchrun --nnodes ... -m terarec train` instead",
    )
    train.add_argument("--mode", choices=["sync", "hybrid"], help="embedding updates with several processes (sharding.mode)")
    train.add_argument(
        "--comm-precision", choices=["fp32", "bf16", "fp16"], help="pooled embeddings on the wire (sharding.comm_precision)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any config key, e.g. --set embedding.embedding_dim=32")
    train.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")

    evaluate = commands.add_parser("eval", help="evaluate a saved model")
    evaluate.add_argument("--checkpoint", required=True, type=Path, metavar="PATH", help="checkpoint directory, or a run directory (newest checkpoint)")
    _add_data_flags(evaluate, "data to score; default: the run's own evaluation data")
    evaluate.add_argument("--json", type=Path, metavar="FILE", help="also write the metrics as JSON")

    prepare = commands.add_parser("prepare", help="convert raw files once into terarec's fast memory-mapped format")
    _add_data_flags(prepare, "raw input: file, comma-separated files, glob or directory")
    prepare.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to create")
    report = commands.add_parser("report", help="plot a run's learning curves and calibration (pip install 'terarec[plot]')")
    report.add_argument("run", type=Path, metavar="RUN", help="the --out directory of a finished run")
    report.add_argument("--out", type=Path, metavar="DIR", help="where the PNG files go; default: RUN/report")
    _plan.add_parser(commands)
    _index.add_parser(commands)
    _serve.add_parsers(commands)
    return parser


def _without_launch_flag(argv: Sequence[str]) -> list[str]:
    """``argv`` less ``--nproc-per-node N`` (or ``=N``): what each launched process runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            out.append(arg)
    return out


def _launch(processes: int, argv: Sequence[str]) -> int:
    """Runs ``terarec <argv>`` on ``processes`` local ranks through torchrun's launcher; when a
    rank fails, the launcher stops the others and this names the rank and how it ended."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if processes < 1:
        raise TerarecError(f"--nproc-per-node must be >= 1, got {processes}")
    # torchrun would otherwise set 1 and warn; terarec sets its own thread counts per rank.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    launcher = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={processes}", "-m", "terarec", *_without_launch_flag(argv)]
    )
    try:
        run(launcher)
    except ChildFailedError as error:
        ended = []
        for rank, failure in sorted(error.failures.items()):
            how = f"killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exit code {failure.exitcode}"
            ended.append(f"rank {rank} (pid {failure.pid}): {how}")
        print(
            f"terarec: error: training stopped: {'; '.join(ended)}. The other ranks were stopped; "
            f"rerun with --resume to continue from the last checkpoint",
            file=sys.stderr,
        )
        return 1
    return 0


def _is_primary_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _train(args: argparse.Namespace) -> int:
    from terarec.embedding import format_bytes
    from terarec.train import fit, load_config

    config = load_config(args.config, flag_overrides(args, _TRAIN_SHORTCUTS))
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.nproc_per_node is not None and "WORLD_SIZE" not in os.environ:
        return _launch(args.nproc_per_node, args.argv)
    primary = _is_primary_rank()
    source = config.data.path or (f"the files arriving in {config.train.stream.path}" if config.train.stream.path else "synthetic Criteo-shaped data")
    ranks = f" on {os.environ['WORLD_SIZE']} ranks" if "WORLD_SIZE" in os.environ else ""
    if primary:
        print(f"terarec {__version__}: training {config.model.type.value} on {source}{ranks} -> {config.train.out}", flush=True)
    started = time.perf_counter()
    result = fit(config)
    if not primary:
        return 0
    metrics = result.metrics
    if "stream" in metrics:
        return _stream_summary(result, time.perf_counter() - started)
    if "ground_truth_auc" in metrics:
        print(f"ground-truth model (the ceiling): AUC {metrics['ground_truth_auc']:.4f}")
    if metrics["skipped_rows"]:
        print(f"skipped {metrics['skipped_rows']:,} malformed rows (data.on_bad_row=skip)")
    print(f"eval: {_metrics_line(metrics)}")
    if metrics["validation"]:
        best = metrics["model_step"]
        print(
            f"validation: {len(metrics['validation'])} rounds on {metrics['val_rows']:,} rows; the model of step "
            f"{best:,} was best{' and training stopped early' if metrics['stopped_early'] else ''}"
        )
    print(
        f"train: {metrics['train_examples']:,} examples in {metrics['steps']:,} steps, "
        f"{metrics['examples_per_second']:,.0f} examples/s; total {time.perf_counter() - started:.1f}s"
    )
    placement = f"tables: {format_bytes(metrics['table_ram_bytes'])} in RAM"
    if metrics["table_disk_bytes"]:
        placement += f", {format_bytes(metrics['table_disk_bytes'])} on disk"
    print("; ".join(filter(None, [placement, _tables_summary(metrics["tables"])])))
    if "comm_bytes_per_step" in metrics:
        kinds = collections.Counter(where["sharding"] for where in metrics["placement"].values())
        print(
            f"ranks: {metrics['world_size']}; tables {', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}; "
            f"embedding traffic {metrics['comm_bytes_per_step'] / 1e6:,.2f} MB per step (predicted "
            f"{metrics['predicted_comm_bytes_per_step'] / 1e6:,.2f})"
        )
    print(f"wrote {result.run_dir / 'metrics.json'} and {result.checkpoint}")
    return 0


def _stream_summary(result: TrainResult, seconds: float) -> int:
    """What a stream run trained, printed when it stops."""
    metrics = result.metrics
    stream = metrics["stream"]
    if "auc" in metrics:
        print(f"eval: {_metrics_line(metrics)}")
    print(
        f"stream: {stream['files_trained']:,} file(s) trained, the last {stream['last_file']}"
        f"{'; ' + stream['file_in_progress'] + ' in progress' if stream['file_in_progress'] else ''}; "
        f"{metrics['train_examples']:,} examples in {metrics['steps']:,} steps; total {seconds:.1f}s"
    )
    print(f"wrote {result.run_dir / 'metrics.json'} and {result.checkpoint}")
    return 0


def _metrics_line(metrics: dict[str, object]) -> str:
    """The evaluation metrics of ``metrics.json`` in one line: click prediction's or retrieval's."""
    from terarec.train.metrics import ClickMetrics
    from terarec.train.ranking import ranking_summary
    from terarec.train.retrieval_metrics import retrieval_summary

    if "map" in metrics:
        return ranking_summary(metrics)  # type: ignore[arg-type]
    if "auc" not in metrics:
        return retrieval_summary(metrics)  # type: ignore[arg-type]
    return ClickMetrics(**{field.name: metrics[field.name] for field in dataclasses.fields(ClickMetrics)}).summary()


def _tables_summary(counters: dict[str, float]) -> str:
    """One line on dynamic and tiered tables from ``metrics.json``'s ``tables`` counters."""
    totals: dict[str, float] = {}
    for key, value in counters.items():
        counter = key.rsplit("/", 1)[1]
        totals[counter] = totals.get(counter, 0.0) + value
    parts = []
    if "live_rows" in totals:
        parts.append(
            f"{totals['live_rows']:,.0f} live rows, {totals['admitted']:,.0f} IDs admitted, "
            f"{totals['rejected']:,.0f} rejected, {totals['evicted_ttl'] + totals['evicted_capacity']:,.0f} evicted"
        )
    if "cache_hits" in totals:
        lookups = totals["cache_hits"] + totals["cache_misses"]
        parts.append(
            f"cache hit rate {totals['cache_hits'] / max(lookups, 1.0):.3f}, "
            f"{totals['disk_read_bytes'] / 1e6:,.1f} MB read, {totals['disk_written_bytes'] / 1e6:,.1f} MB written"
        )
    return "; ".join(parts)


def _data_settings(args: argparse.Namespace) -> dict[str, object]:
    """The ``data.*`` keys given as flags, without their ``data.`` prefix."""
    return {
        key.removeprefix("data."): getattr(args, flag)
        for flag, key in _TRAIN_SHORTCUTS.items()
        if flag in _DATA_FLAGS and getattr(args, flag) is not None
    }


def _eval(args: argparse.Namespace) -> int:
    from terarec._dataclass_codec import from_mapping
    from terarec.data import DataConfig
    from terarec.train import evaluate_checkpoint
    from terarec.train.ranking import evaluate_ranking_checkpoint
    from terarec.train.retrieval import evaluate_retrieval_checkpoint, is_retrieval_run, run_config

    settings = _data_settings(args)
    if run_config(args.checkpoint).data.group_col is not None:
        if set(settings) - {"path"}:
            raise TerarecError("terarec eval of a ranking run reads data with the run's settings; only --data applies")
        ranked = evaluate_ranking_checkpoint(args.checkpoint, settings.get("path"))  # type: ignore[arg-type]
        print(_metrics_line(ranked))
        if args.json is not None:
            args.json.write_text(json.dumps(ranked, indent=2))
        return 0
    if is_retrieval_run(args.checkpoint):
        if settings:
            raise TerarecError("terarec eval of a retrieval run ranks its own evaluation queries; data flags do not apply")
        ranking = evaluate_retrieval_checkpoint(args.checkpoint)
        print(_metrics_line(ranking))
        if args.json is not None:
            args.json.write_text(json.dumps(ranking, indent=2))
        return 0
    path = settings.pop("path", None)
    typed = from_mapping(DataConfig, settings, "data")
    metrics, data = evaluate_checkpoint(args.checkpoint, path, {key: getattr(typed, key) for key in settings})
    print(metrics.summary())
    if data.skipped_rows:
        print(f"skipped {data.skipped_rows:,} malformed rows")
    if args.json is not None:
        args.json.write_text(json.dumps(metrics.to_dict(), indent=2))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from terarec._dataclass_codec import from_mapping
    from terarec.data import DataConfig, prepare_path

    config = from_mapping(DataConfig, _data_settings(args), "data")
    if config.path is None:
        raise TerarecError("terarec prepare needs --data PATH")
    started = time.perf_counter()
    stats = prepare_path(config, args.out)
    print(
        f"prepared {stats.rows:,} rows into {args.out} in {time.perf_counter() - started:.1f}s "
        f"(label mean {stats.label_mean:.4f})"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from terarec.train.report import write_report

    for path in write_report(args.run, args.out):
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``terarec`` command line; returns the process exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(raw)
    args.argv = raw
    handlers = {"train": _train, "eval": _eval, "prepare": _prepare, "report": _report, "plan": _plan.run, "index": _index.run,
                "export": _serve.export, "serve": _serve.serve}
    try:
        return handlers[args.command](args)
    except TerarecError as error:
        print(f"terarec: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as error:
        print(f"terarec: error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a disk that filled up while a tiered table wrote rows back
        print(f"terarec: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("terarec: interrupted", file=sys.stderr)
        return 130
