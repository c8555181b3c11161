"""Tables larger than RAM: a DLRM-shaped workload trained with its tables in RAM, tiered (RAM
cache over an SSD file holding the whole table), and in plain PyTorch.

- ``ram``: terarec ``FixedTable``s of ``--ram-rows`` rows each, all in RAM;
- ``tiered``: the same tables with ``--tiered-rows`` rows each (weights + Adagrad state well
  over the machine's RAM by default), every row written to the file before timing
  (``materialize``) and the file dropped from the kernel's page cache, and a RAM cache of
  ``--cache-fraction`` of the table bytes;
- ``pytorch``: ``nn.EmbeddingBag(sparse=True)`` + ``torch.optim.Adagrad`` at ``--ram-rows``;
- ``tiered_bf16`` (only when named in ``--cases``): ``tiered`` with weights and state stored in
  bfloat16, so the file, the cache (the same fraction of its own, halved bytes: the same rows)
  and every miss's I/O are half the size.

Every case trains the same DLRM (13 dense features, ``--features`` one-hot sparse features,
dim ``--dim``, MLPerf's MLPs or ``--mlp small``) with Adagrad on the same batches (generated as they are consumed, from a seed
per batch; terarec generates them on its prepare thread, PyTorch inline): Zipf(1.05) IDs over each
table's row range (hot IDs scattered by the hash) or uniform IDs. terarec runs as the trainer
does: batch ``n + 1`` is prepared (hashed, de-duplicated, and for tiered tables loaded from disk)
on a background thread while batch ``n`` trains. Each case runs in its own process, so peak
RSS is its own; ``memory_budget_bytes`` is what the tables were allowed in RAM (the cache and
its bookkeeping, for tiered), ``baseline_rss_bytes`` the process before any table existed.

    python bench/tiered.py --quick --json bench/results/tiered_quick.json
    python bench/tiered.py --json bench/results/tiered.json          # ~41 GB of tables on disk
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from _machine import (
    current_rss_bytes,
    machine_info,
    peak_rss_bytes,
    print_table,
    run_in_child,
    set_threads,
    write_json,
)
from torch import nn

if TYPE_CHECKING:
    from terarec.models import RecModel

CASES = ("ram", "tiered", "pytorch")
OPTIONAL_CASES = ("tiered_bf16",)
DISTRIBUTIONS = ("zipf", "uniform")
ZIPF_EXPONENT = 1.05
LEARNING_RATE = 0.01
NUM_DENSE = 13
_WARMUP_CHUNK = 10


def _ids(rng: np.random.Generator, rows: int, size: int, distribution: str) -> np.ndarray:
    """Raw IDs in ``[0, rows)``: bounded Zipf ranks (inverse CDF of the continuous law, no
    ``rows``-sized table) or uniform. The tables hash them, which scatters the hot ones."""
    if distribution == "uniform":
        return rng.integers(0, rows, size, dtype=np.int64)
    s = ZIPF_EXPONENT
    top = float(rows) ** (1.0 - s)
    ranks = ((top - 1.0) * rng.random(size) + 1.0) ** (1.0 / (1.0 - s))
    return np.minimum(ranks.astype(np.int64), rows) - 1


def _batch(spec: dict[str, object], rows: int, index: int) -> dict[str, object]:
    """Batch ``index``, generated when needed (seeded by its index, so every case sees the same
    batches) rather than held in memory, which would count against the peak RSS."""
    rng = np.random.default_rng([0, index])
    batch, features = spec["batch_size"], spec["features"]
    return {
        "dense": torch.from_numpy(rng.standard_normal((batch, NUM_DENSE), dtype=np.float32)),
        "labels": torch.from_numpy((rng.random(batch) < 0.25).astype(np.float32)),
        "ids": [_ids(rng, rows, batch, spec["distribution"]) for _ in range(features)],
    }


def _batches(spec: dict[str, object], rows: int, start: int, stop: int) -> Iterator[dict[str, object]]:
    return (_batch(spec, rows, index) for index in range(start, stop))


MLPS = {  # (bottom, top) hidden widths; DLRM appends the dim and the logit layers
    "mlperf": ((512, 256), (1024, 1024, 512, 256)),  # MLPerf DLRM's
    "small": ((128,), (256, 128)),
}


def _model(spec: dict[str, object]) -> RecModel:
    from terarec.models import DLRMConfig, InputSpec, ModelConfig, ModelType, build_model

    torch.manual_seed(0)
    bottom, top = MLPS[spec["mlp"]]
    names = tuple(f"C{f + 1}" for f in range(spec["features"]))
    config = ModelConfig(type=ModelType.DLRM, dlrm=DLRMConfig(bottom_mlp=bottom, top_mlp=top))
    return build_model(config, InputSpec(NUM_DENSE, names, (spec["dim"],) * len(names)))


def _logits(model: RecModel, dense: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    from terarec.models import ModelInput

    return model(ModelInput(dense, pooled, model.spec, model.layout))


def _terarec(spec: dict[str, object], rows: int, workdir: Path) -> dict[str, object]:
    from terarec._background import iterate_in_background
    from terarec.embedding import (
        DataType,
        EmbeddingCollection,
        EmbeddingTableConfig,
        OptimizerConfig,
        OptimizerType,
        TieredConfig,
    )
    from terarec.embedding.tiered import PHASES
    from terarec.sparse import JaggedTensor

    offsets = torch.arange(spec["batch_size"] + 1, dtype=torch.int64)
    optimizer = OptimizerConfig(OptimizerType.ADAGRAD, learning_rate=LEARNING_RATE)
    dtype = DataType.BF16 if spec["case"] == "tiered_bf16" else DataType.FP32
    configs = [
        EmbeddingTableConfig(
            f"C{i + 1}", rows, spec["dim"], (f"C{i + 1}",), optimizer=optimizer, weights_dtype=dtype, state_dtype=dtype
        )
        for i in range(spec["features"])
    ]
    tiered = spec["case"].startswith("tiered")
    if tiered:
        cache = int(configs[0].row_bytes * rows * spec["cache_fraction"])
        configs = [replace(c, tiered=TieredConfig(cache_bytes=cache)) for c in configs]
    baseline_rss = current_rss_bytes()
    collection = EmbeddingCollection(configs, directory=workdir)
    if tiered:
        started = time.perf_counter()
        for table in collection.tables.values():
            table._storage.materialize()
        print(f"materialized {sum(c.memory_estimate().disk_bytes for c in configs) / 1e9:.1f} GB "
              f"in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    model = _model(spec)
    dense_optimizer = torch.optim.Adagrad(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.BCEWithLogitsLoss()
    names = collection.feature_names

    def prepare(batch: dict[str, object]):
        sparse = {n: JaggedTensor(torch.from_numpy(ids), offsets) for n, ids in zip(names, batch["ids"])}
        return batch, collection.prepare(sparse)

    def train(items) -> float:
        """Trains on ``items``; returns the seconds the training thread waited for them."""
        waited, iterator = 0.0, iter(items)
        while True:
            began = time.perf_counter()
            try:
                batch, prepared = next(iterator)
            except StopIteration:
                return waited
            waited += time.perf_counter() - began
            pooled = collection.lookup(prepared)
            loss = loss_fn(_logits(model, batch["dense"], pooled.values), batch["labels"])
            loss.backward()
            collection.apply_gradients(prepared, pooled.values.grad)
            dense_optimizer.step()
            dense_optimizer.zero_grad(set_to_none=True)

    # Warm up: at least --warmup steps; a tiered cache until it is full (steady state: every
    # miss then evicts), at most --max-warmup steps.
    warmup = 0
    while warmup < spec["warmup"] or (tiered and warmup < spec["max_warmup"] and not _caches_full(collection)):
        chunk = _batches(spec, rows, warmup, warmup + _WARMUP_CHUNK)
        with contextlib.closing(iterate_in_background(map(prepare, chunk), 1)) as items:
            train(items)
        warmup += _WARMUP_CHUNK
    total = warmup + spec["steps"]
    before = collection.counters()
    started = time.perf_counter()
    with contextlib.closing(iterate_in_background(map(prepare, _batches(spec, rows, warmup, total)), 1)) as items:
        waited = train(items)
    seconds = time.perf_counter() - started
    after = collection.counters()
    result = {
        "examples_per_second": spec["steps"] * spec["batch_size"] / seconds,
        "table_bytes": sum(c.row_bytes * c.num_embeddings for c in configs),
        "memory_budget_bytes": sum(c.memory_estimate().ram_bytes for c in configs),
        "baseline_rss_bytes": baseline_rss,
    }
    result["wait_ms_per_step"] = waited / spec["steps"] * 1e3
    if tiered:
        result.update(_disk_figures(before, after, configs, seconds))
        result["phase_ms_per_step"] = {
            phase: sum(after[f"{c.name}/{phase}_seconds"] - before[f"{c.name}/{phase}_seconds"] for c in configs) / spec["steps"] * 1e3
            for phase in PHASES
        }
        result["warmup_steps"] = warmup
        result["device"] = _device_rates(collection.tables[configs[0].name]._storage.path, workdir, spec["probe_seconds"])
        record_bytes = configs[0].row_bytes
        result["engine_reads_per_s"] = result["disk_read_mb_s"] * 1e6 / record_bytes
        result["engine_writes_per_s"] = result["disk_write_mb_s"] * 1e6 / record_bytes
    return result


_PROBE_BLOCK = 512  # bytes per random I/O of the device probe: one sector, like a 512-byte row
_PROBE_THREADS = (1, 8, 32)


def _device_rates(data_file: Path, workdir: Path, seconds: float) -> dict[str, dict[int, float]]:
    """The disk's own random-I/O rates, measured now as fio would: ``O_DIRECT`` reads of
    512-byte blocks at random offsets of ``data_file`` (a tiered table's file), and ``O_DIRECT``
    writes of 512-byte blocks at random offsets of a scratch file of the same size, each from 1,
    8 and 32 threads for ``seconds``. Falls back to buffered I/O where ``O_DIRECT`` is refused
    (tmpfs), after dropping the file from the page cache."""
    import mmap
    import os
    import threading

    size = data_file.stat().st_size
    blocks = size // _PROBE_BLOCK

    def rate(path: Path, write: bool, threads: int) -> float:
        flags = (os.O_RDWR if write else os.O_RDONLY) | getattr(os, "O_DIRECT", 0)
        try:
            fd = os.open(path, flags)
        except OSError:
            fd = os.open(path, os.O_RDWR if write else os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        done = [0] * threads
        stop = threading.Event()

        def worker(index: int) -> None:
            buffer = mmap.mmap(-1, _PROBE_BLOCK)  # page-aligned, as O_DIRECT needs
            rng = np.random.default_rng(index)
            offsets = rng.integers(0, blocks, 1 << 16) * _PROBE_BLOCK
            k = 0
            while not stop.is_set():
                offset = int(offsets[k & 0xFFFF])
                if write:
                    os.pwritev(fd, [buffer], offset)
                else:
                    os.preadv(fd, [buffer], offset)
                k += 1
            done[index] = k

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        began = time.perf_counter()
        for thread in workers:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in workers:
            thread.join()
        elapsed = time.perf_counter() - began
        os.close(fd)
        return sum(done) / elapsed

    scratch = workdir / "device-probe.bin"
    with open(scratch, "wb") as handle:
        handle.truncate(size)
    try:
        reads = {threads: rate(data_file, False, threads) for threads in _PROBE_THREADS}
        writes = {threads: rate(scratch, True, threads) for threads in _PROBE_THREADS}
    finally:
        scratch.unlink()
    return {"random_reads_per_s": reads, "random_writes_per_s": writes}


def _caches_full(collection) -> bool:
    return all(t._storage.stats().misses >= t._storage.cache_rows for t in collection.tables.values())


def _disk_figures(before: dict[str, float], after: dict[str, float], configs, seconds: float) -> dict[str, float]:
    """Hit rate and disk MB/s over the timed steps, from the tables' cumulative counters."""
    def delta(counter: str) -> float:
        return sum(after[f"{c.name}/{counter}"] - before[f"{c.name}/{counter}"] for c in configs)

    hits, misses = delta("cache_hits"), delta("cache_misses")
    return {
        "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        "disk_read_mb_s": delta("disk_read_bytes") / seconds / 1e6,
        "disk_write_mb_s": delta("disk_written_bytes") / seconds / 1e6,
    }


def _pytorch(spec: dict[str, object], rows: int) -> dict[str, object]:
    from terarec.embedding import _hashing

    def hashed(ids: np.ndarray) -> torch.Tensor:  # the row terarec's hash gives each ID
        out = np.empty_like(ids)
        _hashing.hash_to_rows(ids, rows, out)
        return torch.from_numpy(out)

    baseline_rss = current_rss_bytes()
    dim, features = spec["dim"], spec["features"]
    bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum", sparse=True) for _ in range(features))
    model = _model(spec)
    sparse_optimizer = torch.optim.Adagrad(bags.parameters(), lr=LEARNING_RATE)
    dense_optimizer = torch.optim.Adagrad(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.BCEWithLogitsLoss()
    offsets = torch.arange(spec["batch_size"], dtype=torch.int64)

    def step(batch: dict[str, object]) -> None:
        pooled = torch.cat([bag(hashed(ids), offsets) for bag, ids in zip(bags, batch["ids"])], dim=1)
        loss_fn(_logits(model, batch["dense"], pooled), batch["labels"]).backward()
        for optimizer in (sparse_optimizer, dense_optimizer):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for batch in _batches(spec, rows, 0, spec["warmup"]):
        step(batch)
    started = time.perf_counter()
    for batch in _batches(spec, rows, spec["warmup"], spec["warmup"] + spec["steps"]):
        step(batch)
    seconds = time.perf_counter() - started
    table_bytes = 2 * 4 * rows * dim * features  # weights + Adagrad state
    return {
        "examples_per_second": spec["steps"] * spec["batch_size"] / seconds,
        "table_bytes": table_bytes,
        "memory_budget_bytes": table_bytes,
        "baseline_rss_bytes": baseline_rss,
    }


def run_child(spec: dict[str, object]) -> dict[str, object]:
    spec["threads"] = set_threads(spec["threads"])
    rows = spec["tiered_rows"] if spec["case"].startswith("tiered") else spec["ram_rows"]
    workdir = Path(tempfile.mkdtemp(prefix="terarec-tiered-bench-", dir=spec["workdir"]))
    try:
        result = _pytorch(spec, rows) if spec["case"] == "pytorch" else _terarec(spec, rows, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {**result, "peak_rss_bytes": peak_rss_bytes()}


def _rates(by_threads: dict[int, float]) -> str:
    return "/".join(f"{rate / 1e3:.1f}k" for rate in by_threads.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small tables and few steps (under 3 minutes)")
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--mlp", choices=sorted(MLPS), default="mlperf", help="dense network size")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--ram-rows", type=int, default=2_000_000, help="rows per table, RAM and PyTorch cases")
    parser.add_argument("--tiered-rows", type=int, default=10_000_000, help="rows per table, tiered case")
    parser.add_argument("--cache-fraction", type=float, default=0.1, help="RAM cache / table bytes, tiered case")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (at least)")
    parser.add_argument("--max-warmup", type=int, default=3000, help="untimed steps while a tiered cache fills")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES + OPTIONAL_CASES)}")
    parser.add_argument("--distributions", default=",".join(DISTRIBUTIONS))
    parser.add_argument("--workdir", default=".", help="directory on the disk to test (tables are written here)")
    parser.add_argument("--probe-seconds", type=float, default=3.0, help="seconds per thread count of the disk's own random-I/O probe")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        import json

        print(json.dumps(run_child(json.loads(args.child))))
        return
    if args.quick:
        args.ram_rows, args.tiered_rows, args.steps, args.warmup, args.max_warmup = 200_000, 1_000_000, 20, 10, 150
    free = shutil.disk_usage(args.workdir).free
    tiered_bytes = 8 * args.dim * args.tiered_rows * args.features
    print(f"tiered tables: {tiered_bytes / 1e9:.1f} GB on disk; {free / 1e9:.1f} GB free in {args.workdir}")
    if tiered_bytes > 0.9 * free:
        raise SystemExit(f"not enough free disk in {args.workdir} for {tiered_bytes / 1e9:.1f} GB of tables")
    results = []
    for distribution in args.distributions.split(","):
        for case in args.cases.split(","):
            spec = {
                "case": case, "distribution": distribution, "features": args.features, "dim": args.dim, "mlp": args.mlp,
                "batch_size": args.batch_size, "ram_rows": args.ram_rows, "tiered_rows": args.tiered_rows,
                "cache_fraction": args.cache_fraction, "steps": args.steps, "warmup": args.warmup,
                "threads": args.threads, "workdir": str(Path(args.workdir).resolve()), "max_warmup": args.max_warmup,
                "probe_seconds": args.probe_seconds,
            }  # fmt: skip
            print(f"running {case} / {distribution} ...", flush=True)
            outcome = run_in_child(__file__, spec)
            results.append({"case": case, "distribution": distribution, **outcome})
    ram = {r["distribution"]: r.get("examples_per_second") for r in results if r["case"] == "ram"}
    for row in results:
        reference = ram.get(row["distribution"])
        if row.get("examples_per_second") and reference:
            row["vs_ram"] = row["examples_per_second"] / reference
        for key in ("table_bytes", "memory_budget_bytes", "peak_rss_bytes", "baseline_rss_bytes"):
            if row.get(key) is not None:
                row[key.replace("_bytes", "_gb")] = row[key] / 1e9
    print_table(results, [
        ("case", "case", "s"), ("distribution", "ids", "s"), ("examples_per_second", "examples/s", ",.0f"),
        ("vs_ram", "vs ram", ".2f"), ("table_gb", "table GB", ".1f"), ("memory_budget_gb", "budget GB", ".2f"),
        ("peak_rss_gb", "peak RSS GB", ".2f"), ("baseline_rss_gb", "base RSS GB", ".2f"),
        ("warmup_steps", "warmup", "d"), ("hit_rate", "hit rate", ".3f"), ("disk_read_mb_s", "read MB/s", ".0f"), ("disk_write_mb_s", "write MB/s", ".0f"),
    ])  # fmt: skip
    for row in results:
        if "error" in row:
            print(f"{row['case']}/{row['distribution']}: {row['error']}")
        if "phase_ms_per_step" in row:
            phases = ", ".join(f"{name} {ms:.1f}" for name, ms in row["phase_ms_per_step"].items())
            device = row["device"]
            best_read, best_write = max(device["random_reads_per_s"].values()), max(device["random_writes_per_s"].values())
            print(f"{row['case']}/{row['distribution']}: ms per step: {phases} (prepare thread); training thread waited "
                  f"{row['wait_ms_per_step']:.1f}. Engine {row['engine_reads_per_s']:,.0f} reads/s and "
                  f"{row['engine_writes_per_s']:,.0f} writes/s; the disk alone {_rates(device['random_reads_per_s'])} reads/s "
                  f"and {_rates(device['random_writes_per_s'])} writes/s (1/8/32 threads): the engine uses "
                  f"{row['engine_reads_per_s'] / best_read:.0%} of its best read rate and "
                  f"{row['engine_writes_per_s'] / best_write:.0%} of its best write rate")
    write_json(args.json, {"machine": machine_info(), "args": vars(args) | {"json": str(args.json)}, "results": results})


if __name__ == "__main__":
    main()
