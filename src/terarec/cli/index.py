"""``terarec index RUN``: an approximate nearest-neighbour index over a retrieval run's items."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``index`` subcommand to the ``terarec`` parser."""
    index = commands.add_parser("index", help="index every item of a two-tower run for nearest-neighbour retrieval (faiss)")
    index.add_argument("run", type=Path, metavar="RUN", help="the --out directory of a two-tower run (or one of its checkpoints)")
    index.add_argument("--out", type=Path, metavar="DIR", help="where the index goes; default: RUN/index")
    index.add_argument("--kind", choices=["ivf", "hnsw", "flat"], default="ivf", help="index family: ivf (inverted lists, the default), hnsw (graph) or flat (exact)")


def run(args: argparse.Namespace) -> int:
    """Builds, measures and saves the index; prints what it measured."""
    from terarec.serve import IndexKind, index_run

    report = index_run(args.run, args.out, IndexKind(args.kind))
    print(
        f"indexed {report['num_items']:,} items x {report['dim']} ({report['kind']}, {report['params']}) into {report['path']}\n"
        f"against exact search over {report['queries']:,} evaluation queries: recall@10 {report['recall@10']:.4f}, "
        f"recall@100 {report['recall@100']:.4f}; {report['queries_per_second']:,.0f} single-query searches/s on one "
        f"thread (exact: {report['exact_queries_per_second']:,.0f}/s)"
    )
    return 0
