"""The trainer's view of ``torch.distributed``: which rank this is, its process groups, and the
few collectives the loop needs besides the embedding exchange (barriers, gathering predictions).

``torchrun`` (or ``terarec train --nproc-per-node N``) sets ``RANK``, ``WORLD_SIZE`` and the
rendezvous address in each worker's environment; :func:`join_world` reads them. Without them
the run is one process and nothing here talks to anyone. CPU ranks talk over gloo.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["World", "broadcast_buffers", "gather_objects", "join_world", "leave_world", "sum_over_ranks"]


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run.

    Attributes:
        rank (int): this rank, in ``[0, size)``.
        size (int): ranks ``W``.
        local_size (int): ranks on this machine (they share its cores).
        prepare_group (dist.ProcessGroup | None): the group batches are prepared over, on the
            trainer's background thread; ``None`` for one process.
        apply_group (dist.ProcessGroup | None): the group embedding gradients travel over
            (a background thread's in hybrid mode); ``None`` for one process.

    Example::

        >>> World().is_primary, World().size
        (True, 1)
    """

    rank: int = 0
    size: int = 1
    local_size: int = 1
    prepare_group: dist.ProcessGroup | None = None
    apply_group: dist.ProcessGroup | None = None

    @property
    def is_primary(self) -> bool:
        """Whether this rank prints, logs and seals checkpoints (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Waits for every rank (nothing to wait for with one process)."""
        if self.size > 1:
            dist.barrier()


def join_world(timeout_seconds: float) -> World:
    """Joins the process group ``torchrun`` described in the environment, if any.

    Every collective then fails with an error after ``timeout_seconds`` without an answer,
    so a dead rank stops the others instead of hanging them (a rank killed outright closes
    its sockets, and the others fail at once).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not dist.is_initialized():
        return World()
    timeout = timedelta(seconds=timeout_seconds)
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timeout)
        atexit.register(_leave_default_group)
    # Separate groups let the prepare thread and the hybrid update thread talk while the main
    # thread runs its own collectives: calls on one group must come in the same order on all
    # ranks, and two threads sharing a group could not promise that.
    prepare_group = dist.new_group(backend="gloo", timeout=timeout)
    apply_group = dist.new_group(backend="gloo", timeout=timeout)
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())),
        prepare_group=prepare_group,
        apply_group=apply_group,
    )


def leave_world(world: World) -> None:
    """Releases the groups :func:`join_world` made for one run. The default group stays for
    the next run in this process (joining anew would rendezvous on torchrun's store again and
    read the first rendezvous' keys) and is destroyed when the process exits."""
    for group in (world.prepare_group, world.apply_group):
        if group is not None and dist.is_initialized():
            dist.destroy_process_group(group)


def _leave_default_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(world: World, value: object) -> list[object]:
    """Every rank's ``value``, in rank order, on every rank.

    Example::

        >>> gather_objects(World(), "only")
        ['only']
    """
    if world.size == 1:
        return [value]
    gathered: list[object] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_buffers(world: World, module: torch.nn.Module) -> None:
    """Rank 0's floating-point buffers (batch norm's running statistics) on every rank.

    DistributedDataParallel broadcasts them before each training forward, but every rank then
    updates them with its own batch; evaluating afterwards would score each rank's share with
    different statistics, and not as the checkpoint (rank 0's) does.

    Example::

        >>> broadcast_buffers(World(), torch.nn.BatchNorm1d(2))  # one process: nothing to do
    """
    if world.size == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.broadcast(buffer, src=0)


def sum_over_ranks(world: World, value: float) -> float:
    """``value`` summed over ranks, on every rank.

    Example::

        >>> sum_over_ranks(World(), 2.5)
        2.5
    """
    if world.size == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total)
