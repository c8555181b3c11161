"""End-to-end DLRM training on synthetic Criteo-shaped data: terarec vs plain PyTorch vs the
dense network alone.

- ``terarec``: :func:`terarec.train.fit` itself (loader, pipelined ID preparation, fused sparse
  Adagrad, DLRM), its own examples/s over the whole run; ``terarec+bf16`` with
  ``train.dense_precision=bf16``;
- ``pytorch``: the same DLRM dense network with ``nn.EmbeddingBag(sparse=True)`` tables and
  ``torch.optim.Adagrad``, fed by the same loader;
- ``dense_only``: the same dense network fed with fixed random embeddings (embedding cost
  zero), the bound an embedding engine can approach; plus variants that raise that bound
  (``dense_only+bf16``: bf16 autocast; ``dense_only+compile``: ``torch.compile``).

One-hot, 26 tables x ``--rows`` rows x ``--dim``, MLPerf DLRM MLPs (bottom 512-256-D, top
1024-1024-512-256-1) scaled by ``--mlp-scale``; every system uses the same batch size,
thread count and data. Each runs in its own process.

    python bench/dlrm.py --quick --json bench/results/dlrm_quick.json
    python bench/dlrm.py --json bench/results/dlrm.json
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _machine import machine_info, peak_rss_bytes, print_table, run_in_child, set_threads, write_json

SYSTEMS = ("terarec", "terarec+bf16", "pytorch", "dense_only", "dense_only+bf16", "dense_only+compile")
LEARNING_RATE = 0.01


def _mlp(widths: tuple[int, ...], scale: float) -> tuple[int, ...]:
    return tuple(max(8, int(width * scale)) for width in widths)


def _overrides(spec: dict[str, object], out: str) -> list[tuple[str, object]]:
    rows = spec["rows"]
    return [
        ("data.synthetic.num_examples", spec["batch_size"] * spec["steps"]),
        ("data.synthetic.num_eval_examples", 1024),
        ("data.synthetic.max_cardinality", rows),
        ("embedding.embedding_dim", spec["dim"]),
        ("embedding.min_rows", rows),
        ("embedding.max_rows", rows),
        ("embedding.optimizer.type", "adagrad"),
        ("embedding.optimizer.learning_rate", LEARNING_RATE),
        ("model.type", "dlrm"),
        ("model.dlrm.bottom_mlp", ",".join(map(str, _mlp((512, 256), spec["mlp_scale"])))),
        ("model.dlrm.top_mlp", ",".join(map(str, _mlp((1024, 1024, 512, 256), spec["mlp_scale"])))),
        ("data.val_fraction", 0),
        ("train.epochs", 1),
        ("train.dense_optimizer", "adagrad"),
        ("train.dense_learning_rate", LEARNING_RATE),
        ("train.batch_size", spec["batch_size"]),
        ("train.num_threads", spec["threads"]),
        ("train.progress", False),
        ("train.out", out),
    ]


def _terarec(spec: dict[str, object]) -> dict[str, object]:
    from terarec.train import fit, load_config

    precision = [("train.dense_precision", "bf16")] if spec["system"].endswith("+bf16") else []
    with tempfile.TemporaryDirectory() as out:
        metrics = fit(load_config(overrides=_overrides(spec, out) + precision)).metrics
    return {"examples_per_second": metrics["examples_per_second"], "auc": metrics["auc"]}


def _loop(spec: dict[str, object], step, batches) -> float:
    """Examples/s over every batch of one epoch, like ``fit`` measures itself."""
    started = time.perf_counter()
    examples = 0
    for batch in batches:
        step(batch)
        examples += batch.batch_size
    return examples / (time.perf_counter() - started)


def _baseline(spec: dict[str, object], system: str) -> dict[str, object]:
    from terarec.data import BatchLoader, DataConfig, SyntheticConfig, load_splits
    from terarec.models import InputSpec, ModelInput, build_model
    from terarec.train import load_config

    config = load_config(overrides=_overrides(spec, "unused"))
    data = load_splits(DataConfig(synthetic=SyntheticConfig(**{
        "num_examples": spec["batch_size"] * spec["steps"], "num_eval_examples": 1024, "max_cardinality": spec["rows"]}))).train
    torch.manual_seed(0)
    features = data.schema.sparse_features
    dim, rows = spec["dim"], spec["rows"]
    model = build_model(config.model, InputSpec(data.schema.num_dense, tuple(features), (dim,) * len(features)))
    loss_fn = nn.BCEWithLogitsLoss()
    params = list(model.parameters())
    if system == "pytorch":
        bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum", sparse=True, include_last_offset=True) for _ in features)
        params += list(bags.parameters())
    optimizer = torch.optim.Adagrad(params, lr=LEARNING_RATE)
    forward = torch.compile(model) if system.endswith("+compile") else model
    autocast = system.endswith("+bf16")
    random_embeddings = torch.randn(spec["batch_size"], len(features) * dim) * 0.01

    def step(batch) -> None:
        if system == "pytorch":
            pooled = torch.cat(
                [bag(torch.remainder(batch.sparse[f].values, rows), batch.sparse[f].offsets) for bag, f in zip(bags, features)],
                dim=1,
            )
        else:
            pooled = random_embeddings[: batch.batch_size]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = forward(ModelInput(batch.dense, pooled, model.spec, model.layout))
        loss = loss_fn(logits.float(), batch.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    loader = BatchLoader(data, spec["batch_size"], shuffle=True, seed=0)
    with contextlib.closing(loader.iterate(0)) as warmup:
        for batch in warmup:  # compile / allocate once, outside the timing
            step(batch)
            break
    with contextlib.closing(loader.iterate(0)) as batches:
        return {"examples_per_second": _loop(spec, step, batches)}


def run_child(spec: dict[str, object]) -> dict[str, object]:
    spec["threads"] = set_threads(spec["threads"])
    result = _terarec(spec) if spec["system"].startswith("terarec") else _baseline(spec, spec["system"])
    return {**result, "peak_rss_bytes": peak_rss_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run (a few minutes)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rows", type=int, help="rows per table (default 200k; 20k with --quick)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, help="steps per system (default 60; 15 with --quick)")
    parser.add_argument("--mlp-scale", type=float, help="MLP width factor (default 1; 0.25 with --quick)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import json

        print(json.dumps(run_child(json.loads(args.child))))
        return
    threads = set_threads(args.threads)
    spec = {
        "rows": args.rows or (20_000 if args.quick else 200_000),
        "dim": args.dim,
        "batch_size": args.batch_size,
        "steps": args.steps or (15 if args.quick else 60),
        "mlp_scale": args.mlp_scale or (0.25 if args.quick else 1.0),
        "threads": threads,
    }
    results = []
    for system in args.systems.split(","):
        measured = run_in_child(__file__, {**spec, "system": system})
        results.append({"system": system, **measured})
        print(f"{system:>20}: {measured.get('examples_per_second', 0):>10,.0f} ex/s {measured.get('error', '')}", flush=True)
    bound = next((r["examples_per_second"] for r in results if r["system"] == "dense_only" and "error" not in r), None)
    for row in results:
        eps = row.get("examples_per_second")
        row["fraction_of_dense_only"] = eps / bound if eps and bound else None
    print()
    print_table(results, [("system", "system", ">20"), ("examples_per_second", "ex/s", ",.0f"),
                          ("fraction_of_dense_only", "of dense-only", ".2f"), ("peak_rss_bytes", "peak RSS", ",.0f")])
    write_json(args.json, {"machine": machine_info(), "settings": spec, "results": results})


if __name__ == "__main__":
    main()
