"""A plan as people read it: the text table ``terarec plan`` prints and the per-rank plots it saves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from terarec.embedding import format_bytes
from terarec.errors import TerarecError
from terarec.sharding.config import ShardingType
from terarec.sharding.types import Plan, RankLoad, Resource

__all__ = ["format_plan", "plot_plan"]

_MAX_LISTED_REPLICAS = 6
_MAX_LISTED_RANKS = 16
_MAX_LISTED_TABLES = 12


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
