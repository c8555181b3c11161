"""Serving under load: ``terarec serve`` on loopback, driven by an open-loop async client.

The script trains two small models on ``../shared/data`` (DCN-v2 on the Criteo sample, a
two-tower model on MovieLens-100k), exports them, and gives the two-tower model an item index
over synthetic unit vectors (1M x 64 by default) so ``/retrieve`` searches a catalogue of that
size. It then starts ``terarec serve`` as a separate process and, for a fixed time per case,
sends requests at a fixed rate (each at its scheduled time, whether or not earlier ones have
returned, so a slow server shows up as latency, not as a lower offered rate):

- ``/score`` with 100 candidates, at 1 and at 2 workers;
- ``/retrieve`` with ``k = 100``, at 1 and at 2 workers;
- ``/score`` over a model trained with tiered tables, served through RAM caches of 10% of its
  table files (``--cache-bytes``), requests cycling through the Criteo sample's rows, at 1 and
  2 workers, with the caches' hit rate;
- ``/score`` while the served model follows a run and swaps in a new checkpoint (errors must be 0);
- the continuous loop (``stream``): ``terarec train --stream`` on Criteo files that arrive every
  few seconds, the server following its run, ``/score`` meanwhile; per file, the seconds from its
  arrival to the server answering with the model trained on it (freshness);
- a soak: ``/score`` for 10 minutes (20 s with ``--quick``), the worker's RSS sampled each second;

and reports throughput, p50/p99/max latency and errors, the swap time from ``/metrics``, and each
worker's resident and proportional set size (RSS counts the memory-mapped tables in every
worker; PSS splits shared pages between them). The baseline is the same 100-candidate batch
scored in this process: by :class:`~terarec.serve.ServedModel` (request records to scores, no
HTTP), and by the bare network on tensors prepared once (lookup and forward only).

The client runs on the same 2 cores as the server, so every figure includes its share.

    python bench/serve.py --quick --json bench/results/serve_quick.json
    python bench/serve.py --json bench/results/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, write_json  # noqa: E402

from terarec.serve import ItemIndex, ServedModel, export_run  # noqa: E402
from terarec.serve.export import INDEX, write_manifest  # noqa: E402
from terarec.train import fit, load_config  # noqa: E402
from terarec.train.checkpoint import latest_checkpoint  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CRITEO = DATA / "criteo_kaggle_9k"
ML = DATA / "movielens_100k"


def _train(out: Path, overrides: dict[str, object]) -> None:
    settings = {"train.num_threads": 2, "train.progress": False, "train.out": str(out), **overrides}
    fit(load_config(overrides=list(settings.items())))


def _criteo_run(out: Path, steps: int) -> None:
    _train(out, {"data.path": str(CRITEO / "train.tsv"), "data.eval_path": str(CRITEO / "test.tsv"),
                 "data.format": "criteo", "train.steps": steps, "train.checkpoint_every": 100,
                 "train.batch_size": 128, "data.val_fraction": 0, "train.resume": (out / "checkpoints").is_dir()})


def _candidates(count: int, path: Path = CRITEO / "test.tsv") -> list[dict[str, object]]:
    rows = []
    with open(path) as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            record: dict[str, object] = {f"I{i}": (int(fields[i]) if fields[i] else None) for i in range(1, 14)}
            record.update({f"C{i}": fields[13 + i] for i in range(1, 27)})
            rows.append(record)
            if len(rows) == count:
                break
    return rows


def _big_index(model_dir: Path, num_items: int) -> None:
    """Replaces the model's item index with ``num_items`` clustered unit vectors (the served
    catalogue's size is what /retrieve's latency depends on) and re-seals the manifest."""
    rng = np.random.default_rng(0)
    dim = ServedModel(model_dir).index.dim  # type: ignore[union-attr]
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 256, num_items)] + 0.5 * rng.standard_normal((num_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shutil.rmtree(model_dir / INDEX)
    ItemIndex.build(vectors, np.char.add("item", np.arange(num_items).astype(str))).save(model_dir / INDEX)
    write_manifest(model_dir)


class Server:
    """``terarec serve`` in a process group of its own."""

    def __init__(self, model_dir: Path, port: int, workers: int, watch: Path | None = None, extra: tuple[str, ...] = ()) -> None:
        command = [sys.executable, "-m", "terarec", "serve", str(model_dir), "--port", str(port), "--workers", str(workers), *extra]
        if watch is not None:
            command += ["--watch", str(watch), "--watch-seconds", "0.2"]
        self.url = f"http://127.0.0.1:{port}"
        self.log = model_dir.parent / f"serve-{port}-{workers}.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"terarec serve exited: {self.log.read_text()}")
            try:
                if httpx2.get(f"{self.url}/readyz", timeout=1).status_code == 200 and len(self.workers()) == workers:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("terarec serve did not answer within 300 s")
            time.sleep(0.2)

    def workers(self) -> list[psutil.Process]:
        """The processes that answer: the server itself, or uvicorn's worker children."""
        main = psutil.Process(self.process.pid)
        spawned = [c for c in main.children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
        return spawned or [main]

    def memory(self) -> list[dict[str, float]]:
        """Each worker's RSS and PSS in MiB."""
        out = []
        for worker in self.workers():
            info = worker.memory_full_info()
            out.append({"rss_mib": info.rss / 2**20, "pss_mib": getattr(info, "pss", float("nan")) / 2**20})
        return out

    def metrics(self) -> str:
        return httpx2.get(f"{self.url}/metrics", timeout=10).text

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)


async def _load(url: str, path: str, payload: dict[str, object] | list[dict[str, object]], rate: float,
                seconds: float) -> dict[str, object]:
    """Sends ``payload`` (or each of a list of them in turn) to ``url + path`` at ``rate`` per
    second for ``seconds``; latency from each request's scheduled start to its answer."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    limits = httpx2.Limits(max_connections=256, max_keepalive_connections=256)
    payloads = payload if isinstance(payload, list) else [payload]
    bodies = [json.dumps(one).encode() for one in payloads]  # encoded once: the client's CPU is the server's too
    body, headers = bodies[0], {"content-type": "application/json"}
    async with httpx2.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        for _ in range(20):  # warm up connections
            await client.post(path, content=body, headers=headers)

        async def one(at: float, body: bytes) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            try:
                response = await client.post(path, content=body, headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code != 200:
                    errors += 1
            except httpx2.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - at)

        begun = time.perf_counter()
        count = int(rate * seconds)
        await asyncio.gather(*(one(begun + i / rate, bodies[i % len(bodies)]) for i in range(count)))
        elapsed = time.perf_counter() - begun
    milliseconds = np.array(latencies) * 1e3
    return {
        "path": path, "offered_per_second": rate, "seconds": elapsed, "requests": count,
        "answered_per_second": count / elapsed, "errors": errors, "statuses": statuses,
        "p50_ms": float(np.percentile(milliseconds, 50)), "p99_ms": float(np.percentile(milliseconds, 99)),
        "max_ms": float(milliseconds.max()),
    }


def _in_process(model_dir: Path, candidates: list[dict[str, object]], repeats: int) -> dict[str, float]:
    """The same batch scored in this process: records to scores, and lookup + forward alone."""
    torch.set_num_threads(1)
    model = ServedModel(model_dir)
    for _ in range(5):
        model.score({}, candidates)
    times = []
    for _ in range(repeats):
        begun = time.perf_counter()
        model.score({}, candidates)
        times.append(time.perf_counter() - begun)
    batch = model.batch(candidates)  # the request already read: only the model's own work is left
    forward = []
    with torch.no_grad():
        for _ in range(repeats):
            begun = time.perf_counter()
            model.network(batch.dense, model.tables.lookup(batch.sparse), batch.sparse)
            forward.append(time.perf_counter() - begun)
    return {"served_model_p50_ms": statistics.median(times) * 1e3, "served_model_p99_ms": float(np.percentile(times, 99)) * 1e3,
            "network_p50_ms": statistics.median(forward) * 1e3, "network_p99_ms": float(np.percentile(forward, 99)) * 1e3}


def _soak(model_dir: Path, port: int, payload: dict[str, object], rate: float, seconds: float) -> dict[str, object]:
    """``/score`` at ``rate`` for ``seconds``, the worker's RSS sampled every second: memory must
    not grow under steady load."""
    server = Server(model_dir, port, 1)
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        worker = server.workers()[0]
        while not done.wait(1.0):
            samples.append(worker.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = asyncio.run(_load(server.url, "/score", payload, rate, seconds))
    finally:
        done.set()
        sampler.join()
        server.stop()
    tenth = max(1, len(samples) // 10)
    result.update(case="soak", workers=1, rss_samples_mib=samples,
                  rss_first_mib=statistics.mean(samples[:tenth]), rss_last_mib=statistics.mean(samples[-tenth:]))
    return result


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per case, a 100k-item index")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per case (default 15, 3 with --quick)")
    parser.add_argument("--score-rate", type=float, default=100.0, help="/score requests per second")
    parser.add_argument("--retrieve-rate", type=float, default=100.0, help="/retrieve requests per second")
    parser.add_argument("--index-items", type=int, default=None, help="items of /retrieve's index (default 1M, 100k with --quick)")
    parser.add_argument("--port", type=int, default=18080, help="loopback port of the server")
    parser.add_argument("--cases", default="score,retrieve,tiered,swap,stream,soak", help="which cases to run (comma-separated)")
    parser.add_argument("--cache-fraction", type=float, default=0.1, help="the tiered case's cache, a fraction of its table files")
    parser.add_argument("--stream-files", type=int, default=None, help="files arriving in the stream case (default 6, 3 with --quick)")
    parser.add_argument("--stream-every", type=float, default=5.0, help="seconds between the stream case's files")
    parser.add_argument("--stream-rate", type=float, default=20.0, help="/score requests per second of the stream case (the trainer shares the cores)")
    parser.add_argument("--soak-rate", type=float, default=50.0, help="/score requests per second of the soak (below capacity)")
    parser.add_argument("--soak-seconds", type=float, default=None,
                        help="a last /score case this long, the server's RSS sampled each second (default 600, 20 with --quick; 0 skips it)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 15.0)
    num_items = args.index_items or (100_000 if args.quick else 1_000_000)
    candidates = _candidates(100)
    chosen = set(args.cases.split(","))
    cases: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        _criteo_run(root / "criteo", 100)
        export_run(root / "criteo", root / "criteo-model")
        _train(root / "ml", {"data.path": str(ML / "ml-100k.inter"), "data.format": "interactions",
                             "model.type": "two_tower", "train.steps": 200})
        export_run(root / "ml", root / "ml-model")
        _big_index(root / "ml-model", num_items)
        baseline = _in_process(root / "criteo-model", candidates, 200)
        print(f"in-process, 100 candidates: ServedModel.score p50 {baseline['served_model_p50_ms']:.2f} ms, "
              f"lookup + network p50 {baseline['network_p50_ms']:.2f} ms", flush=True)
        score = {"context": {}, "candidates": candidates}
        retrieve = {"context": {"user_id": "196", "history": ["242", "302", "377", "51"]}, "k": 100}
        for workers in (1, 2):
            for model_dir, path, payload, rate in ((root / "criteo-model", "/score", score, args.score_rate),
                                                   (root / "ml-model", "/retrieve", retrieve, args.retrieve_rate)):
                if path.strip("/") not in chosen:
                    continue
                server = Server(model_dir, args.port, workers)
                try:
                    result = asyncio.run(_load(server.url, path, payload, rate, seconds))
                    result.update(workers=workers, memory=server.memory())
                finally:
                    server.stop()
                cases.append(result)
                print(_line(result), flush=True)
        if "tiered" in chosen:
            cases.extend(_tiered(root, args.port, args.score_rate, seconds, args.cache_fraction))
        if "swap" in chosen:
            cases.append(_swap(root, args.port, score, args.score_rate, seconds))
        if "stream" in chosen:
            files = args.stream_files or (3 if args.quick else 6)
            cases.append(_stream(root, args.port, score, args.stream_rate, files, args.stream_every))
        soak = args.soak_seconds if args.soak_seconds is not None else (20.0 if args.quick else 600.0)
        if "soak" in chosen and soak > 0:
            result = _soak(root / "criteo-model", args.port, score, args.soak_rate, soak)
            cases.append(result)
            print(_line(result) + f"  RSS {result['rss_first_mib']:.0f} -> {result['rss_last_mib']:.0f} MiB "
                  f"(first and last tenth of the run)", flush=True)
        sizes = {name: sum(p.stat().st_size for p in (root / name / "tables").rglob("*") if p.is_file()) / 2**20
                 for name in ("criteo-model", "ml-model")}
        print(f"table files: Criteo model {sizes['criteo-model']:.0f} MiB, two-tower model {sizes['ml-model']:.0f} MiB")
    write_json(args.json, {"machine": machine_info(), "quick": args.quick, "index_items": num_items,
                           "table_mib": sizes, "in_process": baseline, "cases": cases})


def _swap(root: Path, port: int, score: dict[str, object], rate: float, seconds: float) -> dict[str, object]:
    """``/score`` while the server follows the Criteo run and a newer checkpoint (trained
    beforehand, so training does not share the cores) lands in the run a third of the way in."""
    shutil.copytree(root / "criteo", root / "criteo-next")
    _criteo_run(root / "criteo-next", 200)
    newer = latest_checkpoint(root / "criteo-next")
    assert newer is not None
    server = Server(root / "criteo-model", port, 1, watch=root / "criteo")
    try:
        duration = max(seconds, 10.0)
        land = threading.Timer(duration / 3, os.rename, (newer, root / "criteo" / "checkpoints" / newer.name))
        land.start()
        result = asyncio.run(_load(server.url, "/score", score, rate, duration))
        land.join()
        deadline = time.monotonic() + 120
        while _metric(server.metrics(), "terarec_model_step") < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        text = server.metrics()
        result.update(workers=1, case="hot swap", swapped_to_step=_metric(text, "terarec_model_step"),
                      reload_seconds=_metric(text, "terarec_reload_seconds"),
                      reloads_ok=_metric(text, 'terarec_reloads_total{result="ok"}'))
    finally:
        server.stop()
    print(_line(result) + f"  swapped to step {result['swapped_to_step']:.0f} in {result['reload_seconds']:.2f} s", flush=True)
    return result


def _tiered(root: Path, port: int, rate: float, seconds: float, fraction: float) -> list[dict[str, object]]:
    """``/score`` over DCN-v2 trained with tiered tables, served through caches of ``fraction``
    of its table files; each request holds the next 100 rows of the Criteo sample (train, then
    test), so requests do not repeat for 76 in a row."""
    _train(root / "tiered", {"data.path": str(CRITEO / "train.tsv"), "data.eval_path": str(CRITEO / "test.tsv"),
                             "data.format": "criteo", "train.steps": 100, "train.batch_size": 128, "data.val_fraction": 0,
                             "embedding.tiered.cache_bytes": 1 << 20, "train.eval_batch_size": 1024})
    export_run(root / "tiered", root / "tiered-model")
    table_bytes = sum(p.stat().st_size for p in (root / "tiered-model" / "tables").rglob("weights.npy"))
    cache = int(table_bytes * fraction)
    pool = _candidates(7200, CRITEO / "train.tsv") + _candidates(400)
    payloads = [{"context": {}, "candidates": pool[i : i + 100]} for i in range(0, len(pool) - 99, 100)]
    results = []
    for workers in (1, 2):
        server = Server(root / "tiered-model", port, workers, extra=("--cache-bytes", str(cache)))
        try:
            result = asyncio.run(_load(server.url, "/score", payloads, rate, seconds))
            # With 2 workers, /metrics is one worker's (whichever answers), so only 1 worker's counts.
            hit_rate = _hit_rate(server.metrics()) if workers == 1 else None
            result.update(workers=workers, memory=server.memory(), case="tiered", cache_bytes=cache,
                          table_bytes=table_bytes, hit_rate=hit_rate)
        finally:
            server.stop()
        rate_text = f", hit rate {hit_rate:.3f}" if hit_rate is not None else ""
        print(_line(result) + f"  cache {cache / 2**20:.1f} of {table_bytes / 2**20:.0f} MiB per worker{rate_text}", flush=True)
        results.append(result)
    return results


def _hit_rate(text: str) -> float:
    """All tables' cache hits over their lookups, from ``/metrics``."""
    totals = {"hits": 0.0, "misses": 0.0}
    for line in text.splitlines():
        for kind in totals:
            if line.startswith(f"terarec_table_cache_{kind}_total{{"):
                totals[kind] += float(line.rsplit(" ", 1)[1])
    looked_up = totals["hits"] + totals["misses"]
    return totals["hits"] / looked_up if looked_up else float("nan")


STREAM_BATCH = 128


def _stream(root: Path, port: int, score: dict[str, object], rate: float, files: int, every: float) -> dict[str, object]:
    """The continuous loop: files of the Criteo sample arrive every ``every`` seconds in a directory
    that ``terarec train --stream`` follows, the server follows the trainer's run, and ``/score``
    runs at ``rate`` throughout. Freshness: from a file's rename into the directory to the first
    ``/readyz`` (polled every 50 ms) that shows the step trained on it."""
    rows = (CRITEO / "train.tsv").read_text().splitlines(keepends=True)
    size = len(rows) // (files + 1)
    steps_per_file = -(-size // STREAM_BATCH)
    incoming, run = root / "stream-in", root / "stream-run"
    incoming.mkdir()

    def arrive(index: int) -> float:
        partial = incoming / f".part-{index:03d}.tsv"
        partial.write_text("".join(rows[index * size : (index + 1) * size]))
        partial.rename(incoming / f"part-{index:03d}.tsv")
        return time.perf_counter()

    arrive(0)
    command = [sys.executable, "-m", "terarec", "train", "--stream", str(incoming), "--format", "criteo", "--out", str(run),
               "--batch-size", str(STREAM_BATCH), "--threads", "1", "--no-progress", "--set", "train.stream.poll_seconds=0.1"]
    with open(root / "stream-train.log", "w") as log:
        trainer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(run) is None:
            if trainer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the streaming trainer made no checkpoint: {(root / 'stream-train.log').read_text()}")
            time.sleep(0.1)
        export_run(run, root / "stream-model")
        server = Server(root / "stream-model", port, 1, watch=run)
        freshness: list[float] = []

        def feed() -> None:
            for index in range(1, files + 1):
                time.sleep(every)
                arrived = arrive(index)
                wanted = (index + 1) * steps_per_file
                while httpx2.get(f"{server.url}/readyz", timeout=10).json()["step"] < wanted:
                    if time.perf_counter() - arrived > 120:
                        raise RuntimeError(f"file {index} not served within 120 s")
                    time.sleep(0.05)
                freshness.append(time.perf_counter() - arrived)

        feeder = threading.Thread(target=feed)
        try:
            feeder.start()
            result = asyncio.run(_load(server.url, "/score", score, rate, files * every + 5.0))
            feeder.join()
            text = server.metrics()
        finally:
            server.stop()
    finally:
        os.killpg(trainer.pid, signal.SIGTERM)
        trainer.wait(timeout=120)
    if len(freshness) != files:
        raise RuntimeError(f"only {len(freshness)} of {files} files were served")
    result.update(workers=1, case="stream", files=files, file_rows=size, steps_per_file=steps_per_file,
                  every_seconds=every, freshness_seconds=freshness,
                  reloads_ok=_metric(text, 'terarec_reloads_total{result="ok"}'), trainer_exit=trainer.returncode)
    print(_line(result) + f"  freshness {min(freshness):.2f}-{max(freshness):.2f} s "
          f"(median {statistics.median(freshness):.2f} s) over {files} files", flush=True)
    return result


def _line(result: dict[str, object]) -> str:
    memory = result.get("memory") or []
    rss = "/".join(f"{m['rss_mib']:.0f}" for m in memory)  # type: ignore[index]
    pss = "/".join(f"{m['pss_mib']:.0f}" for m in memory)  # type: ignore[index]
    return (f"{result.get('case', result['path']):<10} workers {result['workers']}  {result['answered_per_second']:7.1f} req/s  "
            f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  max {result['max_ms']:7.1f} ms  "
            f"errors {result['errors']}" + (f"  RSS {rss} MiB  PSS {pss} MiB" if memory else ""))


if __name__ == "__main__":
    main()
