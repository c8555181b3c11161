"""``terarec plan``: where each embedding table would live on a cluster, and how fast a step would run.

Plans the run a config describes (tables sized as training sizes them, from the data's
distinct IDs, without reading whole datasets where it can), or a built-in preset
(``--preset 100t``) on the cluster it describes. Prints the placement, memory and time per
rank, traffic per step and the predicted throughput; ``--json`` and ``--plot`` save them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from terarec.cli.overrides import flag_overrides
from terarec.embedding import format_bytes, free_disk_bytes
from terarec.errors import PlanError, TerarecError

if TYPE_CHECKING:
    from terarec.sharding import Calibration, Plan, ShardingOverride

__all__ = ["add_parser", "run"]

# flag destination -> dotted config key
_SHORTCUTS = {
    "data": "data.path",
    "batch_size": "train.batch_size",
    "world_size": "sharding.world_size",
    "ranks_per_host": "sharding.ranks_per_host",
    "ram_per_rank": "sharding.ram_per_rank",
    "ssd_per_rank": "sharding.ssd_per_rank",
    "network_gbps": "sharding.network_gbps",
    "comm_precision": "sharding.comm_precision",
}


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``plan`` subcommand to the ``terarec`` parser."""
    plan = commands.add_parser(
        "plan", help="plan table sharding over ranks and tiers; predict memory, traffic and step time"
    )
    source = plan.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, metavar="FILE", help="YAML config of the run to plan; flags override it")
    source.add_argument(
        "--preset", metavar="NAME", help="plan a built-in model on its cluster instead (100t: 10^14 parameters)"
    )
    plan.add_argument("--data", metavar="PATH", help="training data (data.path); default: synthetic")
    plan.add_argument(
        "--world-size",
        type=int,
        metavar="N",
        help="ranks (sharding.world_size); for --preset: default the fewest that fit",
    )
    plan.add_argument(
        "--ranks-per-host", type=int, metavar="N", help="ranks sharing a machine (sharding.ranks_per_host)"
    )
    plan.add_argument(
        "--ram-per-rank",
        metavar="SIZE",
        help="RAM per rank, e.g. 64GiB or 500GB (sharding.ram_per_rank); default: this machine's",
    )
    plan.add_argument(
        "--ssd-per-rank",
        metavar="SIZE",
        help="local SSD per rank, e.g. 2TB (sharding.ssd_per_rank); default: none (the free disk for tiered tables)",
    )
    plan.add_argument(
        "--network-gbps",
        type=float,
        metavar="GBPS",
        help="network per host, Gbit/s (sharding.network_gbps); default: 10",
    )
    plan.add_argument(
        "--comm-precision",
        choices=["fp32", "bf16", "fp16"],
        help="pooled embeddings on the wire (sharding.comm_precision)",
    )
    plan.add_argument("--batch-size", type=int, metavar="N", help="examples per step over all ranks (train.batch_size); with --preset, per rank")
    plan.add_argument(
        "--shard",
        action="append",
        default=[],
        metavar="TABLE=TYPE",
        help="pin a table's sharding: data_parallel, table_wise, row_wise, column_wise or table_row_wise",
    )
    plan.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any config key")
    plan.add_argument("--calibrate", action="store_true", help="measure this machine's rates first and save them")
    plan.add_argument(
        "--calibration", type=Path, metavar="FILE", help="calibration file; default: ~/.cache/terarec/calibration.json"
    )
    plan.add_argument("--json", type=Path, metavar="FILE", help="also write the plan as JSON")
    plan.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="also draw memory and time per rank (needs matplotlib)"
    )


def _calibration(args: argparse.Namespace) -> Calibration | None:
    from terarec.sharding import load_calibration, measure_calibration, save_calibration

    if args.calibrate:
        print("calibrating: memory bandwidth, dense FLOP/s, gloo latency and bandwidth (a few seconds) ...", flush=True)
        calibration = measure_calibration()
        print(f"saved {save_calibration(calibration, args.calibration)}")
        return calibration
    return load_calibration(args.calibration)


def _overrides_for_plan(args: argparse.Namespace) -> list[tuple[str, object]]:
    return flag_overrides(args, _SHORTCUTS)


def _shard_overrides(args: argparse.Namespace, existing: Sequence[ShardingOverride]) -> tuple[ShardingOverride, ...]:
    from terarec.sharding import ShardingOverride, ShardingType

    pinned = {override.table: override for override in existing}
    for text in args.shard:
        table, sep, kind = text.partition("=")
        choices = [member.value for member in ShardingType]
        if not sep or not table or kind not in choices:
            raise TerarecError(f"--shard expects TABLE=TYPE with TYPE one of {', '.join(choices)}, got {text!r}")
        tier = pinned[table].tier if table in pinned else None
        pinned[table] = ShardingOverride(table, ShardingType(kind), tier)
    return tuple(pinned.values())


def _plan_config(args: argparse.Namespace) -> Plan:
    """Plans the run a config describes as training would place it (one planner for both)."""
    from terarec.train import load_config
    from terarec.train.placement import build_planner, run_workload
    from terarec.train.schedule import auto_batch_size

    config = load_config(args.config, _overrides_for_plan(args))
    sharding = dataclasses.replace(config.sharding, overrides=_shard_overrides(args, config.sharding.overrides))
    calibration = _calibration(args)
    run = run_workload(dataclasses.replace(config, sharding=sharding))
    notes = list(run.notes)
    batch_size = config.train.batch_size or auto_batch_size(run.num_rows)
    if sharding.network_gbps is None and sharding.world_size > sharding.ranks_per_host:
        notes.append("network bandwidth assumed: 10 Gbit/s per host (set --network-gbps)")
    if sharding.ram_per_rank is None:
        notes.append("RAM per rank: this machine's total RAM over ranks_per_host (set --ram-per-rank)")
    if sharding.ssd_per_rank == 0 and any(w.config.tiered is not None for w in run.workloads):
        free = free_disk_bytes(Path(config.train.tables_dir or config.train.out))
        sharding = dataclasses.replace(sharding, ssd_per_rank=free // sharding.ranks_per_host)
        notes.append(f"SSD per rank: the free disk where tiered tables go, {format_bytes(free)} (set --ssd-per-rank)")
    planner = build_planner(dataclasses.replace(config, sharding=sharding), run.tables, batch_size, calibration)
    return planner.plan(run.workloads, run.dense, notes)


def _plan_preset(args: argparse.Namespace) -> tuple[Plan, str]:
    from terarec._dataclass_codec import from_mapping
    from terarec.sharding import (
        CommPrecision,
        ShardingConfig,
        ShardingPlanner,
        get_preset,
        minimum_world_size,
    )

    if args.set or args.data or args.calibrate:
        raise TerarecError(
            "--preset plans a built-in model on its own cluster: --set, --data and --calibrate do not apply"
        )
    preset = get_preset(args.preset)
    cluster = preset.cluster
    per = args.ranks_per_host or cluster.ranks_per_machine
    sizes = from_mapping(
        ShardingConfig, {"ram_per_rank": args.ram_per_rank, "ssd_per_rank": args.ssd_per_rank or 0}, "sharding"
    )
    changes: dict[str, object] = {"ranks_per_machine": per}
    if sizes.ram_per_rank:
        changes["ram_per_machine"] = sizes.ram_per_rank * per
    if args.ssd_per_rank is not None:
        changes["ssd_per_machine"] = sizes.ssd_per_rank * per
    if args.network_gbps:
        changes["network_gbps"] = args.network_gbps
    cluster = dataclasses.replace(cluster, **changes)  # type: ignore[arg-type]
    precision = CommPrecision(args.comm_precision) if args.comm_precision else preset.comm_precision
    overrides = _shard_overrides(args, ())
    batch = args.batch_size or preset.batch_size
    rates = (
        f"preset cluster rates, not measured: gather {cluster.memory_bandwidth / 1e9:g} GB/s, "
        f"SSD {cluster.ssd_bandwidth / 1e9:g} GB/s, dense {cluster.dense_flops / 1e12:g} TFLOP/s, exchange packing "
        f"{cluster.exchange_rate / 1e9:g} G values/s per rank"
    )

    def planner(machines: int) -> ShardingPlanner:
        return ShardingPlanner(cluster.topology(machines), batch, precision, overrides, calibration=rates)

    if args.world_size:
        if args.world_size % per:
            raise TerarecError(f"--world-size {args.world_size} is not a multiple of {per} ranks per machine")
        machines, how = args.world_size // per, "as asked"
    else:
        fewest = minimum_world_size(planner(1), preset.tables, preset.dense)
        if fewest is None:
            raise PlanError(f"preset {preset.name!r} fits on no cluster of up to 65536 ranks of these machines")
        machines, how = fewest // per, "the fewest on which it fits"
    plan = planner(machines).plan(preset.tables, preset.dense)
    title = (
        f"preset {preset.name}: {preset.description}\n"
        f"machines: {machines} ({how}), each {format_bytes(cluster.ram_per_machine)} RAM, "
        f"{format_bytes(cluster.ssd_per_machine)} SSD, {cluster.network_gbps:g} Gbit/s, {per} ranks"
    )
    return plan, title


def run(args: argparse.Namespace) -> int:
    """Runs ``terarec plan``; returns the exit code."""
    from terarec.sharding import format_plan, plot_plan

    if args.preset:
        plan, title = _plan_preset(args)
    else:
        plan, title = _plan_config(args), "terarec plan"
    print(format_plan(plan, title))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot_plan(plan, args.plot)
        print(f"wrote {args.plot}")
    return 0
