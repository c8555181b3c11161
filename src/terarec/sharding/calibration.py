"""Micro-benchmarks that calibrate the cost model on this machine, saved and reused.

:func:`measure_calibration` times, on the current machine:

- **memory bandwidth**: the bytes the cost model counts for a step of terarec's own embedding
  kernels (hash, de-duplicate, pool, fused row-wise Adagrad update of a 1M x 64 table fed
  106k Zipf IDs) over the time that step takes, best of 3: an effective rate, lower than a
  plain gather's, that makes predicted lookup times match the kernels;
- **dense compute**: the FLOPs the cost model counts for a step of terarec's DLRM (default
  MLPs, 26 sparse features of dim 64, batch 4096: forward, loss, backward with the gradient of
  the pooled embeddings, Adam) over its time, best of 6: small MLPs and the interaction reach a
  fraction of a matrix product's peak;
- **collectives**: two local processes (``torch.multiprocessing.spawn``) join a gloo group
  over localhost and time a one-float ``all_reduce`` (latency) and a 4 MiB
  ``all_to_all_single`` (bandwidth between two ranks of one host);
- **exchange packing**: in a third process on one core, a one-rank gloo world, a step of a
  :class:`~terarec.sharding.sharded.ShardedEmbeddingCollection` (26 tables of dim 64, batch
  4096) less the same tables' unsharded step: the CPU work of packing pooled rows and
  gradients for the all-to-all and adding them back into place, per value handled
  (``exchange_rate``; a micro-benchmark of the casts and ``index_add_`` alone measured a
  quarter of what the collection's concatenations and allocations cost), and casts of such a
  block to bf16 and fp16 and back (the slower gives ``conversion_rate``).

The result, a :class:`Calibration`, is saved as JSON (default
``~/.cache/terarec/calibration.json``, or ``$XDG_CACHE_HOME/terarec/``) and reused by later
plans. The rates are the whole machine's (every core; the exchange's, one core's); the ranks of one host share them
(see :func:`~terarec.sharding.planner.build_topology`). Inter-host network and SSD rates cannot
be measured from one machine: they are given (``--network-gbps``) or assumed. A file of an
older format is ignored (the plan says "uncalibrated"): measure again. Without a calibration, plans use
:class:`~terarec.sharding.types.Topology`'s conservative defaults and say "uncalibrated".
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from terarec.embedding import EmbeddingTableConfig
from terarec.embedding.table import FixedTable
from terarec.errors import ConfigError

__all__ = ["Calibration", "default_calibration_path", "load_calibration", "measure_calibration", "save_calibration"]

_FORMAT = 3
_TABLE_ROWS = 1 << 20
_DIM = 64
_BATCH = 4096
_FEATURES = 26
_MESSAGE_BYTES = 4 << 20
_EXCHANGE_ROWS = 1 << 16
_EXCHANGE_PAIRS = 15
_RATES = (
    "memory_bandwidth",
    "dense_flops",
    "collective_latency",
    "intra_host_bandwidth",
    "exchange_rate",
    "conversion_rate",
)


@dataclass(frozen=True)
class Calibration:
    """Rates measured on one machine, per rank.

    Args:
        memory_bandwidth (float): effective bytes/s of the embedding kernels (see the module docstring).
        dense_flops (float): effective FLOP/s of a DLRM dense training step.
        collective_latency (float): seconds of a tiny gloo ``all_reduce`` between two local ranks.
        intra_host_bandwidth (float): bytes/s one rank sends another on the same host (gloo
            ``all_to_all``).
        exchange_rate (float): pooled values/s one core packs for the wire and adds back into
            place, fp32.
        conversion_rate (float): values/s one core converts between fp32 and a 16-bit wire format.
        machine (str): the host, CPU and core count measured on.
        measured_at (str): ISO 8601 UTC time of the measurement.

    Example::

        >>> cal = Calibration(5e9, 5e10, 1e-4, 2e9, 1e9, 1e9, "box / cpu / 2 cpus", "2025-01-01T00:00:00+00:00")
        >>> Calibration.from_dict(cal.to_dict()) == cal
        True
    """

    memory_bandwidth: float
    dense_flops: float
    collective_latency: float
    intra_host_bandwidth: float
    exchange_rate: float
    conversion_rate: float
    machine: str
    measured_at: str

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"Calibration.{name} must be a positive finite number, got {value!r}")

    def to_dict(self) -> dict[str, object]:
        """The JSON form saved by :func:`save_calibration`."""
        return {"format": _FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> Calibration:
        """Inverts :meth:`to_dict`; raises ``ValueError`` or ``KeyError`` for anything else."""
        if raw.get("format") != _FORMAT:
            raise ValueError(f"unknown calibration format {raw.get('format')!r}, expected {_FORMAT}")
        return cls(*(float(raw[name]) for name in _RATES), str(raw["machine"]), str(raw["measured_at"]))  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for reports: when and where it was measured, and the rates."""
        return (
            f"calibrated {self.measured_at[:10]} on {self.machine}: gather {self.memory_bandwidth / 1e9:.1f} GB/s, "
            f"dense {self.dense_flops / 1e9:.0f} GFLOP/s, gloo latency {self.collective_latency * 1e6:.0f} us, "
            f"intra-host {self.intra_host_bandwidth / 1e9:.2f} GB/s, exchange packing {self.exchange_rate / 1e9:.2f} "
            f"G values/s (+ conversion {self.conversion_rate / 1e9:.2f} G values/s for 16-bit)"
        )


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()} / {model} / {os.cpu_count()} cpus"


def default_calibration_path() -> Path:
    """``$XDG_CACHE_HOME/terarec/calibration.json``, else ``~/.cache/terarec/calibration.json``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "terarec" / "calibration.json"


def save_calibration(calibration: Calibration, path: Path | None = None) -> Path:
    """Writes ``calibration`` as JSON (atomically: a temporary file, then a rename); returns the path."""
    target = Path(path) if path is not None else default_calibration_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=".calibration-", delete=False) as handle:
        json.dump(calibration.to_dict(), handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, target)
    return target


def load_calibration(path: Path | None = None) -> Calibration | None:
    """The calibration saved at ``path`` (default :func:`default_calibration_path`), or ``None`` if none is.

    Raises:
        ConfigError: if the file exists but is not a calibration terarec wrote.
    """
    target = Path(path) if path is not None else default_calibration_path()
    try:
        raw = json.loads(target.read_text())
        if isinstance(raw, dict) and isinstance(raw.get("format"), int) and raw["format"] < _FORMAT:
            return None
        return Calibration.from_dict(raw)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"{target}: not a terarec calibration ({error}); rerun with --calibrate") from None


def _embedding_bandwidth() -> float:
    config = EmbeddingTableConfig("calibration", _TABLE_ROWS, _DIM, ("f",))
    table = FixedTable(config)
    ids = torch.from_numpy(np.random.default_rng(0).zipf(1.05, _BATCH * _FEATURES).astype(np.int64))
    offsets = torch.arange(ids.numel() + 1, dtype=torch.int64)
    grad = torch.full((ids.numel(), _DIM), 1e-3)
    best, unique = math.inf, 0
    for _ in range(4):  # the first compiles or loads the kernels
        started = time.perf_counter()
        prepared = table.prepare(ids, offsets)
        table.lookup_prepared(prepared)
        table.apply_gradients_prepared(prepared, grad)
        best, unique = min(best, time.perf_counter() - started), prepared.unique_rows.size
    state = config.optimizer.state_width(_DIM)
    # the bytes ShardEstimator.cost counts: pooled reads and writes, rows and state read and written
    return 4 * (2 * ids.numel() * _DIM + 2 * unique * (_DIM + state)) / best


def _dense_flops() -> float:
    from terarec.models import InputSpec, ModelConfig, ModelInput, ModelType, build_model

    generator = torch.Generator().manual_seed(0)
    spec = InputSpec(13, tuple(f"C{f}" for f in range(_FEATURES)), (_DIM,) * _FEATURES)
    with torch.random.fork_rng():
        model = build_model(ModelConfig(type=ModelType.DLRM), spec)
    optimizer = torch.optim.Adam(model.parameters())
    dense = torch.rand(_BATCH, 13, generator=generator)
    pooled = torch.rand(_BATCH, _FEATURES * _DIM, generator=generator, requires_grad=True)
    inputs = ModelInput(dense, pooled, spec, model.layout)
    labels = torch.randint(0, 2, (_BATCH,), generator=generator).float()
    best = math.inf
    for _ in range(6):
        started = time.perf_counter()
        model.loss(model(inputs), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        best = min(best, time.perf_counter() - started)
    return _BATCH * model.dense_cost().flops_per_example / best


def _exchange_seconds(group: object) -> tuple[float, int]:
    """Seconds of one step of ShardedEmbeddingCollection's own pack-and-unpack work (fp32) on
    a one-rank ``group``, and the pooled values it handled: the collection's step
    less the same tables' step unsharded (their kernels), so what is left is the exchange's
    CPU work (all-to-all to itself included) around the same lookups and updates."""
    from terarec.embedding import EmbeddingCollection
    from terarec.sharding.config import ShardingType
    from terarec.sharding.sharded import ShardedEmbeddingCollection, TableSharding
    from terarec.sparse import JaggedTensor

    tables = [EmbeddingTableConfig(f"t{i}", _EXCHANGE_ROWS, _DIM, (f"f{i}",)) for i in range(_FEATURES)]
    rng = np.random.default_rng(0)
    sparse = {
        f"f{i}": JaggedTensor(torch.from_numpy(rng.zipf(1.05, _BATCH).astype(np.int64)), torch.arange(_BATCH + 1))
        for i in range(_FEATURES)
    }
    grad = torch.full((_BATCH, _FEATURES * _DIM), 1e-3)
    sharded = ShardedEmbeddingCollection(
        tables, {t.name: TableSharding(ShardingType.TABLE_WISE, (0,)) for t in tables}, seed=0, group=group
    )
    plain = EmbeddingCollection(tables)

    def step(collection: object) -> float:
        started = time.perf_counter()
        prepared = collection.prepare(sparse)  # type: ignore[attr-defined]
        collection.lookup(prepared)  # type: ignore[attr-defined]
        collection.apply_gradients(prepared, grad)  # type: ignore[attr-defined]
        return time.perf_counter() - started

    step(sharded), step(plain)  # compile or load the kernels
    # pairs of steps, so a slow moment of the machine hits both: the median of the differences
    differences = [step(sharded) - step(plain) for _ in range(_EXCHANGE_PAIRS)]
    # pooled rows packed and unpacked forward, their gradients packed and unpacked backward
    return max(float(np.median(differences)), 1e-9), 4 * grad.numel()


def _conversion_rate() -> float:
    """Values/s cast from fp32 to bf16 or fp16 and back, the slower of the two, best of 5."""
    block = torch.rand(_BATCH, _FEATURES * _DIM, generator=torch.Generator().manual_seed(0))
    slowest = 0.0
    for wire in (torch.bfloat16, torch.float16):
        best = math.inf
        for _ in range(5):
            started = time.perf_counter()
            block.to(wire).float()
            best = min(best, time.perf_counter() - started)
        slowest = max(slowest, best)
    return 2 * block.numel() / slowest  # each value converted twice: to the wire and back


def _collective_worker(rank: int, store: str, out: str, world_size: int, message_bytes: int, repeats: int) -> None:
    """One rank of the gloo micro-benchmark; rank 0 writes ``{latency, bandwidth}`` to ``out``."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        tiny = torch.zeros(1)
        for _ in range(5):
            dist.all_reduce(tiny)
        dist.barrier()
        started = time.perf_counter()
        for _ in range(repeats):
            dist.all_reduce(tiny)
        latency = (time.perf_counter() - started) / repeats
        send = torch.zeros(world_size * message_bytes // 4)
        receive = torch.empty_like(send)
        dist.all_to_all_single(receive, send)
        best = math.inf
        for _ in range(max(repeats // 10, 3)):
            dist.barrier()
            started = time.perf_counter()
            dist.all_to_all_single(receive, send)
            best = min(best, time.perf_counter() - started)
        seconds = torch.tensor([latency, best], dtype=torch.float64)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        if rank == 0:
            # each rank sent (world_size - 1) messages of message_bytes to the others
            bandwidth = (world_size - 1) * message_bytes / max(float(seconds[1]), 1e-9)
            Path(out).write_text(json.dumps({"latency": float(seconds[0]), "bandwidth": bandwidth}))
    finally:
        dist.destroy_process_group()


def _exchange_worker(rank: int, store: str, out: str) -> None:
    """A one-rank gloo world that times :func:`_exchange_seconds`; writes ``{exchange,
    conversion}`` to ``out``. A process of its own: the calibrating process may have no group."""
    import numba
    import torch.distributed as dist

    # One core's rate: packing hardly speeds up with threads, and ranks get a core each
    # until a host has more ranks than cores (build_topology divides it then).
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=1)
    try:
        seconds, values = _exchange_seconds(dist.group.WORLD)
        Path(out).write_text(json.dumps({"exchange": values / seconds, "conversion": _conversion_rate()}))
    finally:
        dist.destroy_process_group()


def _spawned(worker: Callable[..., None], num_processes: int, *args: object) -> dict[str, float]:
    """Runs ``worker(rank, store, out, *args)`` in ``num_processes`` fresh processes and returns
    the rates rank 0 wrote to ``out`` (JSON)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="terarec-calibrate-") as directory:
        store, out = str(Path(directory) / "store"), str(Path(directory) / "result.json")
        mp.spawn(worker, args=(store, out, *args), nprocs=num_processes, join=True)
        return {name: float(value) for name, value in json.loads(Path(out).read_text()).items()}


def measure_calibration(num_processes: int = 2, message_bytes: int = _MESSAGE_BYTES, repeats: int = 50) -> Calibration:
    """Measures this machine's rates (see the module docstring); takes a few seconds.

    Args:
        num_processes (int, optional): local gloo ranks for the collective benchmark. Default: ``2``
        message_bytes (int, optional): bytes each rank sends each other in the all-to-all. Default: ``4 MiB``
        repeats (int, optional): timed all-reduces (a tenth as many all-to-alls). Default: ``50``
    """
    if num_processes < 2:
        raise ValueError(f"num_processes must be >= 2, got {num_processes}")
    gather, flops = _embedding_bandwidth(), _dense_flops()
    rates = _spawned(_collective_worker, num_processes, num_processes, int(message_bytes), int(repeats))
    rates.update(_spawned(_exchange_worker, 1))
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return Calibration(
        gather, flops, rates["latency"], rates["bandwidth"], rates["exchange"], rates["conversion"], _machine(), stamp
    )
