"""``terarec export RUN --out DIR`` and ``terarec serve DIR``: a trained model as a service."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from terarec.errors import ConfigError

__all__ = ["add_parsers", "export", "serve"]


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``export`` and ``serve`` subcommands to the ``terarec`` parser."""
    export_parser = commands.add_parser("export", help="write a run's model as a self-contained model directory for serving")
    export_parser.add_argument("run", type=Path, metavar="RUN", help="the --out directory of a run (its best checkpoint, else its newest), or a checkpoint")
    export_parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the model directory to create (must not exist)")
    serve_parser = commands.add_parser("serve", help="answer /score and /retrieve over HTTP with an exported model (FastAPI + uvicorn)")
    serve_parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a model directory of terarec export")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to listen on; default: 127.0.0.1 (this machine only)")
    serve_parser.add_argument("--port", type=int, default=8080, help="port; default: 8080")
    serve_parser.add_argument("--uds", type=Path, metavar="PATH", help="listen on this Unix domain socket instead of --host/--port (behind a local proxy)")
    serve_parser.add_argument("--workers", type=int, default=1, help="worker processes; they share one copy of the tables (memory-mapped); default: 1")
    serve_parser.add_argument("--token-file", type=Path, metavar="FILE", help="require 'Authorization: Bearer <the file's first line>' on /score and /retrieve")
    serve_parser.add_argument("--max-candidates", type=int, default=1000, help="most candidates per /score request; default: 1000")
    serve_parser.add_argument("--max-k", type=int, default=1000, help="largest k of /retrieve; default: 1000")
    serve_parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413; default: 1 MiB")
    serve_parser.add_argument("--watch", type=Path, metavar="RUN_DIR", help="swap in each newer checkpoint of this training run while serving (hot reload)")
    serve_parser.add_argument("--watch-seconds", type=float, default=1.0, help="how often --watch looks for a new checkpoint; default: 1")
    serve_parser.add_argument("--cache-bytes", type=int, metavar="N", help="RAM per worker for the rows of tables trained tiered (read from their files through a cache); default: the caches they trained with")
    serve_parser.add_argument("--threads", type=int, default=1, help="torch and numba threads per worker; default: 1 (use --workers for more cores)")
    serve_parser.add_argument("--timeout", type=float, default=10.0, help="seconds of model work before a request gets 503; default: 10")


def export(args: argparse.Namespace) -> int:
    """Exports the run and prints what was written."""
    from terarec.serve import export_run

    report = export_run(args.run, args.out)
    index = f", an index of {report.indexed_items:,} items" if report.indexed_items else ""
    print(f"exported {report.checkpoint} as version {report.version} into {report.path}: "
          f"{report.files} files, {report.bytes:,} bytes{index}")
    return 0


def serve(args: argparse.Namespace) -> int:
    """Opens the model directory (refusing a corrupt one before listening) and serves it."""
    import uvicorn

    from terarec.serve import ServedModel, ServeSettings, create_app
    from terarec.serve.app import configure_process, settings_environment

    for name in ("workers", "threads", "max_candidates", "max_k", "max_body_bytes"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.cache_bytes is not None and args.cache_bytes < 1:
        raise ConfigError(f"--cache-bytes must be >= 1, got {args.cache_bytes}")
    if not 0 < args.timeout:
        raise ConfigError(f"--timeout must be > 0, got {args.timeout}")
    token = None
    if args.token_file is not None:
        lines = args.token_file.read_text().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigError(f"--token-file {args.token_file}: the first line is empty; it must hold the token")
    if not 0 < args.watch_seconds:
        raise ConfigError(f"--watch-seconds must be > 0, got {args.watch_seconds}")
    if args.watch is not None and not args.watch.is_dir():
        raise ConfigError(f"--watch {args.watch}: not a directory; give the --out directory of a training run")
    settings = ServeSettings(
        str(args.model_dir), args.max_body_bytes, args.max_candidates, args.max_k, token, args.timeout,
        watch_run=None if args.watch is None else str(args.watch), watch_seconds=args.watch_seconds, threads=args.threads,
        cache_bytes=args.cache_bytes,
    )
    configure_process(settings)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s terarec serve: %(message)s"))
    logger = logging.getLogger("terarec.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    model = ServedModel(args.model_dir, args.cache_bytes)  # fails here, before listening, on a missing or corrupt file
    where = f"unix:{args.uds}" if args.uds else f"http://{args.host}:{args.port}"
    print(f"serving {args.model_dir} (version {model.version}, {model.task}) on {where} "
          f"with {args.workers} worker(s); OpenAPI at /docs", flush=True)
    listen = {"uds": str(args.uds)} if args.uds else {"host": args.host, "port": args.port}
    if args.workers == 1:
        uvicorn.run(create_app(settings, model), log_level="warning", **listen)
    else:
        del model
        os.environ.update(settings_environment(settings))
        uvicorn.run("terarec.serve.app:app_from_environment", factory=True, workers=args.workers, log_level="warning", **listen)
    return 0
