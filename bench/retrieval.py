"""Retrieval side by side: terarec's two-tower model against popularity, item-KNN and matrix
factorisation (``implicit``'s ALS and BPR), all on the same split and ranked by the same code.

Every system trains on the training events terarec's data layer carves out of the log and is
scored by :func:`terarec.train.retrieval_metrics.full_ranking_metrics`: every catalogue item
ranked for every evaluation query, the user's known items excluded:

- ``two_tower``: :func:`terarec.train.fit` with ``model.type=two_tower`` and every other
  setting at its default (in-batch softmax, log-Q correction, early stopping on validation
  NDCG@10); ``two_tower+side`` also reads MovieLens' user and item files;
- ``popularity``: items by their training events;
- ``item_knn``: ``implicit``'s ``CosineRecommender``: a user's known items times the item-item
  cosine similarity (neighbours ``K`` picked on validation);
- ``als`` / ``bpr``: ``implicit``'s ALS and BPR over the binary user-item matrix; factors,
  regularisation (ALS) and learning rate (BPR) picked on validation NDCG@10 from a small grid.

Datasets (``../shared/data``, nothing downloaded): ``ml-100k`` (leave-last-out), Amazon
``video_games`` (leave-last-out) and ``lastfm`` (its fixed ``data1.txt``/``test1.txt`` split;
validation carved leave-last-out from the training file; its lines have no time order, so a
training row's history is the user's other training artists: ``history: others``). The time column is training time
(the grid's best point for the baselines), data loading excluded.

Each two-tower run is also indexed (``terarec index``'s default, IVF) and the index measured
against exact search on the run's evaluation queries. A second table measures IVF and HNSW
indexes over clustered synthetic unit vectors (1M x 64, 100k with ``--quick``): build time,
recall@10 and @100 against exact search, and single-query searches per second on one thread.

    pip install -e ".[bench]"
    python bench/retrieval.py --quick --json bench/results/retrieval_quick.json
    python bench/retrieval.py --json bench/results/retrieval.json
    python bench/retrieval.py --variant uniform_negatives=512 --no-baselines --json FILE
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, write_json  # noqa: E402

from terarec.data import DataConfig, RetrievalData, load_splits  # noqa: E402
from terarec.serve import IndexKind, ItemIndex, index_run, measure_index  # noqa: E402
from terarec.train import fit  # noqa: E402
from terarec.train.config import Config  # noqa: E402
from terarec.train.retrieval_metrics import full_ranking_metrics  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
ML = DATA / "movielens_100k"


@dataclass(frozen=True)
class Dataset:
    name: str
    data: dict[str, object]


DATASETS = {
    "ml-100k": Dataset("ml-100k", {"path": str(ML / "ml-100k.inter")}),
    "video_games": Dataset("video_games", {"path": str(DATA / "amazon_video_games_seq" / "Video.txt")}),
    # Last.fm's lines are in no meaningful order (no time): a training row's history is the user's
    # other training artists (data.interactions.history=others).
    "lastfm": Dataset("lastfm", {"path": str(DATA / "lastfm_hetrec" / "data1.txt"),
                                 "eval_path": str(DATA / "lastfm_hetrec" / "test1.txt"),
                                 "interactions": {"history": "others"}}),
}
SIDE = {"user_features": str(ML / "ml-100k.user"), "item_features": str(ML / "ml-100k.item")}


def _data_config(dataset: Dataset, side: bool) -> dict[str, object]:
    raw = {**dataset.data, "format": "interactions"}
    if side:
        raw["interactions"] = {**raw.get("interactions", {}), **SIDE}
    return raw


def _interactions(retrieval: RetrievalData, train_users: np.ndarray, train_items: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """The binary user-item matrix of the training events, and the user hash of each of its rows (sorted)."""
    user_ids, rows = np.unique(train_users, return_inverse=True)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, train_items)), shape=(len(user_ids), retrieval.num_items))
    matrix.data[:] = 1.0  # repeated events count once
    return matrix, user_ids


def _catalogue_positions(retrieval: RetrievalData, item_hashes: np.ndarray) -> np.ndarray:
    catalogue = np.asarray(retrieval.catalogue.sparse[retrieval.item_features[0]].values)
    order = np.argsort(catalogue)
    return order[np.searchsorted(catalogue[order], item_hashes)]


def _metrics(score: Callable[[np.ndarray], torch.Tensor], queries, num_items: int) -> dict[str, float]:
    block = max(1, (1 << 23) // num_items)
    return full_ranking_metrics(score, queries.num_queries, queries.targets, queries.exclude, block=block).to_dict()


def _profiles(queries, num_items: int) -> sp.csr_matrix:
    """Each query's known items (its excluded ones) as a binary row."""
    values = np.asarray(queries.exclude.values)
    offsets = np.asarray(queries.exclude.offsets)
    return sp.csr_matrix((np.ones(len(values), np.float32), values, offsets), shape=(queries.num_queries, num_items))


def _baselines(dataset: Dataset, threads: int, quick: bool) -> list[dict[str, object]]:
    import implicit  # noqa: PLC0415 - a bench extra

    splits = load_splits(_to_config(_data_config(dataset, side=False)))
    retrieval = splits.retrieval
    user_col, item_col = retrieval.user_features[0], retrieval.item_features[0]
    train_users = np.asarray(splits.train.sparse[user_col].values)
    train_items = _catalogue_positions(retrieval, np.asarray(splits.train.sparse[item_col].values))
    matrix, user_ids = _interactions(retrieval, train_users, train_items)
    rows = []

    def query_rows(queries) -> np.ndarray:
        return np.searchsorted(user_ids, np.asarray(queries.queries.sparse[user_col].values))

    counts = torch.from_numpy(retrieval.item_counts.astype(np.float32))
    started = time.perf_counter()
    popularity = _metrics(lambda q: counts.expand(len(q), -1), retrieval.eval, retrieval.num_items)
    rows.append({"system": "popularity", **popularity, "train_seconds": time.perf_counter() - started, "params": {}})

    def pick(name: str, grid: list[dict[str, object]], build: Callable[[dict[str, object]], Callable]) -> None:
        best = None
        for params in grid:
            started = time.perf_counter()
            scorer = build(params)
            seconds = time.perf_counter() - started
            validation = _metrics(lambda q, s=scorer: s(retrieval.val, q), retrieval.val, retrieval.num_items)
            if best is None or validation["ndcg@10"] > best[0]:
                best = (validation["ndcg@10"], params, scorer, seconds)
        _, params, scorer, seconds = best
        rows.append({"system": name, **_metrics(lambda q: scorer(retrieval.eval, q), retrieval.eval, retrieval.num_items),
                     "train_seconds": seconds, "params": params})

    def knn(params: dict[str, object]) -> Callable:
        model = implicit.nearest_neighbours.CosineRecommender(K=int(params["K"]), num_threads=threads)
        model.fit(matrix, show_progress=False)
        similarity = model.similarity.tocsr()

        def score(queries, q: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray((_profiles(queries, retrieval.num_items)[q] @ similarity).todense(), np.float32))

        return score

    def factors(model) -> Callable:
        model.fit(matrix, show_progress=False)
        users = torch.from_numpy(np.asarray(model.user_factors, np.float32))
        items = torch.from_numpy(np.asarray(model.item_factors, np.float32))
        cached: dict[int, np.ndarray] = {}

        def score(queries, q: np.ndarray) -> torch.Tensor:
            key = id(queries)
            if key not in cached:
                cached[key] = query_rows(queries)
            return users[torch.from_numpy(cached[key][q])] @ items.T

        return score

    def als(params: dict[str, object]) -> Callable:
        return factors(implicit.als.AlternatingLeastSquares(
            factors=int(params["factors"]), regularization=float(params["regularization"]),
            iterations=15, num_threads=threads, random_state=0))

    def bpr(params: dict[str, object]) -> Callable:
        return factors(implicit.bpr.BayesianPersonalizedRanking(
            factors=int(params["factors"]), learning_rate=float(params["learning_rate"]), regularization=0.01,
            iterations=100, num_threads=threads, random_state=0))

    pick("item_knn", [{"K": k} for k in ((100,) if quick else (20, 100, 500))], knn)
    pick("als", [{"factors": f, "regularization": r} for f in ((64,) if quick else (64, 128)) for r in (0.01, 0.1, 1.0)], als)
    pick("bpr", [{"factors": f, "learning_rate": lr} for f in ((64,) if quick else (64, 128)) for lr in (0.01, 0.05)], bpr)
    for row in rows:
        row["dataset"] = dataset.name
    return rows


def _to_config(raw: dict[str, object]) -> DataConfig:
    return Config.from_dict({"data": raw}).data


def _two_tower(dataset: Dataset, side: bool, threads: int, seed: int, model: dict[str, object] | None = None) -> dict[str, object]:
    """A two-tower run at the defaults, or with ``model.two_tower`` settings ``model`` (a variant)."""
    with tempfile.TemporaryDirectory() as out:
        config = Config.from_dict({
            "data": _data_config(dataset, side),
            "model": {"type": "two_tower", **({"two_tower": model} if model else {})},
            "train": {"out": out, "progress": False, "seed": seed, "num_threads": threads},
        })
        metrics = fit(config).metrics
        index = index_run(Path(out))
    keep = ("recall@10", "recall@50", "ndcg@10", "hit@10", "mrr", "examples", "num_items", "train_seconds", "steps")
    system = "two_tower+side" if side else "two_tower"
    if model:
        system += "[" + ",".join(f"{k}={v}" for k, v in model.items()) + "]"
    return {"dataset": dataset.name, "system": system, "seed": seed,
            **{k: metrics[k] for k in keep},
            "index": {k: index[k] for k in ("kind", "params", "recall@10", "recall@100", "queries_per_second")}}


def _index_cases(num_items: int, dim: int, seed: int, kinds: list[IndexKind]) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    # Clustered unit vectors: real item embeddings are far from uniform on the sphere.
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 256, num_items)] + 0.5 * rng.standard_normal((num_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = centres[rng.integers(0, 256, 1000)] + 0.5 * rng.standard_normal((1000, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cases = []
    for kind in kinds:
        started = time.perf_counter()
        index = ItemIndex.build(vectors, np.arange(num_items).astype(str), kind)
        build_seconds = time.perf_counter() - started
        cases.append({"kind": kind.value, "params": index.params, "num_items": num_items, "dim": dim,
                      "build_seconds": build_seconds, **measure_index(index, vectors, queries)})
    return cases


def _table(rows: list[dict[str, object]]) -> str:
    lines = [f"{'dataset':<12} {'system':<40} {'recall@10':>9} {'recall@50':>9} {'ndcg@10':>8} {'mrr':>7} {'train s':>8}"
             f"  {'index r@100':>11} {'index q/s':>9}"]
    for r in rows:
        index = r.get("index")
        tail = f"  {index['recall@100']:>11.4f} {index['queries_per_second']:>9,.0f}" if index else ""
        lines.append(f"{r['dataset']:<12} {r['system']:<40} {r['recall@10']:>9.4f} {r['recall@50']:>9.4f} "
                     f"{r['ndcg@10']:>8.4f} {r['mrr']:>7.4f} {r['train_seconds']:>8.1f}{tail}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, small baseline grids, a 100k-item index")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    parser.add_argument("--seeds", type=int, default=None, help="two-tower seeds (default 3, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--index-items", type=int, default=None, help="items of the synthetic index (default 1M, 100k with --quick)")
    parser.add_argument("--index-kinds", default="ivf,hnsw", help="synthetic index families to measure (ivf, hnsw, flat)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="also run the two-tower model with these model.two_tower settings, e.g. uniform_negatives=512 (repeatable)")
    parser.add_argument("--no-baselines", action="store_true", help="two-tower runs only")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    seeds = args.seeds or (1 if args.quick else 3)
    variants = [{k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in text.split(","))} for text in args.variant]
    torch.set_num_threads(args.threads)
    rows: list[dict[str, object]] = []
    for name in filter(None, args.datasets.split(",")):
        dataset = DATASETS[name]
        for seed in range(seeds):
            rows.append(_two_tower(dataset, False, args.threads, seed))
            if name == "ml-100k":
                rows.append(_two_tower(dataset, True, args.threads, seed))
            rows.extend(_two_tower(dataset, False, args.threads, seed, variant) for variant in variants)
        if not args.no_baselines:
            rows.extend(_baselines(dataset, args.threads, args.quick))
        print(_table([r for r in rows if r["dataset"] == name]), flush=True)
    index_items = args.index_items or (100_000 if args.quick else 1_000_000)
    torch.set_num_threads(1)
    indexes = _index_cases(index_items, 64, 0, [IndexKind(kind) for kind in filter(None, args.index_kinds.split(","))])
    print(f"\n{'index':<6} {'items':>10} {'build s':>8} {'recall@10':>9} {'recall@100':>10} {'q/s':>7} {'exact q/s':>9}  params")
    for case in indexes:
        print(f"{case['kind']:<6} {case['num_items']:>10,} {case['build_seconds']:>8.1f} {case['recall@10']:>9.4f} "
              f"{case['recall@100']:>10.4f} {case['queries_per_second']:>7,.0f} {case['exact_queries_per_second']:>9,.0f}  {case['params']}")
    write_json(args.json, {"machine": machine_info(), "quick": args.quick, "threads": args.threads, "rows": rows, "indexes": indexes})


if __name__ == "__main__":
    main()
