"""Atomic, verifiable checkpoints with exact resume.

A checkpoint is a directory ``OUT/checkpoints/step-<N>`` holding the dense model, its optimizer,
every embedding table (rows, optimizer state, ID map), the trainer's position in the data, the
torch RNG state, the config, and a manifest of every file's size and CRC-32. It is written into
a temporary sibling directory, every file and directory fsynced, then renamed into place: the
rename is the commit, so a crash (or ``kill -9``) mid-write leaves the previous checkpoints as
they were and at worst a ``.tmp-*`` directory that the next save removes.

Nothing here unpickles arbitrary objects: tensors load with ``torch.load(weights_only=True)``,
tables with ``np.load(allow_pickle=False)``, the rest is JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from terarec._files import crc32_file, fsync_path, verify_files
from terarec.embedding import EmbeddingCollection
from terarec.errors import DataError
from terarec.train.distributed import World

__all__ = [
    "TrainerState",
    "best_checkpoint",
    "checkpoint_step",
    "discard_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "mark_best",
    "read_run_spec",
    "resolve_checkpoint",
    "save_checkpoint",
]

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
BEST = "best"  # file in checkpoints/ naming the best validated checkpoint
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class TrainerState:
    """Where training stands: everything besides weights that exact resume needs.

    Args:
        step (int): optimizer steps taken.
        epoch (int): the current epoch.
        batch_in_epoch (int): batches of ``epoch`` already consumed.
        examples_seen (int): training examples consumed.
        best_step (int, optional): the step of the best validated model so far. Default: ``None``
        best_value (float, optional): its validation metric. Default: ``None``
        stale_validations (int, optional): validations since the best one. Default: ``0``
        validations (tuple[dict[str, float], ...], optional): every validation so far: its
            ``step`` and metrics. Default: ``()``
        stream_files (tuple[str, ...], optional): streaming (``train.stream``): the files trained
            to their end, in order; ``epoch`` then counts them. Default: ``()``
        stream_file (str, optional): streaming: the file in progress, of which ``batch_in_epoch``
            batches are trained. Default: ``None``
        stream_file_rows (int, optional): streaming: that file's rows, which tell it unchanged
            on resume. Default: ``0``
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    examples_seen: int = 0
    best_step: int | None = None
    best_value: float | None = None
    stale_validations: int = 0
    validations: tuple[dict[str, float], ...] = ()
    stream_files: tuple[str, ...] = ()
    stream_file: str | None = None
    stream_file_rows: int = 0


def _write_json(path: Path, payload: Mapping[str, object]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def _file_entry(path: Path, previous: Mapping[str, Mapping[str, int]], name: str) -> dict[str, int]:
    stat = path.stat()
    entry = {"bytes": stat.st_size, "inode": stat.st_ino, "mtime_ns": stat.st_mtime_ns}
    known = previous.get(name, {})
    if all(known.get(key) == value for key, value in entry.items()):
        # A hard link to the previous checkpoint's file (a tiered table's unchanged snapshot):
        # its CRC is known, and re-reading a file of many GB at every checkpoint is what
        # incremental snapshots exist to avoid.
        return {**entry, "crc32": int(known["crc32"])}
    return {**entry, "crc32": crc32_file(path)}


def _seal(directory: Path, previous: Path | None) -> None:
    """Writes the manifest, then fsyncs every file and directory below ``directory``."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    known: dict[str, dict[str, int]] = {}
    if previous is not None:
        try:
            known = json.loads((previous / MANIFEST).read_text())["files"]
        except (OSError, ValueError, KeyError):
            known = {}
    manifest = {str(p.relative_to(directory)): _file_entry(p, known, str(p.relative_to(directory))) for p in files}
    _write_json(directory / MANIFEST, {"files": manifest})
    for path in [*files, directory / MANIFEST]:
        fsync_path(path)
    for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        fsync_path(sub)
    fsync_path(directory)


def save_checkpoint(
    run_dir: Path,
    state: TrainerState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    collection: EmbeddingCollection,
    run_spec: Mapping[str, object],
    keep: int = 2,
    world: World = World(),
) -> Path:
    """Writes a checkpoint of ``state.step`` atomically and keeps only the newest ``keep``.

    ``run_spec`` (config, data schema, table configs; see :func:`read_run_spec`) lets
    ``terarec eval`` rebuild the model without the training data.

    With several ranks (``world``), every rank calls this: rank 0 writes the dense model
    (the same on every rank), each rank writes the tables it owns into the same staging
    directory, and rank 0 seals the manifest over all of them and renames it into place, so
    the checkpoint appears whole or not at all. The run directory must be one file system
    that every rank sees (local disk for one machine; a shared mount across machines).

    Returns:
        Path: the new checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step-{state.step:09d}"
    staging = root / f".tmp-step-{state.step:09d}"
    try:
        if world.is_primary:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging.mkdir()
            torch.save(model.state_dict(), staging / "model.pt")
            torch.save(optimizer.state_dict(), staging / "dense_optimizer.pt")
            torch.save({"torch": torch.get_rng_state()}, staging / "rng.pt")
            (staging / "tables").mkdir()
        world.barrier()
        collection.save(staging / "tables")
        world.barrier()
        if world.is_primary:
            _write_json(staging / "trainer.json", asdict(state))
            _write_json(staging / "run.json", run_spec)
            _seal(staging, latest_checkpoint(run_dir))
            if final.exists():
                # A crash after the rename of this step but before newer progress: replace it whole.
                shutil.rmtree(final)
            os.rename(staging, final)
            fsync_path(root)
    except BaseException:
        if world.is_primary:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if world.is_primary:
        best = best_checkpoint(run_dir)
        for old in _checkpoints(root)[:-keep]:
            if old != best:
                shutil.rmtree(old, ignore_errors=True)
    world.barrier()
    return final


def discard_checkpoints(run_dir: Path) -> int:
    """Removes the checkpoints of an earlier run in ``run_dir`` (a fresh run there would
    otherwise mix its checkpoints with them) and returns how many there were."""
    root = Path(run_dir) / CHECKPOINTS
    found = _checkpoints(root)
    for old in found:
        shutil.rmtree(old)
    (root / BEST).unlink(missing_ok=True)
    return len(found)


def mark_best(checkpoint: Path) -> None:
    """Records ``checkpoint`` as its run's best validated one: :func:`resolve_checkpoint` of
    the run then means it, and pruning keeps it. Written atomically (temporary file, rename)."""
    checkpoint = Path(checkpoint)
    pointer = checkpoint.parent / BEST
    staging = checkpoint.parent / f".tmp-{BEST}"
    staging.write_text(checkpoint.name)
    fsync_path(staging)
    os.rename(staging, pointer)
    fsync_path(checkpoint.parent)


def best_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint :func:`mark_best` recorded for the run, or ``None`` (none, or pruned)."""
    pointer = Path(run_dir) / CHECKPOINTS / BEST
    if not pointer.is_file():
        return None
    candidate = pointer.parent / pointer.read_text().strip()
    return candidate if _STEP_DIR.match(candidate.name) and (candidate / MANIFEST).is_file() else None


def _checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def checkpoint_step(checkpoint: Path) -> int:
    """The training step a ``checkpoints/step-<N>`` directory holds.

    Raises:
        DataError: when the name is not ``step-<N>``.
    """
    match = _STEP_DIR.match(Path(checkpoint).name)
    if match is None:
        raise DataError(f"{checkpoint}: not a checkpoint directory (expected a name like step-000000100)")
    return int(match.group(1))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None``."""
    found = _checkpoints(Path(run_dir) / CHECKPOINTS)
    return found[-1] if found else None


def resolve_checkpoint(path: Path) -> Path:
    """Accepts a checkpoint directory or a run directory (meaning its best validated
    checkpoint when validation chose one, else its newest).

    Raises:
        DataError: when ``path`` holds no checkpoint.
    """
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    latest = best_checkpoint(path) or latest_checkpoint(path)
    if latest is None:
        raise DataError(f"{path}: no checkpoint here (expected a run directory or a checkpoints/step-N directory)")
    return latest


def _verify(directory: Path) -> None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{directory / MANIFEST}: unreadable checkpoint manifest ({error})") from None
    verify_files(directory, manifest, "checkpoint")


def read_run_spec(path: Path) -> dict[str, object]:
    """What the run of checkpoint ``path`` was: ``config``, data ``schema`` and ``tables`` (plain mappings)."""
    directory = resolve_checkpoint(path)
    return json.loads((directory / "run.json").read_text())


def load_checkpoint(
    path: Path,
    model: nn.Module,
    collection: EmbeddingCollection,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = False,
) -> TrainerState:
    """Verifies checkpoint ``path`` against its manifest and loads it into the given objects.

    Args:
        path (Path): a checkpoint or run directory (see :func:`resolve_checkpoint`).
        model (nn.Module): receives the dense weights.
        collection (EmbeddingCollection): receives every table.
        optimizer (torch.optim.Optimizer, optional): receives the dense optimizer state. Default: ``None``
        restore_rng (bool, optional): also restore torch's RNG, for exact resume. Default: ``False``

    Raises:
        DataError: when a file is missing, truncated or corrupt.
    """
    directory = resolve_checkpoint(path)
    _verify(directory)
    model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(directory / "dense_optimizer.pt", weights_only=True))
    collection.load(directory / "tables")
    if restore_rng:
        torch.set_rng_state(torch.load(directory / "rng.pt", weights_only=True)["torch"])
    raw = json.loads((directory / "trainer.json").read_text())
    raw["validations"] = tuple(raw.get("validations", ()))
    raw["stream_files"] = tuple(raw.get("stream_files", ()))
    return TrainerState(**raw)
