"""Are the defaults good? ``terarec train`` with only data flags, against logistic regression
and against the best point of a small hyper-parameter grid, on every tabular shared dataset.

For each dataset, on the same training / validation / test rows:

- ``defaults``: :func:`terarec.train.fit` with nothing set but the data keys (the batch size and
  epoch count chosen from the row count, validation and early stopping on), one run per seed;
- ``logistic regression``: scikit-learn's on a one-hot encoding of the same IDs (no hashing
  collisions) and the dense features, ``C`` picked by validation AUC (``bench/quality.py``'s),
  on datasets of at most ``--sklearn-max-rows`` training rows (liblinear did not finish the
  synthetic default's 1.8M rows in 15 minutes); and terarec's own hashed ``lr`` model with the
  same defaults, on every dataset;
- ``grid``: the default model with ``train.batch_size`` x ``embedding.optimizer.learning_rate``
  x ``train.epochs`` set by hand (early stopping still on, so ``epochs`` is the most run), seed
  0; the best point by test AUC is what the defaults are measured against (an optimistic
  ceiling: a user would pick by validation).

Datasets: the Criteo sample (7,200 training rows, ``dev.tsv,test.tsv`` test), MovieLens-100k as
click prediction (rating >= 4; user and item IDs; the last 10% of rows test) and the synthetic
default of ``terarec train`` (2M rows; its grid is smaller, one pass takes about a minute).

    python bench/defaults.py --json bench/results/defaults.json
    python bench/defaults.py --datasets criteo_sample --seeds 0 --no-grid
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

from _deepctr import encode_splits
from _machine import machine_info, set_threads, write_json
from quality import DATA_DIR, Dataset, datasets, load_baseline_splits, run_sklearn

SYNTHETIC_DEFAULT = Dataset("synthetic_default", {}, 0)
GRIDS: dict[str, dict[str, tuple[object, ...]]] = {
    "criteo_sample": {"batch_size": (32, 64, 256), "learning_rate": (0.02, 0.05, 0.1), "epochs": (1, 3, 50)},
    "movielens": {"batch_size": (128, 512, 2048), "learning_rate": (0.02, 0.05, 0.1), "epochs": (1, 5, 20)},
    "synthetic_default": {"batch_size": (1024, 2048, 4096), "learning_rate": (0.02, 0.05, 0.1), "epochs": (1,)},
}
GRID_KEYS = {"batch_size": "train.batch_size", "learning_rate": "embedding.optimizer.learning_rate", "epochs": "train.epochs"}


def run_terarec(dataset: Dataset, extra: dict[str, object], seed: int, threads: int) -> dict[str, object]:
    """One ``fit`` run with the dataset's data keys, ``extra`` dotted keys and the seed."""
    from terarec.train import fit, load_config

    overrides = [(f"data.{k}", ",".join(v) if isinstance(v, tuple) else v) for k, v in dataset.data.items()]
    overrides += [*extra.items(), ("train.seed", seed), ("train.num_threads", threads), ("train.progress", False)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        metrics = fit(load_config(overrides=[*overrides, ("train.out", out)])).metrics
    keep = ("auc", "logloss", "steps", "model_step", "batch_size", "epochs", "stopped_early", "train_seconds")
    return {**{k: metrics[k] for k in keep}, "wall_seconds": time.perf_counter() - started,
            "model": metrics["config"]["model"]["type"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="criteo_sample,movielens,synthetic_default")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-grid", action="store_true", help="defaults and logistic regression only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sklearn-max-rows", type=int, default=200_000)
    parser.add_argument("--json", type=Path, help="write every run and the machine here")
    args = parser.parse_args()
    known = {**datasets(DATA_DIR), SYNTHETIC_DEFAULT.name: SYNTHETIC_DEFAULT}
    chosen = [name for name in args.datasets.split(",") if name]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"--datasets: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = set_threads(args.threads)
    runs: list[dict[str, object]] = []
    summary: list[dict[str, object]] = []
    for name in chosen:
        dataset = known[name]
        defaults = [run_terarec(dataset, {}, seed, threads) for seed in seeds]
        for seed, run in zip(seeds, defaults):
            runs.append({"dataset": name, "system": "defaults", "seed": seed, **run})
            print(f"{name} defaults seed {seed}: AUC {run['auc']:.4f} ({run['model']}, batch {run['batch_size']}, "
                  f"step {run['model_step']} of {run['steps']}, {run['wall_seconds']:.0f} s)", flush=True)
        hashed = [run_terarec(dataset, {"model.type": "lr"}, seed, threads) for seed in seeds]
        for seed, run in zip(seeds, hashed):
            runs.append({"dataset": name, "system": "terarec_lr", "seed": seed, **run})
            print(f"{name} terarec lr seed {seed}: AUC {run['auc']:.4f}", flush=True)
        splits, _ = load_baseline_splits(dataset, 0.1)
        baseline = None
        if splits.train.num_rows <= args.sklearn_max_rows:
            baseline = run_sklearn(encode_splits(splits.train, splits.val, splits.eval), seed=0)
            runs.append({"dataset": name, "system": "logistic_regression", **baseline})
            print(f"{name} logistic regression: AUC {baseline['auc']:.4f} (C={baseline['C']})", flush=True)
        grid_best = None
        if not args.no_grid:
            grid = GRIDS[name]
            for point in itertools.product(*grid.values()):
                extra = {GRID_KEYS[key]: value for key, value in zip(grid, point)}
                run = {"dataset": name, "system": "grid", "seed": 0, "point": extra, **run_terarec(dataset, extra, 0, threads)}
                runs.append(run)
                print(f"{name} grid {extra}: AUC {run['auc']:.4f}", flush=True)
                if grid_best is None or run["auc"] > grid_best["auc"]:
                    grid_best = run
        aucs = [run["auc"] for run in defaults]
        row = {
            "dataset": name,
            "defaults_auc_mean": statistics.mean(aucs),
            "defaults_auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "defaults_seed0_auc": defaults[0]["auc"],
            "logistic_regression_auc": baseline["auc"] if baseline else None,
            "terarec_lr_auc_mean": statistics.mean(run["auc"] for run in hashed),
            "grid_best_auc": grid_best["auc"] if grid_best else None,
            "grid_best_point": grid_best["point"] if grid_best else None,
        }
        summary.append(row)
    print()
    print("| dataset | defaults AUC (mean ± std over seeds) | seed 0 | scikit-learn LR | terarec lr (mean) "
          "| grid best (seed 0) | at |")
    print("|---|---|---|---|---|---|---|")
    for row in summary:
        best = "—" if row["grid_best_auc"] is None else f"{row['grid_best_auc']:.4f}"
        point = "—" if row["grid_best_point"] is None else ", ".join(f"{k}={v}" for k, v in row["grid_best_point"].items())
        sklearn_auc = "—" if row["logistic_regression_auc"] is None else f"{row['logistic_regression_auc']:.4f}"
        print(f"| {row['dataset']} | {row['defaults_auc_mean']:.4f} ± {row['defaults_auc_std']:.4f} | "
              f"{row['defaults_seed0_auc']:.4f} | {sklearn_auc} | {row['terarec_lr_auc_mean']:.4f} | {best} | {point} |")
    machine = {**machine_info(), "load_avg_end": [round(x, 2) for x in os.getloadavg()]}
    write_json(args.json, {"machine": machine, "threads": threads, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
