"""terarec's embedding layer phase by phase (prepare, lookup, update), fp32 against bf16 storage.

Both collections live in one process and their steps alternate, so this VM's drift (up to 2x
over minutes) hits both alike: the ratios are the figures to read, not the milliseconds. Each
cell is the median over ``--repeat`` rounds of every batch.

    python bench/embedding_phases.py --json bench/results/embedding_phases.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _machine import machine_info, median, print_table, set_threads, write_json
from _workloads import make_batches, make_workload

from terarec import JaggedTensor
from terarec.embedding import DataType, EmbeddingCollection, EmbeddingTableConfig, OptimizerConfig, OptimizerType

PHASES = ("prepare", "lookup", "update")
LEARNING_RATE = 0.01


def _collection(workload, optimizer: str, dtype: DataType) -> EmbeddingCollection:
    configs = [
        EmbeddingTableConfig(
            name, rows, workload.embedding_dim, (name,), optimizer=OptimizerConfig(OptimizerType(optimizer), LEARNING_RATE),
            weights_dtype=dtype, state_dtype=dtype,
        )
        for name, rows in zip(workload.feature_names, workload.num_embeddings)
    ]  # fmt: skip
    return EmbeddingCollection(configs)


def measure_case(workload_name: str, distribution: str, optimizer: str, args: argparse.Namespace) -> dict[str, object]:
    """Median seconds per phase of each dtype, steps alternating between the dtypes."""
    workload = make_workload(workload_name, args.max_rows)
    batches = make_batches(workload, distribution, args.batch_size, 4, seed=0)
    sparse = [{name: JaggedTensor(values, offsets) for name, (values, offsets) in b.features.items()} for b in batches]
    collections = {dtype: _collection(workload, optimizer, dtype) for dtype in DataType}
    seconds: dict[DataType, dict[str, list[float]]] = {dtype: {phase: [] for phase in PHASES} for dtype in DataType}
    for round_index in range(args.repeat + 1):  # round 0 warms up (compiles, touches the rows)
        for i, batch in enumerate(batches):
            for dtype, collection in collections.items():
                t0 = time.perf_counter()
                prepared = collection.prepare(sparse[i], parallel=True)
                t1 = time.perf_counter()
                collection.lookup(prepared)
                t2 = time.perf_counter()
                collection.apply_gradients(prepared, batch.grad)
                t3 = time.perf_counter()
                if round_index:
                    for phase, elapsed in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2)):
                        seconds[dtype][phase].append(elapsed)
    row: dict[str, object] = {"workload": workload_name, "distribution": distribution, "optimizer": optimizer}
    for dtype in DataType:
        for phase in PHASES:
            row[f"{dtype.value}_{phase}_ms"] = median(seconds[dtype][phase]) * 1e3
        total = sum(row[f"{dtype.value}_{phase}_ms"] for phase in PHASES)
        row[f"{dtype.value}_examples_per_second"] = args.batch_size / total * 1e3
    for phase in PHASES:
        row[f"{phase}_speedup"] = row[f"fp32_{phase}_ms"] / row[f"bf16_{phase}_ms"]
    row["speedup"] = row["bf16_examples_per_second"] / row["fp32_examples_per_second"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--max-rows", type=int, default=200_000, help="cap on each table's rows")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, help="torch and numba threads (default: every core)")
    parser.add_argument("--workloads", default="multihot,onehot")
    parser.add_argument("--distributions", default="zipf,uniform")
    parser.add_argument("--optimizers", default="adagrad,rowwise_adagrad,sgd")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds over the batches")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    rows = []
    for workload in args.workloads.split(","):
        for distribution in args.distributions.split(","):
            for optimizer in args.optimizers.split(","):
                row = measure_case(workload, distribution, optimizer, args)
                rows.append({"case": f"{workload}/{distribution}/{optimizer}", **row})
                print(f"{row['workload']:>8} {distribution:>7} {optimizer:>15}: bf16 {row['speedup']:.2f}x fp32 "
                      f"(lookup {row['lookup_speedup']:.2f}x, update {row['update_speedup']:.2f}x)", flush=True)  # fmt: skip
    print()
    print_table(rows, [
        ("case", "case", ">32"), ("fp32_prepare_ms", "prepare ms", ".2f"),
        ("fp32_lookup_ms", "fp32 lookup ms", ".2f"), ("bf16_lookup_ms", "bf16 lookup ms", ".2f"),
        ("fp32_update_ms", "fp32 update ms", ".2f"), ("bf16_update_ms", "bf16 update ms", ".2f"),
        ("fp32_examples_per_second", "fp32 ex/s", ",.0f"), ("bf16_examples_per_second", "bf16 ex/s", ",.0f"),
        ("speedup", "bf16 / fp32", ".2f"),
    ])  # fmt: skip
    write_json(args.json, {
        "machine": machine_info(), "threads": threads, "load_average": [round(x, 2) for x in os.getloadavg()],
        "settings": {"max_rows": args.max_rows, "batch_size": args.batch_size, "repeat": args.repeat},
        "results": [{k: v for k, v in row.items() if k != "case"} for row in rows],
    })  # fmt: skip


if __name__ == "__main__":
    main()
