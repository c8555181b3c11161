"""``terarec export``: a trained run as a self-contained model directory for serving.

A model directory holds what serving needs and nothing of training's:

- ``model.json``: the format version, the model's version (the checkpoint's step and the
  export time), the run's config, the data schema, the table configs, the task, and the
  features a request may carry;
- ``network.safetensors``: the dense network's weights (the model and any Deep Hash tables),
  in a format that holds tensors only;
- ``tables/<table>/``: each table's weights without optimizer state, memory-mapped when served
  (:func:`~terarec.embedding.export_tables`);
- ``index/``: for a two-tower model, the faiss index over every item's vector, built from the
  exported checkpoint (as ``terarec index`` builds it);
- ``manifest.json``: every other file's size and CRC-32, checked when the directory is opened.

The directory is written under a temporary name beside ``out`` and renamed into place, so a
failed export leaves no half-written model directory and an existing one is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch

from terarec._files import crc32_file, fsync_path, verify_files
from terarec.data import HISTORY_FEATURE, read_features
from terarec.embedding import export_tables
from terarec.errors import DataError
from terarec.models import ModelType
from terarec.serve.indexing import index_run
from terarec.train.checkpoint import checkpoint_step, read_run_spec, resolve_checkpoint
from terarec.train.evaluate import open_checkpoint

__all__ = ["FORMAT_VERSION", "ExportReport", "export_run", "verify_model_dir", "write_manifest"]

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MANIFEST = "manifest.json"
NETWORK = "network.safetensors"
TABLES = "tables"
INDEX = "index"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_run` wrote.

    Attributes:
        path (Path): the model directory.
        version (str): the model's version, ``step-<N>-<UTC time>``.
        checkpoint (Path): the checkpoint exported.
        files (int): files written.
        bytes (int): their total size.
        indexed_items (int): items in the retrieval index (0 without one).
    """

    path: Path
    version: str
    checkpoint: Path
    files: int
    bytes: int
    indexed_items: int


def _task(config_model: ModelType, group_col: str | None) -> str:
    if config_model is ModelType.TWO_TOWER:
        return "retrieval"
    return "ranking" if group_col is not None else "click"


def write_manifest(directory: Path) -> tuple[int, int]:
    """Writes ``manifest.json`` over every file below ``directory`` and fsyncs them all; the
    files and bytes it holds. (For a tool that changes an exported directory, e.g. swaps its
    index: the directory is then what the new manifest says.)"""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p != directory / MANIFEST):
        fsync_path(path)
        files[path.relative_to(directory).as_posix()] = {"bytes": path.stat().st_size, "crc32": crc32_file(path)}
    manifest = directory / MANIFEST
    manifest.write_text(json.dumps({"format_version": FORMAT_VERSION, "files": files}, indent=2) + "\n")
    fsync_path(manifest)
    for path in sorted({p.parent for p in directory.rglob("*")} | {directory}):
        fsync_path(path)
    return len(files) + 1, sum(entry["bytes"] for entry in files.values()) + manifest.stat().st_size


def export_run(run: Path, out: Path) -> ExportReport:
    """Exports a run's model (its best validated checkpoint, else its newest; or the checkpoint
    ``run`` names) into the new model directory ``out`` (see the module docstring).

    Raises:
        DataError: when ``out`` exists, or ``run`` holds no checkpoint.
    """
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: already exists; export into a new directory (a model directory is never overwritten)")
    checkpoint = resolve_checkpoint(Path(run))
    spec = read_run_spec(checkpoint)
    staging = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.mkdir()
        with open_checkpoint(checkpoint) as (config, schema, network, collection):
            safetensors.torch.save_file({k: v.contiguous() for k, v in network.state_dict().items()}, staging / NETWORK)
            export_tables(collection, staging / TABLES)
        step = checkpoint_step(checkpoint)
        version = f"step-{step}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        task = _task(config.model.type, config.data.group_col)
        indexed = 0
        if task == "retrieval":
            indexed = int(index_run(checkpoint, staging / INDEX)["num_items"])  # type: ignore[call-overload]
        description = {
            "format_version": FORMAT_VERSION,
            "version": version,
            "step": step,
            "checkpoint": str(checkpoint.resolve()),
            "task": task,
            "features": list(read_features(schema, config.data)),
            "empty_when_missing": [HISTORY_FEATURE] if task == "retrieval" else [],
            "config": spec["config"],
            "schema": spec["schema"],
            "tables": spec["tables"],
            "deep_hash_tables": spec.get("deep_hash_tables", []),
        }
        (staging / MODEL_JSON).write_text(json.dumps(description, indent=2) + "\n")
        files, size = write_manifest(staging)
        os.rename(staging, out)
        fsync_path(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(out, version, checkpoint, files, size, indexed)


def verify_model_dir(directory: Path) -> dict[str, object]:
    """``model.json`` of a model directory, after checking every file against the manifest.

    Raises:
        DataError: naming the file, for a missing manifest or file, a file of another size or
            CRC-32, a file the manifest does not list, or another format version.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{manifest_path}: missing or malformed; not a model directory of terarec export ({err})") from err
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{manifest_path}: format version {manifest.get('format_version')!r}, this terarec reads {FORMAT_VERSION}")
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()} - {MANIFEST}
    extra = sorted(present - set(files))
    if extra:
        raise DataError(f"{directory / extra[0]}: not in the manifest; the model directory was changed after export")
    verify_files(directory, dict(sorted(files.items())), "model directory")
    description = json.loads((directory / MODEL_JSON).read_text())
    if description.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{directory / MODEL_JSON}: format version {description.get('format_version')!r}, expected {FORMAT_VERSION}")
    return description
