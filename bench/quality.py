"""Model quality side by side: terarec vs DeepCTR-Torch vs scikit-learn's logistic regression.

Every system trains on the same rows and is scored on the same test rows:

- ``terarec``: :func:`terarec.train.fit` with ``model.type`` set: its own loader, hashed tables
  with its default embedding optimizer, dense Adam (lr 1e-3), as it ships (each run's whole
  config is in the JSON);
- ``deepctr``: DeepCTR-Torch 0.3.0's model of the same name (the mapping and the quirks that
  needed care are in ``bench/_deepctr.py``), on the same 64-bit IDs read by terarec's data layer
  and turned into per-feature indices, trained with Adam (lr 1e-3) on tables and MLP alike;
- ``sklearn``: ``LogisticRegression`` (liblinear, L2) on a one-hot encoding of the same indices
  plus the dense features; ``C`` is picked from ``0.01, 0.1, 1, 10`` by validation AUC
  (``lr`` only; its time is the whole grid).

Shared by all: the training split's last 10% of rows validate (``data.val_fraction``, carved by
terarec's :func:`~terarec.data.load_splits` for every system); after every epoch the validation
AUC is measured, training stops after ``--patience`` epochs without a better one (at most
``--epochs``) and the best epoch's weights are scored. Same embedding dim (16), MLP widths
(256-128), DCN-v2 cross layers (3, full-rank as DeepCTR's, beside the MLP), xDeepFM CIN (64-64, split half),
batch size, seeds (``train.seed`` / ``torch.manual_seed`` / ``random_state``) and torch threads.
AUC and log loss are reported as mean ± sample standard deviation over the seeds, with the mean
training time (data loading excluded, per-epoch validation included) and epochs run / best
(terarec's computed from its steps). Runs of one seed go model by model, all systems in turn,
so a slow spell of the machine hits every system alike. On a 2-core VM shared with other work,
2 torch threads made DeepCTR's LR on the Criteo sample 18-40x slower than 1 thread, with the
same AUC (OpenMP barrier stalls, as ``bench/_torchrec.py`` notes): time such a machine with
``--threads 1``.

Datasets (read from ``../shared/data``; nothing is downloaded):

- ``criteo_sample``: the Criteo Kaggle sample, 7,200 training rows, ``dev.tsv,test.tsv`` test;
- ``movielens``: MovieLens-100k as click prediction (rating >= 4), features user and item,
  the last 10% of rows test;
- ``synthetic``: terarec's generator, 1M training rows (900k trained, 100k validate) and 100k
  test rows, whose hidden click model gives the best possible AUC (the "ceiling").

    pip install -e ".[bench]"
    python bench/quality.py --quick --json bench/results/quality_quick.json
    python bench/quality.py --json bench/results/quality.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from _deepctr import DEEPCTR_MODELS, EncodedPart, EncodedSplits, TrainSettings, click_metrics, encode_splits, run_deepctr
from _machine import machine_info, set_threads, write_json
from terarec.data import DataConfig, DataFormat, DataSplits, SyntheticConfig, load_splits

SYSTEMS = ("terarec", "deepctr", "sklearn")
MODELS = DEEPCTR_MODELS
SYSTEM_MODELS = {"terarec": MODELS, "deepctr": MODELS, "sklearn": ("lr",)}
C_GRID = (0.01, 0.1, 1.0, 10.0)
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repo root


@dataclass(frozen=True)
class Dataset:
    """A dataset as the ``data`` section of terarec's config, and the batch size used on it.

    Args:
        name (str): its name in ``--datasets``.
        data (dict[str, object]): dotted ``data.`` keys (without the prefix) and their values;
            terarec gets them as overrides, the baselines as a :class:`DataConfig`.
        batch_size (int): examples per step on this dataset.
    """

    name: str
    data: dict[str, object]
    batch_size: int


def datasets(data_dir: Path) -> dict[str, Dataset]:
    """The three datasets by name, their files under ``data_dir``."""
    criteo = data_dir / "criteo_kaggle_9k"
    return {d.name: d for d in (
        Dataset("criteo_sample", {"path": str(criteo / "train.tsv"),
                                  "eval_path": f"{criteo / 'dev.tsv'},{criteo / 'test.tsv'}", "format": "criteo"}, 64),
        Dataset("movielens", {"path": str(data_dir / "movielens_100k" / "ml-100k.inter"), "format": "csv",
                              "delimiter": "\t", "label": "rating:float", "ignore": ("timestamp:float",),
                              "label_threshold": 4.0}, 256),
        Dataset("synthetic", {"synthetic.num_examples": 1_000_000, "synthetic.num_eval_examples": 100_000}, 2048),
    )}


def _data_config(data: dict[str, object]) -> DataConfig:
    fields = {k: v for k, v in data.items() if not k.startswith("synthetic.")}
    if "format" in fields:
        fields["format"] = DataFormat(fields["format"])
    synthetic = {k.removeprefix("synthetic."): v for k, v in data.items() if k.startswith("synthetic.")}
    return DataConfig(**fields, synthetic=SyntheticConfig(**synthetic))


def load_baseline_splits(dataset: Dataset, val_fraction: float) -> tuple[DataSplits, float | None]:
    """Training, validation and test rows exactly as :func:`terarec.train.fit` gets them, and the
    best possible test AUC where the data's click model is known."""
    splits = load_splits(_data_config({**dataset.data, "val_fraction": val_fraction}))
    if splits.val is None:
        raise ValueError(f"{dataset.name}: terarec's data layer carved no validation rows")
    ceiling = None
    if splits.eval_probabilities is not None:
        ceiling = click_metrics(splits.eval.labels, splits.eval_probabilities)["auc"]
    return splits, ceiling


def _override_value(value: object) -> object:
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def run_terarec(dataset: Dataset, model: str, settings: TrainSettings, seed: int, threads: int) -> dict[str, object]:
    """One :func:`terarec.train.fit` run: its metrics (``auc``, ``log_loss``, ``train_seconds``, ...,
    its config), plus ``epochs_run`` and ``best_epoch`` computed from its steps."""
    from terarec.train import fit, load_config

    overrides: list[tuple[str, object]] = [(f"data.{k}", _override_value(v)) for k, v in dataset.data.items()]
    overrides += [
        ("data.val_fraction", settings.val_fraction),
        ("model.type", model),
        ("embedding.embedding_dim", settings.embedding_dim),
        ("train.batch_size", settings.batch_size),
        ("train.epochs", settings.epochs),
        ("train.early_stopping.patience", settings.patience),
        ("train.seed", seed),
        ("train.num_threads", threads),
        ("train.progress", False),
    ]
    if model != "lr":
        overrides.append((f"model.{model}.mlp", _override_value(settings.mlp)))
    if model == "dcnv2":
        # DeepCTR's DCN-v2 crosses with full matrices; terarec's default is low-rank
        overrides += [("model.dcnv2.num_layers", settings.cross_layers), ("model.dcnv2.low_rank", "null")]
    if model == "xdeepfm":
        overrides.append(("model.xdeepfm.cin_layers", _override_value(settings.cin_layers)))
    with tempfile.TemporaryDirectory() as out:
        metrics = fit(load_config(overrides=[*overrides, ("train.out", out)])).metrics
    steps_per_epoch = math.ceil(metrics["train_rows"] / settings.batch_size)
    # fit names log loss ``logloss`` (ClickMetrics); the runs of every system share one key.
    return {**metrics, "log_loss": metrics["logloss"], "epochs_run": metrics["steps"] / steps_per_epoch,
            "best_epoch": metrics["model_step"] / steps_per_epoch}


def _one_hot(data: EncodedSplits, part: EncodedPart) -> sparse.csr_matrix:
    rows, features = part.indices.shape
    first_column = np.cumsum((0, *data.num_embeddings[:-1]))
    one_hot = sparse.csr_matrix(
        (np.ones(rows * features), (np.repeat(np.arange(rows), features), (part.indices + first_column).ravel())),
        shape=(rows, sum(data.num_embeddings)))
    return sparse.hstack([one_hot, sparse.csr_matrix(part.dense)], format="csr")


def run_sklearn(data: EncodedSplits, seed: int) -> dict[str, object]:
    """Logistic regression on one-hot IDs and dense features, ``C`` chosen by validation AUC."""
    train_x, val_x, test_x = (_one_hot(data, part) for part in (data.train, data.val, data.test))
    started = time.perf_counter()
    val_aucs = {}
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, solver="liblinear", max_iter=1000, random_state=seed)
        model.fit(train_x, data.train.labels)
        val_aucs[c] = click_metrics(data.val.labels, model.predict_proba(val_x)[:, 1])["auc"]
        if best is None or val_aucs[c] > val_aucs[best[0]]:
            best = (c, model)
    train_seconds = time.perf_counter() - started
    scores = click_metrics(data.test.labels, best[1].predict_proba(test_x)[:, 1])
    return {**scores, "train_seconds": train_seconds, "C": best[0], "val_auc": val_aucs[best[0]],
            "val_auc_by_C": {str(c): v for c, v in val_aucs.items()}}


def _mean_std(values: list[float], spec: str) -> str:
    if len(values) < 2:
        return format(values[0], spec)
    return f"{statistics.mean(values):{spec}} ± {statistics.stdev(values):{spec}}"


def summarize(runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """One row per (dataset, model, system): mean and standard deviation over the successful seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, object]]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["model"], run["system"]), []).append(run)
    rows = []
    for (dataset, model, system), group in groups.items():
        done = [r for r in group if "error" not in r]
        row: dict[str, object] = {"dataset": dataset, "model": model, "system": system,
                                  "seeds": len(done), "errors": len(group) - len(done)}
        for key in ("auc", "log_loss", "train_seconds", "epochs_run", "best_epoch"):
            values = [float(r[key]) for r in done if key in r]
            row[key] = values
            row[f"{key}_mean"] = statistics.mean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return rows


def print_markdown(rows: list[dict[str, object]], ceilings: dict[str, float | None]) -> None:
    print("| dataset | model | system | AUC | log loss | train s | epochs run / best | seeds |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        epochs = "n/a"
        if row["seeds"]:
            auc, loss = _mean_std(row["auc"], ".4f"), _mean_std(row["log_loss"], ".4f")
            seconds = f"{row['train_seconds_mean']:.1f}"
            if row["epochs_run_mean"] is not None:
                epochs = f"{row['epochs_run_mean']:.1f} / {row['best_epoch_mean']:.1f}"
        else:
            auc = loss = seconds = "error"
        dataset = row["dataset"]
        if ceilings.get(dataset) is not None:
            dataset = f"{dataset} (ceiling AUC {ceilings[dataset]:.4f})"
        print(f"| {dataset} | {row['model']} | {row['system']} | {auc} | {loss} | {seconds} | {epochs} | {row['seeds']} |")


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in ("terarec", "deepctr-torch", "scikit-learn", "scipy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _choices(parser: argparse.ArgumentParser, flag: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    chosen = [v for v in value.split(",") if v]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        parser.error(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Criteo sample, seed 0, lr/deepfm/dcnv2, at most 3 epochs (a few minutes)")
    parser.add_argument("--datasets", help="default: criteo_sample,movielens,synthetic")
    parser.add_argument("--models", help=f"default: {','.join(MODELS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--seeds", help="default: 0,1,2")
    parser.add_argument("--epochs", type=int, help="most epochs (default 10; 3 with --quick)")
    parser.add_argument("--patience", type=int, default=2, help="epochs without a better validation AUC")
    parser.add_argument("--batch-size", type=int, help="default: 64 Criteo sample, 256 MovieLens, 2048 synthetic")
    parser.add_argument("--threads", type=int, default=2, help="torch (and numba) threads of every system")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--json", type=Path, help="write every run and the machine here")
    args = parser.parse_args()
    known = datasets(args.data_dir)
    chosen = _choices(parser, "--datasets", args.datasets or ("criteo_sample" if args.quick else ",".join(known)), tuple(known))
    models = _choices(parser, "--models", args.models or ("lr,deepfm,dcnv2" if args.quick else ",".join(MODELS)), MODELS)
    systems = _choices(parser, "--systems", args.systems, SYSTEMS)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    if args.patience < 0:
        parser.error("--patience must be >= 0 (0: never stop early)")
    threads = set_threads(args.threads)
    epochs = args.epochs or (3 if args.quick else 10)
    machine = {**machine_info(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}

    runs: list[dict[str, object]] = []
    dataset_info: dict[str, dict[str, object]] = {}
    ceilings: dict[str, float | None] = {}
    for name in chosen:
        dataset = known[name]
        settings = TrainSettings(embedding_dim=16, mlp=(256, 128), cross_layers=3, cin_layers=(64, 64),
                                 batch_size=args.batch_size or dataset.batch_size, epochs=epochs,
                                 patience=args.patience, val_fraction=0.1)
        dataset_info[name] = {"data": dataset.data, "settings": dataclasses.asdict(settings)}
        encoded = None
        if set(systems) - {"terarec"}:
            splits, ceilings[name] = load_baseline_splits(dataset, settings.val_fraction)
            encoded = encode_splits(splits.train, splits.val, splits.eval)
            dataset_info[name] |= {"train_rows": encoded.train.labels.shape[0], "val_rows": encoded.val.labels.shape[0],
                                   "test_rows": encoded.test.labels.shape[0], "ceiling_auc": ceilings[name],
                                   "num_embeddings": dict(zip(encoded.feature_names, encoded.num_embeddings))}
        for seed in seeds:
            for model in models:
                for system in (s for s in systems if model in SYSTEM_MODELS[s]):
                    set_threads(threads)  # terarec's fit sets its own; every run starts alike
                    try:
                        if system == "terarec":
                            result = run_terarec(dataset, model, settings, seed, threads)
                        elif system == "deepctr":
                            result = run_deepctr(model, encoded, settings, seed)
                        else:
                            result = run_sklearn(encoded, seed)
                    except Exception as error:  # one failed run is reported and the benchmark goes on
                        result = {"error": f"{type(error).__name__}: {error}"}
                    runs.append({"dataset": name, "model": model, "system": system, "seed": seed, **result})
                    status = result.get("error") or (
                        f"AUC {result['auc']:.4f}  log loss {result['log_loss']:.4f}  {result['train_seconds']:.1f} s")
                    print(f"{name:>13} {model:>9} {system:>7} seed {seed}: {status}", flush=True)
    rows = summarize(runs)
    print()
    print_markdown(rows, ceilings)
    machine["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.json, {"machine": machine, "versions": _versions(), "threads": threads,
                           "datasets": dataset_info, "summary": rows, "runs": runs})


if __name__ == "__main__":
    main()
