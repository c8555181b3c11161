"""Deep Hash Embeddings against tables: AUC at a quarter of the full table's parameters, and
hashed tables at the same parameter count and at four times it.

For each dataset, the default model and training (``terarec train`` with only data keys), and
these embeddings, on the same training / validation / test rows:

- ``full``: a collisionless table (``embedding.dynamic``): one row per ID seen in training,
  ``P = distinct IDs x dim`` parameters;
- ``dhe``: one Deep Hash table shared by every feature: 1,024 hashes, Gaussian, one hidden layer
  (batch norm, Mish) as wide as ``P / 4`` parameters allow (on the MovieLens and Criteo
  samples, wide encodings with a narrow layer beat deeper and wider decoders of the same size);
- ``hashed_1x``: per-feature hashed tables with the DHE decoder's parameter count in rows
  (``embedding.rows_per_distinct_id`` ~0.25: most IDs share a row);
- ``hashed_4x``: the same with four times those rows (~1 row per distinct ID, ~63% sharing);
- ``default``: the shipped hashed tables (64 rows per distinct ID), for reference.

Parameters counted: embedding rows (``full``: rows used, not capacity) plus the decoder; the
model's own dense network is the same for all and left out. AUC and log loss as mean ± sample
standard deviation over the seeds.

    python bench/deep_hash.py --json bench/results/deep_hash.json
    python bench/deep_hash.py --datasets movielens --seeds 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _machine import machine_info, set_threads, write_json
from quality import DATA_DIR, Dataset, datasets, load_baseline_splits

VARIANTS = ("full", "dhe", "hashed_1x", "hashed_4x", "default")
EMBEDDING_DIM = 16
NUM_HASHES = 1024


def decoder_width(budget: int, dim: int) -> int:
    """The widest hidden layer ``H`` whose decoder ``1024 -> H -> dim`` (with batch norm) fits ``budget``."""
    width = 1
    while _decoder(width + 1).num_parameters(dim) <= budget:
        width += 1
    return width


def _decoder(width: int) -> object:
    from terarec.embedding import DeepHashConfig, HashTransform

    return DeepHashConfig(NUM_HASHES, transform=HashTransform.GAUSSIAN, hidden_dims=(width,))


def variant_keys(variant: str, features: list[str], distinct: int, width: int) -> dict[str, object]:
    """The dotted config keys of one variant (``distinct``: IDs over all features)."""
    rows_per_id = _decoder(width).num_parameters(EMBEDDING_DIM) / (EMBEDDING_DIM * distinct)
    if variant == "full":
        return {"embedding.dynamic.min_count": 1, "embedding.rows_per_distinct_id": 1.25}
    if variant == "dhe":
        table = {"name": "dhe", "feature_names": features, "kind": "dhe",
                 "deep_hash": {"num_hashes": NUM_HASHES, "transform": "gaussian", "hidden_dims": [width]}}
        return {"embedding.tables": [table]}
    if variant == "hashed_1x":
        return {"embedding.rows_per_distinct_id": rows_per_id, "embedding.min_rows": 1}
    if variant == "hashed_4x":
        return {"embedding.rows_per_distinct_id": 4 * rows_per_id, "embedding.min_rows": 1}
    return {}


def run(dataset: Dataset, keys: dict[str, object], seed: int, threads: int) -> dict[str, object]:
    """One ``fit`` run; returns its metrics and the embedding parameters it trained."""
    import json

    from terarec.train import fit, load_config

    overrides = [(f"data.{k}", ",".join(v) if isinstance(v, tuple) else v) for k, v in dataset.data.items()]
    overrides += [*keys.items(), ("train.seed", seed), ("train.num_threads", threads), ("train.progress", False)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = fit(load_config(overrides=[*overrides, ("train.out", out)]))
        spec = json.loads((result.checkpoint / "run.json").read_text())
        metrics = result.metrics
    from terarec._dataclass_codec import from_mapping
    from terarec.embedding import DeepHashConfig

    # A dynamic table holds the IDs it admitted (its live rows), not its capacity.
    counters: dict[str, float] = metrics["tables"]  # type: ignore[assignment]
    rows = sum(int(counters.get(f"{t['name']}/live_rows", t["num_embeddings"])) for t in spec["tables"])
    decoder = sum(
        from_mapping(DeepHashConfig, t["deep_hash"]).num_parameters(t["embedding_dim"]) for t in spec["deep_hash_tables"]
    )
    return {
        "auc": metrics["auc"],
        "logloss": metrics["logloss"],
        "embedding_parameters": rows * EMBEDDING_DIM + decoder,
        "model_step": metrics["model_step"],
        "steps": metrics["steps"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="criteo_sample,movielens")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every run and the machine here")
    args = parser.parse_args()
    known = datasets(DATA_DIR)
    chosen = [name for name in args.datasets.split(",") if name]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"--datasets: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = set_threads(args.threads)
    runs: list[dict[str, object]] = []
    summary: list[dict[str, object]] = []
    for name in chosen:
        dataset = known[name]
        splits, _ = load_baseline_splits(dataset, 0.1)
        features = list(splits.train.schema.sparse_features)
        distinct = sum(splits.stats.distinct_ids.values())
        width = decoder_width(distinct * EMBEDDING_DIM // 4, EMBEDDING_DIM)
        print(f"{name}: {distinct:,} distinct IDs over {len(features)} features; full table "
              f"{distinct * EMBEDDING_DIM:,} parameters; DHE hidden width {width}", flush=True)
        for variant in variants:
            results = []
            for seed in seeds:
                result = run(dataset, variant_keys(variant, features, distinct, width), seed, threads)
                results.append(result)
                runs.append({"dataset": name, "variant": variant, "seed": seed, **result})
                print(f"  {variant} seed {seed}: AUC {result['auc']:.4f}, {result['embedding_parameters']:,} "
                      f"parameters, best step {result['model_step']} of {result['steps']}, "
                      f"{result['wall_seconds']:.0f} s", flush=True)
            aucs, losses = [r["auc"] for r in results], [r["logloss"] for r in results]
            summary.append({
                "dataset": name, "variant": variant,
                "embedding_parameters": results[0]["embedding_parameters"],
                "auc_mean": statistics.mean(aucs), "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
                "logloss_mean": statistics.mean(losses),
                "logloss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
                "train_seconds_mean": statistics.mean(r["train_seconds"] for r in results),
            })
    print()
    print("| dataset | embeddings | parameters | AUC | log loss | train s |")
    print("|---|---|---|---|---|---|")
    for row in summary:
        print(f"| {row['dataset']} | {row['variant']} | {row['embedding_parameters']:,} | "
              f"{row['auc_mean']:.4f} ± {row['auc_std']:.4f} | {row['logloss_mean']:.4f} ± {row['logloss_std']:.4f} | "
              f"{row['train_seconds_mean']:.1f} |")
    machine = {**machine_info(), "load_avg_end": [round(x, 2) for x in os.getloadavg()]}
    write_json(args.json, {"machine": machine, "threads": threads, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
