"""Cold start: the first ``terarec train`` after an install compiles terarec's kernels; how much
longer than the next run does it take?

Each round makes an empty numba cache (``NUMBA_CACHE_DIR``) and runs the same ``terarec train``
twice in it: cold (every kernel compiled) and warm (every kernel loaded from the cache). It reports
both runs' wall time (process start to exit), the training throughput the run prints, and the
cold/warm ratio of the wall times. The default run is ``terarec train``'s own default (DCN-v2 on
2M synthetic Criteo-shaped examples); ``--quick`` trains on 200k.

    python bench/cold_start.py --json bench/results/cold_start.json
    python bench/cold_start.py --quick
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, write_json  # noqa: E402

_TRAIN_LINE = re.compile(r"train: ([\d,]+) examples in ([\d,]+) steps, ([\d,]+) examples/s; total ([\d.]+)s")


def _run(cache: Path, out: Path, extra: list[str]) -> dict[str, float]:
    command = [sys.executable, "-m", "terarec", "train", "--out", str(out), "--no-progress", *extra]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"terarec train failed: {done.stderr[-2000:]}")
    match = _TRAIN_LINE.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no training line in the output: {done.stdout[-2000:]}")
    return {"wall_seconds": wall, "examples_per_second": float(match.group(3).replace(",", "")),
            "reported_seconds": float(match.group(4))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k examples instead of 2M")
    parser.add_argument("--repeats", type=int, default=2, help="cold-then-warm rounds, each in a fresh cache")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("train_args", nargs="*", help="extra arguments of terarec train (after --)")
    args = parser.parse_args()
    extra = list(args.train_args) + (["--set", "data.synthetic.num_examples=200000"] if args.quick else [])
    rounds = []
    for round_index in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="terarec-cold-") as scratch:
            root = Path(scratch)
            cold = _run(root / "numba", root / "cold", extra)
            warm = _run(root / "numba", root / "warm", extra)
        ratio = cold["wall_seconds"] / warm["wall_seconds"]
        rounds.append({"cold": cold, "warm": warm, "ratio": ratio})
        print(f"round {round_index + 1}: cold {cold['wall_seconds']:.1f} s ({cold['examples_per_second']:,.0f} examples/s), "
              f"warm {warm['wall_seconds']:.1f} s ({warm['examples_per_second']:,.0f} examples/s): cold/warm {ratio:.3f}",
              flush=True)
    print(f"median cold/warm {statistics.median(r['ratio'] for r in rounds):.3f} over {len(rounds)} rounds")
    write_json(args.json, {"machine": machine_info(), "quick": args.quick, "train_args": extra, "rounds": rounds})


if __name__ == "__main__":
    main()
