"""Embedding layer alone (lookup + backward + optimizer update): terarec vs plain PyTorch vs TorchRec.

Every system gets the same pre-built batches and upstream gradient, the same thread count, and
runs in its own child process so that its peak RSS is its own. In the same run the script
measures the machine's memory bandwidth (a parallel STREAM copy/triad) and, from the bytes of
weights and optimizer state each example reads and writes, the bandwidth bound in examples/s.

    python bench/embedding.py --quick --json bench/results/embedding_quick.json
    python bench/embedding.py --json bench/results/embedding.json

TorchRec is optional: install it with ``bash bench/install_torchrec.sh``; without it the
script says so and measures the rest.

Half-precision storage is measured when asked for: ``--systems terarec,terarec_bf16,torchrec,torchrec_fp16``
adds terarec with bfloat16 weights and state (stochastic rounding) and TorchRec with fp16
weights (its CPU TBE has no bf16; its optimizer state stays fp32). Each system's bound and
table bytes use its own bytes per value.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numba
import numpy as np
import torch

from _machine import (
    current_rss_bytes,
    huge_page_bytes,
    machine_info,
    median,
    peak_rss_bytes,
    print_table,
    run_in_child,
    set_threads,
    time_rounds,
    write_json,
)
from _workloads import BenchBatch, Workload, make_batches, make_workload, unique_rows_per_example

OPTIMIZERS = ("adagrad", "rowwise_adagrad", "sgd")
SYSTEMS = ("terarec", "pytorch", "torchrec")
HALF_SYSTEMS = ("terarec_bf16", "torchrec_fp16")
# Bytes per stored (weight, optimizer state) value of each system.
_VALUE_BYTES = {"terarec_bf16": (2, 2), "torchrec_fp16": (2, 4)}
LEARNING_RATE = 0.01
_STATE_FLOATS = {"sgd": lambda d: 0, "rowwise_adagrad": lambda d: 1, "adagrad": lambda d: d}


@numba.njit(parallel=True, cache=True)
def _copy(src, dst):
    for i in numba.prange(src.shape[0]):
        dst[i] = src[i]


@numba.njit(parallel=True, cache=True)
def _triad(a, b, c, scalar):
    for i in numba.prange(a.shape[0]):
        a[i] = b[i] + scalar * c[i]


def memory_bandwidth_gb_s(megabytes: int = 512, repeat: int = 5) -> dict[str, float]:
    """Best-of-``repeat`` STREAM copy and triad on every core, in GB/s (10^9 bytes)."""
    n = megabytes * 2**20 // 8
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    _copy(b, a)
    _triad(a, b, c, 3.0)
    copy_s = min(time_rounds(lambda _: _copy(b, a), 0, 1, repeat))
    triad_s = min(time_rounds(lambda _: _triad(a, b, c, 3.0), 0, 1, repeat))
    return {"copy": 2 * a.nbytes / copy_s / 1e9, "triad": 3 * a.nbytes / triad_s / 1e9}


def _row_bytes(workload: Workload, optimizer: str, system: str) -> int:
    weight_bytes, state_bytes = _VALUE_BYTES.get(system, (4, 4))
    return workload.embedding_dim * weight_bytes + _STATE_FLOATS[optimizer](workload.embedding_dim) * state_bytes


def bytes_per_example(workload: Workload, optimizer: str, unique_per_example: float, system: str = "terarec") -> float:
    """Weights read by the lookup, plus each touched row's weights and state read and written
    once, at ``system``'s bytes per value."""
    lookup = workload.ids_per_example * workload.embedding_dim * _VALUE_BYTES.get(system, (4, 4))[0]
    return lookup + unique_per_example * 2 * _row_bytes(workload, optimizer, system)


def table_bytes(workload: Workload, optimizer: str, system: str = "terarec") -> int:
    """Bytes of weights plus optimizer state of every table as ``system`` stores them: what
    peak RSS is compared with."""
    return sum(workload.num_embeddings) * _row_bytes(workload, optimizer, system)


def _terarec_step(workload: Workload, optimizer: str, dtype: str = "fp32"):
    from terarec import JaggedTensor
    from terarec.embedding import DataType, EmbeddingCollection, EmbeddingTableConfig, OptimizerConfig, OptimizerType

    configs = [
        EmbeddingTableConfig(
            name, rows, workload.embedding_dim, (name,), optimizer=OptimizerConfig(OptimizerType(optimizer), LEARNING_RATE),
            weights_dtype=DataType(dtype), state_dtype=DataType(dtype),
        )
        for name, rows in zip(workload.feature_names, workload.num_embeddings)
    ]
    collection = EmbeddingCollection(configs)

    def step(batch: BenchBatch) -> None:
        sparse = {name: JaggedTensor(values, offsets) for name, (values, offsets) in batch.features.items()}
        prepared = collection.prepare(sparse, parallel=True)  # synchronous: prepare may use every core
        collection.lookup(prepared)
        collection.apply_gradients(prepared, batch.grad)

    return step


def _pytorch_step(workload: Workload, optimizer: str):
    if optimizer == "rowwise_adagrad":
        return None  # torch.optim has no row-wise Adagrad
    bags = torch.nn.ModuleList(
        torch.nn.EmbeddingBag(rows, workload.embedding_dim, mode="sum", sparse=True, include_last_offset=True) for rows in workload.num_embeddings
    )
    params = list(bags.parameters())
    opt = torch.optim.Adagrad(params, lr=LEARNING_RATE) if optimizer == "adagrad" else torch.optim.SGD(params, lr=LEARNING_RATE)

    def step(batch: BenchBatch) -> None:
        pooled = torch.cat([bag(values, offsets) for bag, (values, offsets) in zip(bags, batch.features.values())], dim=1)
        pooled.backward(batch.grad)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _torchrec_step(workload: Workload, optimizer: str, batch_size: int, fp16: bool = False):
    from _torchrec import TORCHREC_AVAILABLE, make_torchrec_step

    if not TORCHREC_AVAILABLE:
        return None
    return make_torchrec_step(workload, optimizer, LEARNING_RATE, batch_size, fp16_weights=fp16)


def _make_step(system: str, workload: Workload, optimizer: str, batch_size: int):
    if system.startswith("terarec"):
        return _terarec_step(workload, optimizer, "bf16" if system == "terarec_bf16" else "fp32")
    if system == "pytorch":
        return _pytorch_step(workload, optimizer)
    return _torchrec_step(workload, optimizer, batch_size, fp16=system == "torchrec_fp16")


def run_child(spec: dict[str, object]) -> dict[str, object]:
    """Measures one (system, workload, distribution, optimizer) case in this process."""
    threads = set_threads(spec["threads"])
    workload = make_workload(spec["workload"], spec["max_rows"])
    batches = make_batches(workload, spec["distribution"], spec["batch_size"], spec["num_batches"], seed=0)
    system, optimizer = spec["system"], spec["optimizer"]
    # The baseline is what the process holds before any real table exists: the interpreter,
    # the batches and the system's code, made ready by one step of the same layer on 64-row
    # tables (terarec's numba kernels load at their first call, ~60 MB, where PyTorch's and
    # TorchRec's compiled kernels load at import). What the tables cost is measured above it;
    # the code's share is reported apart as code_rss_bytes.
    before_code = current_rss_bytes()
    tiny = make_workload(spec["workload"], 64)
    warm_step = _make_step(system, tiny, optimizer, spec["batch_size"])
    if warm_step is None:
        return {"skipped": True}
    warm_step(make_batches(tiny, spec["distribution"], spec["batch_size"], 1, seed=1)[0])
    del warm_step
    baseline = current_rss_bytes()
    step = _make_step(system, workload, optimizer, spec["batch_size"])
    rounds = time_rounds(lambda i: step(batches[i % len(batches)]), spec["warmup"], spec["steps"], spec["repeat"])
    return {
        "examples_per_second": spec["batch_size"] / median(rounds),
        "round_examples_per_second": [spec["batch_size"] / r for r in rounds],
        "peak_rss_bytes": peak_rss_bytes(),
        "baseline_rss_bytes": baseline,
        "code_rss_bytes": baseline - before_code,
        "huge_page_bytes": huge_page_bytes(),
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run (smaller tables, fewer steps)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--max-rows", type=int, help="cap on each table's rows (default 200k; 20k with --quick)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, help="torch and numba threads (default: every core)")
    parser.add_argument("--workloads", default="multihot,onehot")
    parser.add_argument("--distributions", default="zipf,uniform")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"of {', '.join(SYSTEMS + HALF_SYSTEMS)}")
    parser.add_argument("--processes", type=int, default=3, help="child processes per case, median taken (default 3)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return

    from _torchrec import TORCHREC_AVAILABLE, TORCHREC_UNAVAILABLE_REASON

    threads = set_threads(args.threads)
    max_rows = args.max_rows or (20_000 if args.quick else 200_000)
    timing = {"warmup": 2, "steps": 3, "repeat": 3} if args.quick else {"warmup": 3, "steps": 8, "repeat": 5}
    # Throughput varies between processes (where the tables land in memory) more than within
    # one, so one process per case can mislead, --quick included: the median over several
    # processes is the figure.
    processes = args.processes
    bandwidth = memory_bandwidth_gb_s(256 if args.quick else 1024)
    best_bandwidth = max(bandwidth.values())
    print(f"memory bandwidth: copy {bandwidth['copy']:.1f} GB/s, triad {bandwidth['triad']:.1f} GB/s; {threads} threads")
    if not TORCHREC_AVAILABLE:
        print(f"torchrec: not installed ({TORCHREC_UNAVAILABLE_REASON}); run bash bench/install_torchrec.sh")
    systems = [s for s in args.systems.split(",") if not s.startswith("torchrec") or TORCHREC_AVAILABLE]
    unknown = set(systems) - set(SYSTEMS + HALF_SYSTEMS)
    if unknown:
        parser.error(f"--systems: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SYSTEMS + HALF_SYSTEMS)}")
    results = []
    for workload_name in args.workloads.split(","):
        workload = make_workload(workload_name, max_rows)
        for distribution in args.distributions.split(","):
            sample = make_batches(workload, distribution, args.batch_size, 2, seed=0)
            unique = unique_rows_per_example(workload, sample)
            for optimizer in args.optimizers.split(","):
                # Processes of the systems alternate: the VM's speed drifts by up to 2x over
                # seconds to minutes (other tenants of the host), and alternating lets every
                # system meet the same spells; the paired ratios below compare neighbours.
                runs_by_system: dict[str, list[dict[str, object]]] = {system: [] for system in systems}
                for _ in range(processes):
                    for system, runs in runs_by_system.items():
                        if not runs or not runs[0].get("skipped"):
                            spec = {"system": system, "workload": workload_name, "distribution": distribution,
                                    "optimizer": optimizer, "max_rows": max_rows, "batch_size": args.batch_size,
                                    "threads": threads, "num_batches": 4, **timing}
                            runs.append(run_in_child(__file__, spec))
                case_rows: dict[str, dict[str, object]] = {}
                for system, runs in runs_by_system.items():
                    if any(run.get("skipped") for run in runs):
                        continue
                    measured = _median_run(runs)
                    bound = best_bandwidth * 1e9 / bytes_per_example(workload, optimizer, unique, system)
                    row = {"system": system, "workload": workload_name, "distribution": distribution,
                           "optimizer": optimizer, "examples_per_second": measured.get("examples_per_second"),
                           "bound_examples_per_second": bound, "peak_rss_bytes": measured.get("peak_rss_bytes"),
                           "baseline_rss_bytes": measured.get("baseline_rss_bytes"),
                           "code_rss_bytes": measured.get("code_rss_bytes"),
                           "unique_rows_per_example": unique, "table_bytes": table_bytes(workload, optimizer, system),
                           "process_examples_per_second": [run.get("examples_per_second") for run in runs],
                           "process_huge_page_bytes": [run.get("huge_page_bytes") for run in runs],
                           **{k: v for k, v in measured.items() if k == "error"}}
                    if row["examples_per_second"]:
                        row["memory_over_table_bytes"] = _memory_ratio(row)
                    results.append(row)
                    case_rows[system] = row
                    eps = row["examples_per_second"]
                    status = (
                        f"{eps:>12,.0f} ex/s ({eps / bound:5.1%} of bound {bound:,.0f}), "
                        f"memory {row['memory_over_table_bytes']:.2f}x table bytes"
                        if eps else f"error: {row.get('error')}"
                    )
                    print(f"{workload_name:>8} {distribution:>7} {optimizer:>15} {system:>13}: {status}", flush=True)
                for ours in ("terarec", "terarec_bf16"):
                    for other in case_rows:
                        if ours in case_rows and other != ours:
                            case_rows[ours][f"paired_vs_{other}"] = _paired_ratio(case_rows[ours], case_rows[other])
    _print_ratios(results)
    write_json(args.json, {
        "machine": machine_info(),
        "bandwidth_gb_s": best_bandwidth,
        "bandwidth_detail_gb_s": bandwidth,
        "torchrec": TORCHREC_AVAILABLE or TORCHREC_UNAVAILABLE_REASON,
        "settings": {"max_rows": max_rows, "batch_size": args.batch_size, "threads": threads, "processes": processes, **timing},
        "results": results,
    })


def _memory_ratio(row: dict[str, object]) -> float:
    """Peak RSS above the process's baseline (interpreter, torch, batches), over the bytes of
    weights and optimizer state: 1.0 is no overhead at all."""
    return (row["peak_rss_bytes"] - row["baseline_rss_bytes"]) / row["table_bytes"]


def _median_run(runs: list[dict[str, object]]) -> dict[str, object]:
    """The run with the median throughput (an error if any run failed)."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    return sorted(runs, key=lambda run: run["examples_per_second"])[len(runs) // 2]


def _paired_ratio(ours: dict[str, object] | None, theirs: dict[str, object] | None) -> float | None:
    """Median over process pairs run back to back of ours / theirs, or ``None``."""
    if not ours or not theirs:
        return None
    pairs = [a / b for a, b in zip(ours["process_examples_per_second"], theirs["process_examples_per_second"]) if a and b]
    return median(pairs) if pairs else None


def _print_ratios(results: list[dict[str, object]]) -> None:
    cases: dict[tuple[str, str, str], dict[str, dict[str, object]]] = {}
    for row in results:
        cases.setdefault((row["workload"], row["distribution"], row["optimizer"]), {})[row["system"]] = row
    table = []
    for (workload, distribution, optimizer), by_system in cases.items():
        ours = by_system.get("terarec")
        eps = {system: row["examples_per_second"] for system, row in by_system.items()}
        entry = {
            "case": f"{workload}/{distribution}/{optimizer}",
            "terarec": eps.get("terarec"),
            "pytorch": eps.get("pytorch"),
            "torchrec": eps.get("torchrec"),
            "vs_pytorch": eps["terarec"] / eps["pytorch"] if eps.get("terarec") and eps.get("pytorch") else None,
            "vs_torchrec": eps["terarec"] / eps["torchrec"] if eps.get("terarec") and eps.get("torchrec") else None,
            "paired_vs_pytorch": ours.get("paired_vs_pytorch") if ours else None,
            "paired_vs_torchrec": ours.get("paired_vs_torchrec") if ours else None,
            "memory": ours.get("memory_over_table_bytes") if ours else None,
        }
        table.append(entry)
    print()
    print_table(table, [("case", "case", ">32"), ("terarec", "terarec ex/s", ",.0f"), ("pytorch", "pytorch ex/s", ",.0f"),
                        ("torchrec", "torchrec ex/s", ",.0f"), ("vs_pytorch", "x pytorch", ".2f"), ("vs_torchrec", "x torchrec", ".2f"),
                        ("paired_vs_pytorch", "paired x pytorch", ".2f"), ("paired_vs_torchrec", "paired x torchrec", ".2f"),
                        ("memory", "terarec memory / table bytes", ".2f")])
    half = [row for row in results if row["system"] == "terarec_bf16" and row["examples_per_second"]]
    if half:
        print()
        print_table(
            [{"case": f"{r['workload']}/{r['distribution']}/{r['optimizer']}", **r} for r in half],
            [("case", "case", ">32"), ("examples_per_second", "terarec bf16 ex/s", ",.0f"),
             ("paired_vs_terarec", "paired x terarec fp32", ".2f"), ("paired_vs_torchrec", "paired x torchrec", ".2f"),
             ("paired_vs_torchrec_fp16", "paired x torchrec fp16", ".2f"),
             ("memory_over_table_bytes", "memory / bf16 table bytes", ".2f")],
        )  # fmt: skip


if __name__ == "__main__":
    main()
