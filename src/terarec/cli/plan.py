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

import numpy as np

from terarec.cli.overrides import flag_overrides
from terarec.embedding import format_bytes, free_disk_bytes
from terarec.errors import PlanError, TerarecError

if TYPE_CHECKING:
    from terarec.sharding import (
        Calibration,
        DenseWorkload,
        Plan,
        RankLoad,
        ShardingOverride,
        TableWorkload,
    )
    from terarec.train import Config

__all__ = ["add_parser", "format_plan", "plot_plan", "run"]

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
_MAX_LISTED_REPLICAS = 6
_MAX_LISTED_RANKS = 16
_MAX_LISTED_TABLES = 12


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


def _config_workloads(config: Config) -> tuple[list[TableWorkload], DenseWorkload, int, list[str]]:
    """The run's tables as training builds them, their bag sizes and skew, the dense network,
    and the training rows."""
    from terarec.models import model_class
    from terarec.data import (
        DataFormat,
        load_splits,
        open_prepared,
        read_prepared_stats,
        resolve_path,
    )
    from terarec.train.builders import build_deep_hash_tables, build_table_configs
    from terarec.train.placement import (
        DEFAULT_ZIPF_EXPONENT,
        dense_workload,
        mean_bag_sizes,
        table_workloads,
    )

    data, notes = config.data, []
    skew = config.sharding.zipf_exponent
    if data.path is None:
        synthetic = data.synthetic
        distinct = synthetic.cardinalities()
        features = list(distinct)
        sizes = synthetic.bag_sizes or (1,) * synthetic.num_sparse
        pooling = {name: float(size) for name, size in zip(features, sizes, strict=True)}
        num_dense, num_rows = synthetic.num_dense, synthetic.num_examples
        skew = synthetic.zipf_exponent if skew is None else skew
        notes.append("synthetic data: tables sized from its cardinalities (an upper bound of the distinct IDs)")
    else:
        paths, fmt = resolve_path(data.path, data.format)
        if fmt is DataFormat.PREPARED and len(paths) == 1:
            train, stats = open_prepared(paths[0]), read_prepared_stats(paths[0])  # memory-mapped: nothing read
        else:
            splits = load_splits(data)
            train, stats = splits.train, splits.stats
        features = list(train.schema.sparse_features)
        distinct = stats.distinct_ids
        pooling = mean_bag_sizes(train)
        num_dense, num_rows = train.schema.num_dense, train.num_rows
        if skew is None:
            skew = DEFAULT_ZIPF_EXPONENT
            notes.append(f"ID skew assumed: Zipf exponent {DEFAULT_ZIPF_EXPONENT} (set sharding.zipf_exponent)")
    model_type = model_class(config.model.type)
    tables = build_table_configs(config.embedding, features, distinct, model_type.layout, model_type.embedding_optimizer)
    workloads = table_workloads(tables, pooling, skew)
    hashed = build_deep_hash_tables(config.embedding, features, model_type.layout)
    dense = dense_workload(config, num_dense, tables, hashed, pooling)
    return workloads, dense, num_rows, notes


def _plan_config(args: argparse.Namespace) -> Plan:
    from terarec.sharding import UNCALIBRATED, ShardingPlanner, build_topology
    from terarec.train import load_config

    config = load_config(args.config, _overrides_for_plan(args))
    sharding = dataclasses.replace(config.sharding, overrides=_shard_overrides(args, config.sharding.overrides))
    calibration = _calibration(args)
    from terarec.train.schedule import auto_batch_size

    workloads, dense, num_rows, notes = _config_workloads(dataclasses.replace(config, sharding=sharding))
    batch_size = config.train.batch_size or auto_batch_size(num_rows)
    if sharding.network_gbps is None and sharding.world_size > sharding.ranks_per_host:
        notes.append("network bandwidth assumed: 10 Gbit/s per host (set --network-gbps)")
    if sharding.ram_per_rank is None:
        notes.append("RAM per rank: this machine's total RAM over ranks_per_host (set --ram-per-rank)")
    if sharding.ssd_per_rank == 0 and any(w.config.tiered is not None for w in workloads):
        free = free_disk_bytes(Path(config.train.tables_dir or config.train.out))
        sharding = dataclasses.replace(sharding, ssd_per_rank=free // sharding.ranks_per_host)
        notes.append(f"SSD per rank: the free disk where tiered tables go, {format_bytes(free)} (set --ssd-per-rank)")
    topology = build_topology(sharding, calibration)
    planner = ShardingPlanner(
        topology,
        max(1, batch_size // sharding.world_size),
        sharding.comm_precision,
        sharding.overrides,
        sharding.min_cache_fraction,
        calibration.describe() if calibration else UNCALIBRATED,
    )
    return planner.plan(workloads, dense, notes)


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


def _ranks_text(ranks: Sequence[int]) -> str:
    if not ranks:
        return "-"
    runs, start = [], ranks[0]
    for previous, current in zip(ranks, [*ranks[1:], None]):
        if current != previous + 1:
            runs.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = current  # type: ignore[assignment]
    text = ",".join(runs)
    return text if len(text) <= 24 else f"{len(ranks)} ranks"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def format_plan(plan: Plan, title: str) -> str:
    """The plan as the text ``terarec plan`` prints: inputs, placements, ranks, traffic, speed, bounds."""
    from terarec.sharding import Resource, ShardingType

    p, topo = plan, plan.topology
    table_bytes = sum(
        pl.storage.ram_bytes + pl.storage.ssd_bytes
        for pl in p.placements
        if pl.sharding_type is not ShardingType.DATA_PARALLEL
    )
    lines = [
        title,
        (
            f"model: {len(p.placements)} tables, {p.num_parameters:.3g} embedding parameters "
            f"({format_bytes(table_bytes)} of sharded weights and optimizer state)"
        ),
        (
            f"cluster: {_count(topo.world_size, 'rank')} ({_count(topo.num_hosts, 'host')} x {topo.ranks_per_host}); per rank "
            f"RAM {format_bytes(topo.ram_per_rank)}, SSD {format_bytes(topo.ssd_per_rank) if topo.ssd_per_rank else 'none'}; "
            f"network {topo.network_bandwidth * 8 / 1e9:g} Gbit/s per host"
        ),
        f"rates: {p.calibration}",
        (
            f"batch: {p.batch_size:,} examples per rank, {p.batch_size * topo.world_size:,} per step; "
            f"pooled embeddings on the wire in {p.comm_precision.value}"
        ),
        "",
        f"{'table':<20} {'rows':>16} {'dim':>4}  {'sharding':<14} {'ranks':<24} {'tier':<7} {'RAM/shard':>10} {'SSD/shard':>10}",
    ]
    replicas = [pl for pl in p.placements if pl.sharding_type is ShardingType.DATA_PARALLEL]
    collapse = len(replicas) > _MAX_LISTED_REPLICAS
    sharded = [pl for pl in p.placements if pl.sharding_type is not ShardingType.DATA_PARALLEL]
    listed = set(range(len(p.placements)))
    if len(sharded) > _MAX_LISTED_TABLES:  # the largest tables, then the rest summarised
        by_size = sorted(sharded, key=lambda pl: -(pl.storage.ram_bytes + pl.storage.ssd_bytes))
        shown = {pl.name for pl in by_size[: _MAX_LISTED_TABLES - 2]}
        listed = {i for i, pl in enumerate(p.placements) if pl.name in shown}
    for index, pl in enumerate(p.placements):
        if index not in listed or (collapse and pl.sharding_type is ShardingType.DATA_PARALLEL):
            continue
        ram = max(s.storage.ram_bytes for s in pl.shards)
        ssd = max(s.storage.ssd_bytes for s in pl.shards)
        lines.append(
            f"{pl.name:<20} {pl.num_embeddings:>16,} {pl.embedding_dim:>4}  {pl.sharding_type.value:<14} "
            f"{_ranks_text(pl.ranks):<24} {'+'.join(t.value for t in pl.tiers):<7} {format_bytes(ram):>10} "
            f"{format_bytes(ssd) if ssd else '-':>10}"
        )
    rest = [
        pl
        for i, pl in enumerate(p.placements)
        if i not in listed and pl.sharding_type is not ShardingType.DATA_PARALLEL
    ]
    for kind in ShardingType:
        group = [pl for pl in rest if pl.sharding_type is kind]
        if group:
            sizes = [max(s.storage.ram_bytes + s.storage.ssd_bytes for s in pl.shards) for pl in group]
            tiers = sorted({t.value for pl in group for t in pl.tiers})
            lines.append(
                f"+ {len(group)} more {kind.value} tables, shards of {format_bytes(min(sizes))} to "
                f"{format_bytes(max(sizes))} on {len({r for pl in group for r in pl.ranks})} ranks ({'+'.join(tiers)})"
            )
    if collapse:
        largest = max(pl.storage.ram_bytes // topo.world_size for pl in replicas)
        total = sum(pl.storage.ram_bytes // topo.world_size for pl in replicas)
        lines.append(
            f"+ {len(replicas)} data_parallel tables of at most {format_bytes(largest)} on every rank "
            f"({format_bytes(total)} per rank)"
        )
    lines += [
        "",
        "per rank (time in ms per step)",
        (
            f"{'rank':<10} {'RAM':>10} {'(cache)':>10} {'SSD':>10} {'dense':>8} {'lookup':>8} {'ssd':>8} "
            f"{'network':>8} {'intra':>8} {'packing':>8} {'latency':>8} {'step':>8}"
        ),
    ]

    def row(label: str, r: RankLoad) -> str:
        return (
            f"{label:<10} {format_bytes(r.storage.ram_bytes):>10} {format_bytes(r.cache_bytes):>10} "
            f"{format_bytes(r.storage.ssd_bytes):>10} {_ms(r.dense_seconds):>8} {_ms(r.lookup_seconds):>8} "
            f"{_ms(r.ssd_seconds):>8} {_ms(r.network_seconds):>8} {_ms(r.intra_host_seconds):>8} "
            f"{_ms(r.exchange_seconds):>8} {_ms(r.latency_seconds):>8} {_ms(r.step_seconds):>8}"
        )

    if topo.world_size <= _MAX_LISTED_RANKS:
        lines += [row(str(load.rank), load) for load in p.ranks]
    else:
        by_step = sorted(p.ranks, key=lambda load: load.step_seconds)
        lines += [
            row("fastest", by_step[0]),
            row("median", by_step[len(by_step) // 2]),
            row(f"slowest {by_step[-1].rank}", by_step[-1]),
        ]
    comm = p.comm_bytes
    sent = max(load.sent_bytes for load in p.ranks)
    received = max(load.received_bytes for load in p.ranks)
    slowest = p.slowest_rank
    parts = slowest.seconds_by_resource()
    usage = p.utilization()
    bound_share = parts[p.time_bound] / p.step_seconds if p.step_seconds else 0.0
    lines += [
        "",
        (
            f"communication per step: {format_bytes(int(comm['ids']))} IDs + {format_bytes(int(comm['pooled']))} pooled "
            f"embeddings and gradients + {format_bytes(int(comm['allreduce']))} all-reduce, over all ranks; the busiest "
            f"rank sends {format_bytes(int(sent))} and receives {format_bytes(int(received))}"
        ),
        (
            f"memory over all ranks: RAM {format_bytes(sum(r.storage.ram_bytes for r in p.ranks))} (of which SSD caches "
            f"{format_bytes(sum(r.cache_bytes for r in p.ranks))}), SSD {format_bytes(sum(r.storage.ssd_bytes for r in p.ranks))}; "
            f"the fullest rank uses {usage[Resource.RAM_CAPACITY]:.0%} of its RAM budget without caches and "
            f"{usage[Resource.SSD_CAPACITY]:.0%} of its SSD budget ({topo.headroom:.0%} of each)"
        ),
        (
            f"predicted step: {_ms(p.step_seconds)} ms (rank {slowest.rank}, the slowest) -> "
            f"{p.examples_per_second:,.0f} examples/s"
        ),
        f"binding: {p.time_bound.value} for speed ({bound_share:.0%} of the step); {p.capacity_bound.value} for size",
    ]
    lines += [f"note: {note}" for note in p.notes]
    lines.append("note: no overlap of communication, lookups and compute is assumed (an upper bound on the step)")
    return "\n".join(lines)


def _unit(largest: float) -> tuple[float, str]:
    for power, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if largest >= 1 << power:
            return float(1 << power), unit
    return 1.0, "bytes"


def plot_plan(plan: Plan, path: Path) -> None:
    """Draws per-rank memory (RAM, cache, SSD against budgets) and per-rank step time by resource into ``path``.

    Raises:
        TerarecError: when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TerarecError("--plot needs matplotlib: pip install matplotlib (or pip install 'terarec[plot]')") from None
    loads, topo = plan.ranks, plan.topology
    ranks = np.arange(len(loads))
    ram = np.array([load.storage.ram_bytes for load in loads], dtype=np.float64)
    cache = np.array([load.cache_bytes for load in loads], dtype=np.float64)
    ssd = np.array([load.storage.ssd_bytes for load in loads], dtype=np.float64)
    fig, (ram_ax, ssd_ax, time_ax) = plt.subplots(
        3, 1, figsize=(max(8.0, min(0.12 * len(loads) + 6, 26.0)), 9), sharex=True
    )
    outside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": "small"}
    scale, unit = _unit(max(topo.ram_budget, float(ram.max())))
    ram_ax.bar(ranks, (ram - cache) / scale, label="tables and dense")
    ram_ax.bar(ranks, cache / scale, bottom=(ram - cache) / scale, label="SSD caches")
    ram_ax.axhline(topo.ram_budget / scale, color="black", linestyle="--", linewidth=1, label="budget")
    ram_ax.set(ylabel=unit, title="RAM per rank")
    ram_ax.legend(**outside)
    scale, unit = _unit(max(topo.ssd_budget, float(ssd.max()), 1.0))
    ssd_ax.bar(ranks, ssd / scale, color="tab:green", label="tables")
    if topo.ssd_budget:
        ssd_ax.axhline(topo.ssd_budget / scale, color="black", linestyle="--", linewidth=1, label="budget")
    ssd_ax.set(ylabel=unit, title="SSD per rank")
    ssd_ax.legend(**outside)
    bottom = np.zeros(len(loads))
    for resource in loads[0].seconds_by_resource():
        values = np.array([load.seconds_by_resource()[resource] for load in loads]) * 1e3
        time_ax.bar(ranks, values, bottom=bottom, label=resource.value)
        bottom += values
    time_ax.set(
        ylabel="ms per step",
        xlabel="rank",
        title=f"load per rank: step {plan.step_seconds * 1e3:,.1f} ms, {plan.examples_per_second:,.0f} examples/s",
    )
    time_ax.legend(**outside)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Runs ``terarec plan``; returns the exit code."""
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
