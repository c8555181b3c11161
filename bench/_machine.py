"""Machine description, timing and JSON output shared by the benchmark scripts."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numba
import numpy as np
import psutil
import torch


def machine_info() -> dict[str, object]:
    """What a reader needs to compare figures: CPU, cores, memory, thread settings, load, date."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "avx2": " avx2" in flags,
        "avx512f": " avx512f" in flags,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "numba_cpu_target": numba_cpu_target(),
        "numpy": np.__version__,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def numba_cpu_target() -> str:
    """The CPU numba compiles for: ``NUMBA_CPU_NAME`` when set (``haswell`` is AVX2 code,
    ``generic`` baseline x86-64), else this host's CPU as LLVM names it."""
    import llvmlite.binding as llvm

    name = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    features = numba.config.CPU_FEATURES
    return f"{name} ({'NUMBA_CPU_NAME' if numba.config.CPU_NAME else 'host'})" + (f" +{features}" if features else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def set_threads(count: int | None) -> int:
    """Pins torch and numba to ``count`` threads (default: every core) so systems compare fairly."""
    count = count or os.cpu_count() or 1
    torch.set_num_threads(count)
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    return count


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far.

    Reads ``VmHWM`` from ``/proc/self/status``: Linux carries ``ru_maxrss`` over ``exec`` from
    the parent, so a child started by a benchmark that allocated more would report the
    parent's peak. Falls back to ``ru_maxrss`` (KiB) elsewhere.
    """
    peak = _proc_bytes("status", "VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """This process's resident memory now (``VmRSS``; 0 where ``/proc`` is missing)."""
    return _proc_bytes("status", "VmRSS") or 0


def huge_page_bytes() -> int | None:
    """Bytes of this process's memory on transparent huge pages (``AnonHugePages`` of
    ``/proc/self/smaps_rollup``), or ``None`` without it. Random row access over tables on 4 KiB
    pages misses the TLB far more often, so a slow process can be checked for it."""
    return _proc_bytes("smaps_rollup", "AnonHugePages")


def _proc_bytes(name: str, field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/<name>`` in bytes, or ``None`` without it."""
    try:
        for line in Path(f"/proc/self/{name}").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def time_rounds(step: Callable[[int], None], warmup: int, steps: int, repeat: int) -> list[float]:
    """Seconds per step for each of ``repeat`` rounds of ``steps`` calls, after ``warmup`` calls.

    ``step`` receives a running counter, so it can cycle through pre-built batches.
    """
    counter = 0
    for _ in range(warmup):
        step(counter)
        counter += 1
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(steps):
            step(counter)
            counter += 1
        rounds.append((time.perf_counter() - started) / steps)
    return rounds


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_json(path: Path | None, payload: dict[str, object]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


def print_table(rows: Sequence[dict[str, object]], columns: Sequence[tuple[str, str, str]]) -> None:
    """Prints ``rows`` with ``columns`` given as ``(key, header, format spec)``."""
    widths = [max(len(header), 12) for _, header, _ in columns]
    print("  ".join(header.rjust(width) for (_, header, _), width in zip(columns, widths)))
    for row in rows:
        cells = []
        for (key, _, spec), width in zip(columns, widths):
            value = row.get(key)
            cells.append(("n/a" if value is None else format(value, spec)).rjust(width))
        print("  ".join(cells))


def run_in_child(script: str, spec: dict[str, object]) -> dict[str, object]:
    """Runs ``script --child SPEC_JSON`` in a fresh interpreter and returns the JSON it prints last.

    One process per measured case keeps each system's peak RSS its own and stops one
    system's allocations from disturbing the next. A failure comes back as ``{"error": ...}``.
    """
    done = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])
