"""Distributed training on one machine: world sizes 1, 2 and 4, sync vs hybrid embedding updates,
fp32 vs bf16 communication, measured against the planner's cost model.

Every case trains the same DLRM on the same synthetic Criteo-shaped data (``--features`` sparse
features, dim ``--dim``, a global batch of ``--batch-size`` examples split over the ranks) with
``terarec train --nproc-per-node N`` (torchrun, gloo). Per case it reports:

- ``examples_per_second``: the global batch over the steady-state step time;
- ``step_time_s``: seconds per step in steady state. A run's ``train_seconds`` also holds its
  start-up (the first collectives, the pipeline filling, the first steps of torch and numba), so
  each case trains twice from the same seed, for ``n1`` and ``n2`` steps, and the step time is
  ``(t(n2) - t(n1)) / (n2 - n1)``: what both runs share cancels (an untimed run first fills
  numba's kernel cache, so no timed run compiles). With ``--repeat R``, ``t(n)`` is the least of
  ``R`` runs: other work on the machine only ever adds time. ``step_time_whole_run_s``,
  ``t(n2) / n2``, shows what that start-up would have added; ``disturbed`` marks a case whose two
  figures differ by more than start-up explains (other work on the machine slowed one run);
- ``comm_bytes_per_step``: embedding traffic the ranks measured (IDs, pooled rows and their
  gradients, summed over ranks; 0 on one rank), and ``predicted_comm_bytes_per_step``, the
  planner's IDs + pooled prediction; ``predicted_allreduce_bytes_per_step``, the dense network's
  and replicated tables' gradient all-reduce, is predicted only;
- ``predicted_step_time_s``: ``terarec plan`` for the same config, world size and precision, all
  ranks on this host, every table pinned to the sharding type training ran it with (``shardings``
  counts them; whole tables on one rank), so world size 1 gets a prediction too;
  ``trainer_predicted_step_time_s`` is what training's own planner said (``metrics.json``), a
  cross-check. The cost model has no notion of hybrid mode: both modes get the same prediction;
- ``auc`` on the synthetic eval split, after the longer run.

The planner's rates come from this machine's calibration (``terarec plan --calibrate``), measured
at the start unless one is saved (``--recalibrate`` measures anew). With more ranks than cores the
ranks share them (oversubscribed): raw speedup then says little, so judge scaling by the bytes
communicated and by how close the predictions come (``within_20pct``: predicted / measured step
time within 0.8 to 1.2).

    python bench/distributed.py --quick --json bench/results/distributed_quick.json   # ~4 minutes on 2 cores
    python bench/distributed.py --json bench/results/distributed.json                 # ~11 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import machine_info, print_table, write_json

WORLD_SIZES = (1, 2, 4)
MODES = ("sync", "hybrid")
PRECISIONS = ("fp32", "bf16")
QUICK_CASES = (
    (1, "sync", "fp32"),
    (2, "sync", "fp32"), (2, "sync", "bf16"), (2, "hybrid", "fp32"), (2, "hybrid", "bf16"),
    (4, "sync", "fp32"), (4, "sync", "bf16"), (4, "hybrid", "fp32"),
)  # fmt: skip
TOLERANCE = 0.2
CROSS_CHECK_TOLERANCE = 0.01
DISTURBED = 0.25  # start-up is a few % of a run here: steady and whole-run step times further apart mean noise


def _cases(quick: bool) -> list[tuple[int, str, str]]:
    """The quick subset, or every world size x mode x precision (one precision on one rank: nothing is sent)."""
    if quick:
        return list(QUICK_CASES)
    return [
        (ws, mode, precision)
        for ws, mode, precision in itertools.product(WORLD_SIZES, MODES, PRECISIONS)
        if ws > 1 or precision == "fp32"
    ]


def _terarec(arguments: list[str], cwd: str) -> None:
    """Runs ``python -m terarec ARGUMENTS`` in ``cwd``; raises ``RuntimeError`` with its last error line."""
    command = [sys.executable, "-m", "terarec", *arguments]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"terarec {arguments[0]}: exit code {done.returncode}")


def _calibration(recalibrate: bool) -> dict[str, object]:
    """The calibration plans and training will use, measured first if asked or if none is saved."""
    from terarec.errors import TerarecError
    from terarec.sharding import default_calibration_path, load_calibration

    path = default_calibration_path()
    try:
        calibration = None if recalibrate else load_calibration(path)
    except TerarecError as error:
        raise SystemExit(f"{error} (or pass --recalibrate)") from None
    source = "saved before this run"
    if calibration is None:  # none saved, or one of a format plans ignore
        print("calibrating this machine (terarec plan --calibrate) ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="terarec-distributed-bench-") as workdir:
            _terarec(["plan", "--calibrate", "--world-size", "1"], workdir)
        calibration, source = load_calibration(path), "measured by this run"
    return {"path": str(path), "source": source, "summary": calibration.describe(), **calibration.to_dict()}


def _workload(args: argparse.Namespace) -> dict[str, object]:
    return {
        "num_sparse": args.features, "embedding_dim": args.dim, "batch_size": args.batch_size,
        "num_examples": args.examples, "num_eval_examples": args.eval_examples, "steps": list(args.steps),
        "repeat": args.repeat, "step_time": "(t(n2) - t(n1)) / (n2 - n1), t(n) the least train_seconds of repeat runs",
    }  # fmt: skip


def _settings(workload: dict[str, object], precision: str) -> list[str]:
    """The workload's ``--set`` flags and the communication precision (train and plan take both)."""
    keys = {
        "data.synthetic.num_sparse": workload["num_sparse"],
        "data.synthetic.num_examples": workload["num_examples"],
        "data.synthetic.num_eval_examples": workload["num_eval_examples"],
        "embedding.embedding_dim": workload["embedding_dim"],
        "train.batch_size": workload["batch_size"],
        # the DLRM these figures have always measured, one pass, no validation rounds in the timing
        "model.type": "dlrm",
        "train.epochs": 1,
        "data.val_fraction": 0,
    }
    sets = itertools.chain.from_iterable(("--set", f"{key}={value}") for key, value in keys.items())
    return [*sets, "--comm-precision", precision]


def _train(case: tuple[int, str, str], workload: dict[str, object], steps: int) -> dict[str, object]:
    """``metrics.json`` of a ``steps``-step run of ``case``, trained in a temporary directory."""
    world_size, mode, precision = case
    launch = ["--nproc-per-node", str(world_size)] if world_size > 1 else []
    run = ["--mode", mode, "--steps", str(steps), "--no-progress", *_settings(workload, precision)]
    with tempfile.TemporaryDirectory(prefix="terarec-distributed-bench-") as workdir:
        out = Path(workdir) / "run"
        _terarec(["train", *launch, *run, "--out", str(out)], workdir)
        return json.loads((out / "metrics.json").read_text())


def _fastest(case: tuple[int, str, str], workload: dict[str, object], steps: int) -> dict[str, object]:
    """The quickest of ``workload["repeat"]`` runs: other work on the machine only ever adds time."""
    runs = [_train(case, workload, steps) for _ in range(workload["repeat"])]
    return min(runs, key=lambda metrics: metrics["train_seconds"])


def _warm_up(workload: dict[str, object]) -> None:
    """A short untimed run: numba compiles the kernels into its on-disk cache here, not in a timed run
    (where it would land in one of a case's two runs and not cancel)."""
    print("warming up (an untimed run fills numba's kernel cache) ...", flush=True)
    _train((1, "sync", "fp32"), workload, 2)


def _shardings(metrics: dict[str, object], workload: dict[str, object]) -> dict[str, str]:
    """The sharding type training gave each table (``metrics.json``'s placement); whole tables on one rank."""
    if "placement" not in metrics:
        return {f"C{f + 1}": "table_wise" for f in range(workload["num_sparse"])}
    return {name: placed["sharding"] for name, placed in metrics["placement"].items()}


@functools.cache
def _plan(world_size: int, settings: tuple[str, ...], shardings: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """``terarec plan``'s JSON for ``settings`` on ``world_size`` ranks of this host, each table pinned
    to the sharding type training ran it with (the planner may choose types training does not run)."""
    pins = itertools.chain.from_iterable(("--shard", f"{name}={kind}") for name, kind in shardings)
    size = ["--world-size", str(world_size), "--ranks-per-host", str(world_size)]
    with tempfile.TemporaryDirectory(prefix="terarec-distributed-bench-") as workdir:
        path = Path(workdir) / "plan.json"
        _terarec(["plan", *size, *settings, *pins, "--json", str(path)], workdir)
        return json.loads(path.read_text())


def _slowest_rank_ms(plan: dict[str, object]) -> dict[str, float]:
    """The predicted step of the slowest rank by resource, in ms."""
    rank = max(plan["ranks"], key=lambda load: load["step_seconds"])
    parts = ("dense", "lookup", "ssd", "network", "intra_host", "exchange", "latency")
    return {part: rank[f"{part}_seconds"] * 1e3 for part in parts}


def _measure(case: tuple[int, str, str], workload: dict[str, object]) -> dict[str, object]:
    world_size, mode, precision = case
    row: dict[str, object] = {"world_size": world_size, "mode": mode, "comm_precision": precision}
    short, long = workload["steps"]
    try:
        first, second = _fastest(case, workload, short), _fastest(case, workload, long)
        shardings = _shardings(second, workload)
        plan = _plan(world_size, tuple(_settings(workload, precision)), tuple(shardings.items()))
    except RuntimeError as error:
        return {**row, "error": str(error)}
    step = (second["train_seconds"] - first["train_seconds"]) / (long - short)
    if step <= 0:
        return {**row, "error": f"the {long}-step run was no slower than the {short}-step one: too noisy, rerun"}
    predicted = plan["step_seconds"]
    return {
        **row,
        "examples_per_second": workload["batch_size"] / step,
        "comm_bytes_per_step": second.get("comm_bytes_per_step", 0.0),
        "predicted_comm_bytes_per_step": plan["comm_bytes_per_step"]["ids"] + plan["comm_bytes_per_step"]["pooled"],
        "trainer_predicted_comm_bytes_per_step": second.get("predicted_comm_bytes_per_step"),
        "predicted_allreduce_bytes_per_step": plan["comm_bytes_per_step"]["allreduce"],
        "step_time_s": step,
        "step_time_whole_run_s": second["train_seconds"] / second["steps"],
        "predicted_step_time_s": predicted,
        "trainer_predicted_step_time_s": second.get("predicted_step_seconds"),
        "predicted_over_measured": predicted / step,
        "within_20pct": abs(predicted / step - 1.0) <= TOLERANCE,
        "disturbed": abs(step * second["steps"] / second["train_seconds"] - 1.0) > DISTURBED,
        "predicted_ms_by_resource": _slowest_rank_ms(plan),
        "shardings": dict(collections.Counter(shardings.values())),
        "auc": second["auc"],
        "oversubscribed": world_size > (os.cpu_count() or 1),
        "threads_per_rank": second["threads"],
    }


def _display(row: dict[str, object]) -> dict[str, object]:
    """``row`` with the units and words the table prints."""
    shown = dict(row)
    for key in ("comm_bytes_per_step", "predicted_comm_bytes_per_step"):
        if key in row:
            shown[key] = row[key] / 1e6
    for key in ("step_time_s", "step_time_whole_run_s", "predicted_step_time_s"):
        if key in row:
            shown[key] = row[key] * 1e3
    for key in ("within_20pct", "oversubscribed", "disturbed"):
        if key in row:
            shown[key] = "yes" if row[key] else "no"
    return shown


def _print_results(results: list[dict[str, object]], workload: dict[str, object]) -> None:
    (short, long), repeat = workload["steps"], workload["repeat"]
    print(f"\nstep ms: (t({long}) - t({short})) / {long - short}, t(n) the least train_seconds of {repeat} run(s) "
          f"of n steps, so start-up cancels; whole-run ms: t({long}) / {long}, start-up included; "
          f"examples/s: batch / step")  # fmt: skip
    rows = [_display(row) for row in results]
    print_table(rows, [
        ("world_size", "ranks", "d"), ("mode", "mode", "s"), ("comm_precision", "precision", "s"),
        ("oversubscribed", "oversub", "s"), ("examples_per_second", "examples/s", ",.0f"),
        ("comm_bytes_per_step", "MB/step", ".2f"), ("predicted_comm_bytes_per_step", "pred MB/step", ".2f"),
        ("step_time_s", "step ms", ".1f"), ("step_time_whole_run_s", "whole-run ms", ".1f"),
        ("predicted_step_time_s", "pred step ms", ".1f"), ("predicted_over_measured", "pred/meas", ".2f"),
        ("within_20pct", "within 20%", "s"), ("disturbed", "disturbed", "s"), ("auc", "AUC", ".4f"),
    ])  # fmt: skip
    print("\npredicted step of the slowest rank by resource, ms (one host, tables in RAM: no network or SSD time):")
    parts = [(part, part, ".1f") for part in ("dense", "lookup", "intra_host", "exchange", "latency")]
    breakdown = [
        {
            "world_size": r["world_size"], "comm_precision": r["comm_precision"], **r["predicted_ms_by_resource"],
            "tables": ", ".join(f"{count} {kind}" for kind, count in sorted(r["shardings"].items())),
        }
        for r in results
        if "error" not in r and r["mode"] == "sync"
    ]  # fmt: skip
    columns = [("world_size", "ranks", "d"), ("comm_precision", "precision", "s"), *parts, ("tables", "tables", "s")]
    print_table(breakdown, columns)
    for row in results:
        if "error" in row:
            print(f"{row['world_size']} ranks / {row['mode']} / {row['comm_precision']}: {row['error']}")


def _print_verdict(results: list[dict[str, object]]) -> None:
    """Whether predictions came within 20% per world size, and whether training's planner agreed."""
    measured = [row for row in results if "error" not in row]
    for world_size in sorted({row["world_size"] for row in measured}):
        rows = [row for row in measured if row["world_size"] == world_size]
        ratios = ", ".join(f"{row['predicted_over_measured']:.2f}" for row in rows)
        hits = sum(row["within_20pct"] for row in rows)
        print(f"{world_size} ranks: predicted step within 20% of measured in {hits} of {len(rows)} cases "
              f"(predicted / measured: {ratios})")  # fmt: skip
    checked = {(row["world_size"], row["comm_precision"]): row for row in measured if row["world_size"] > 1}
    for (world_size, precision), row in checked.items():
        for key, what in (("step_time_s", "step seconds"), ("comm_bytes_per_step", "bytes per step")):
            trainer, plan = row[f"trainer_predicted_{key}"], row[f"predicted_{key}"]
            if abs(trainer / plan - 1.0) > CROSS_CHECK_TOLERANCE:
                print(f"note: {world_size} ranks / {precision}: training's planner predicted {trainer:.4g} {what}, "
                      f"terarec plan {plan:.4g}")  # fmt: skip
    if checked:
        print(f"training's own planner agreed with terarec plan within {CROSS_CHECK_TOLERANCE:.0%} "
              f"unless noted above")  # fmt: skip
    for row in (row for row in measured if row["disturbed"]):
        print(f"note: {row['world_size']} ranks / {row['mode']} / {row['comm_precision']}: steady step "
              f"{row['step_time_s'] * 1e3:.1f} ms against {row['step_time_whole_run_s'] * 1e3:.1f} ms over the whole "
              f"run: more than start-up explains, so other work disturbed a run; rerun, or raise --repeat")  # fmt: skip
    if any(row["mode"] == "hybrid" for row in measured):
        print("note: the cost model does not model hybrid mode's overlap: sync and hybrid share a prediction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 cases, fewer steps and examples, --repeat 1")
    parser.add_argument("--features", type=int, default=26, help="sparse features (one table each)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4096, help="global batch, split over the ranks")
    parser.add_argument("--examples", type=int, default=200_000, help="synthetic training examples")
    parser.add_argument("--eval-examples", type=int, default=50_000, help="synthetic eval examples (AUC)")
    parser.add_argument("--steps", type=int, nargs=2, default=(10, 50), metavar=("N1", "N2"),
                        help="steps of the two runs whose time difference gives the step time")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="runs of each length; the quickest counts")
    parser.add_argument("--recalibrate", action="store_true", help="measure this machine anew even if calibrated")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.examples, args.eval_examples, args.steps, args.repeat = 100_000, 20_000, (5, 25), 1
    if not 0 < args.steps[0] < args.steps[1] or args.repeat < 1:
        parser.error("--steps needs 0 < N1 < N2, --repeat at least 1")
    cores = os.cpu_count() or 1
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} ({cores} cores)")
    calibration = _calibration(args.recalibrate)
    print(f"calibration ({calibration['source']}, {calibration['path']}): {calibration['summary']}")
    workload = _workload(args)
    _warm_up(workload)
    results = []
    for case in _cases(args.quick):
        print("running {} ranks / {} / {} ...".format(*case), flush=True)
        results.append(_measure(case, workload))
    _print_results(results, workload)
    print()
    _print_verdict(results)
    if any(row.get("oversubscribed") for row in results):
        print(f"note: {cores} cores: runs with more ranks than cores are oversubscribed (the ranks share the cores), "
              f"so their speed measures contention, not scaling; judge them by the bytes communicated and the "
              f"cost model's accuracy")  # fmt: skip
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    payload = {"machine": machine_info(), "calibration": calibration, "workload": workload, "results": results}
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
