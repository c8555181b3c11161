"""TorchRec baseline for the embedding-layer benchmark (CPU, one process).

Builds TorchRec's ``EmbeddingBagCollection`` (one table per feature, SUM pooling), shards it
with ``DistributedModelParallel`` over a one-process gloo group, table-wise, with the FUSED
compute kernel: every table lives in one FBGEMM ``SplitTableBatchedEmbeddingBagsCodegen``
(TBE) on CPU, and the optimizer update runs inside the TBE backward.

Optimizer path (checked on torchrec 1.9.2 / fbgemm-gpu-cpu 1.8.0 / torch 2.13.0): the optimizer
is attached with ``apply_optimizer_in_backward``; the sharder maps the class to an FBGEMM
``EmbOptimType`` (``torchrec.distributed.utils._OPTIMIZER_CLASS_TO_EMB_OPT_TYPE``) and renames
``lr`` to ``learning_rate`` (``merge_fused_params``). The resulting TBE modules report
``optimizer`` as

    torch.optim.Adagrad          -> EmbOptimType.EXACT_ADAGRAD
    torchrec.optim.RowWiseAdagrad -> EmbOptimType.EXACT_ROWWISE_ADAGRAD
    torch.optim.SGD              -> EmbOptimType.EXACT_SGD

All tables land in one TBE module (one grouped lookup, one forward and one backward kernel
call per step). ``make_torchrec_step`` checks the optimizer type of every TBE module it builds,
so a silent fallback to another optimizer (or to a non-fused kernel) fails loudly. ``eps`` is
passed explicitly (FBGEMM's default is 1e-8, ``torch.optim.Adagrad``'s 1e-10; terarec's 1e-8).

Timing caveat: FBGEMM's CPU kernels use OpenMP/at::parallel_for with ``torch.get_num_threads()``
threads; on a 2-core machine shared with another busy process, 2 threads gave per-step times
from 25 ms to 1.3 s (barrier stalls), while ``OMP_NUM_THREADS=1`` was stable. Time on an idle
machine, or pin both systems to the same thread count.

Install with ``bench/install_torchrec.sh``. Run this file to self-check against plain PyTorch:

    python bench/_torchrec.py
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Callable

import numpy as np
import torch

from _workloads import BenchBatch, Workload

try:
    import fbgemm_gpu  # noqa: F401  (registers the TBE CPU ops)
    import torchrec  # noqa: F401
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.sharding_plan import construct_module_sharding_plan, table_wise
    from torchrec.distributed.types import ShardingEnv, ShardingPlan
    from torchrec.optim import RowWiseAdagrad
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    TORCHREC_AVAILABLE = True
    TORCHREC_UNAVAILABLE_REASON = ""
except Exception as exc:  # ImportError, or an OSError/undefined symbol from a mismatched fbgemm build
    TORCHREC_AVAILABLE = False
    TORCHREC_UNAVAILABLE_REASON = f"{type(exc).__name__}: {exc}"

OPTIMIZERS = ("adagrad", "rowwise_adagrad", "sgd")


def _init_process_group() -> None:
    """A one-process gloo group (world size 1), created once per process."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    store_dir = tempfile.mkdtemp(prefix="terarec-torchrec-pg-")
    atexit.register(shutil.rmtree, store_dir, ignore_errors=True)
    store = os.path.join(store_dir, "store")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)


class _Model(torch.nn.Module):
    def __init__(self, ebc: torch.nn.Module) -> None:
        super().__init__()
        self.ebc = ebc

    def forward(self, kjt):
        return self.ebc(kjt)


def _optimizer_spec(optimizer: str, learning_rate: float, eps: float):
    if optimizer == "adagrad":
        return torch.optim.Adagrad, {"lr": learning_rate, "eps": eps}, EmbOptimType.EXACT_ADAGRAD
    if optimizer == "rowwise_adagrad":
        return RowWiseAdagrad, {"lr": learning_rate, "eps": eps}, EmbOptimType.EXACT_ROWWISE_ADAGRAD
    if optimizer == "sgd":
        return torch.optim.SGD, {"lr": learning_rate}, EmbOptimType.EXACT_SGD
    raise ValueError(f"unknown optimizer {optimizer!r}: expected one of {OPTIMIZERS}")


def _tbe_modules(model: torch.nn.Module) -> list:
    """The FBGEMM TBE modules under ``model``. ShardedEmbeddingBagCollection keeps its lookups in
    a plain list (``_lookups``), so they are not submodules and ``model.modules()`` misses them."""
    found = []
    for module in model.modules():
        for lookup in getattr(module, "_lookups", ()):
            found += [m for m in lookup.modules() if isinstance(m, SplitTableBatchedEmbeddingBagsCodegen)]
    return found


def make_torchrec_step(
    workload: Workload, optimizer: str, learning_rate: float, batch_size: int, eps: float = 1e-8, fp16_weights: bool = False
) -> Callable[[BenchBatch], None]:
    """One training step of the embedding layer alone: KJT build + lookup + backward (+ fused update).

    ``batch_size`` only documents the expected batch; TBE handles any size. ``fp16_weights``
    stores the weights in fp16 (TorchRec's ``DataType.FP16``; the optimizer state stays fp32).
    The returned callable carries ``.model`` (the ``DistributedModelParallel``) and ``.workload``.
    """
    if not TORCHREC_AVAILABLE:
        raise RuntimeError(f"TorchRec is not available: {TORCHREC_UNAVAILABLE_REASON}")
    from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig, PoolingType
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    optimizer_class, optimizer_kwargs, expected_type = _optimizer_spec(optimizer, learning_rate, eps)
    _init_process_group()
    names = workload.feature_names
    tables = [
        EmbeddingBagConfig(
            name=name, feature_names=[name], num_embeddings=rows,
            embedding_dim=workload.embedding_dim, pooling=PoolingType.SUM,
            data_type=DataType.FP16 if fp16_weights else DataType.FP32,
        )
        for name, rows in zip(names, workload.num_embeddings)
    ]
    # Built on meta: DMP materialises the weights once, inside the TBE.
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    apply_optimizer_in_backward(optimizer_class, ebc.parameters(), optimizer_kwargs)
    sharder = EmbeddingBagCollectionSharder()
    module_plan = construct_module_sharding_plan(
        ebc,
        {name: table_wise(rank=0, compute_kernel="fused") for name in names},
        sharder=sharder, local_size=1, world_size=1, device_type="cpu",
    )
    device = torch.device("cpu")
    model = DistributedModelParallel(
        _Model(ebc),
        env=ShardingEnv.from_process_group(torch.distributed.GroupMember.WORLD),
        device=device,
        plan=ShardingPlan({"ebc": module_plan}),
        sharders=[sharder],
    )
    tbes = _tbe_modules(model)
    if not tbes:
        raise RuntimeError("sharded model has no FBGEMM TBE module: the FUSED kernel was not used")
    for tbe in tbes:
        if tbe.optimizer != expected_type:
            raise RuntimeError(f"TBE runs {tbe.optimizer}, expected {expected_type}")
        if tbe.use_cpu is not True:
            raise RuntimeError("TBE is not on CPU")
        if (tbe.weights_precision.name == "FP16") != fp16_weights:
            expected = "FP16" if fp16_weights else "FP32"
            raise RuntimeError(f"TBE stores {tbe.weights_precision.name} weights, expected {expected}")

    def step(batch: BenchBatch) -> None:
        values = torch.cat([batch.features[name][0] for name in names])
        lengths = torch.cat([torch.diff(batch.features[name][1]) for name in names])
        kjt = KeyedJaggedTensor(keys=list(names), values=values, lengths=lengths)
        pooled = model(kjt)
        pooled = pooled.wait() if hasattr(pooled, "wait") else pooled
        pooled.values().backward(batch.grad)

    # Output column order must equal the feature order the benchmark's ``grad`` assumes.
    probe = torch.zeros(len(names), dtype=torch.int64)
    with torch.no_grad():
        keys = model(KeyedJaggedTensor(keys=list(names), values=probe, lengths=torch.ones(len(names), dtype=torch.int64)))
        keys = keys.wait() if hasattr(keys, "wait") else keys
    if list(keys.keys()) != list(names) or keys.length_per_key() != [workload.embedding_dim] * len(names):
        raise RuntimeError(f"pooled output order {keys.keys()} != feature order {names}")
    del keys  # no_grad, no backward: the probe updates nothing

    step.model = model
    step.workload = workload
    return step


def torchrec_weights(step) -> dict[str, np.ndarray]:
    """Current table weights (copies), by table name, read from the sharded state dict."""
    weights = {}
    for key, value in step.model.state_dict().items():
        if not key.endswith(".weight"):
            continue
        name = key.split(".")[-2]
        shards = value.local_shards() if hasattr(value, "local_shards") else None
        tensor = shards[0].tensor if shards else value  # world size 1, table-wise: one full shard
        weights[name] = tensor.detach().clone().numpy()
    return weights


class _RowWiseAdagradReference(torch.optim.Optimizer):
    """Dense reference for FBGEMM's EXACT_ROWWISE_ADAGRAD: ``s += mean(g^2)`` per row,
    ``w -= lr * g / (sqrt(s) + eps)``. Untouched rows have ``g == 0`` and do not move."""

    def __init__(self, params, lr: float, eps: float) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype)
                state["sum"] += (p.grad * p.grad).mean(dim=1)
                p -= group["lr"] * p.grad / (state["sum"].sqrt() + group["eps"]).unsqueeze(1)


def check_against_reference(optimizer: str = "sgd", steps: int = 2, atol: float = 1e-6) -> None:
    """Tiny tables (3 features, 50 rows, dim 8, batch 4): TorchRec's fused step vs
    ``nn.EmbeddingBag`` + an unfused optimizer (``torch.optim.SGD`` / ``torch.optim.Adagrad`` /
    a dense row-wise Adagrad) from identical initial weights, copied out of TorchRec.
    Raises ``AssertionError`` on mismatch."""
    from _workloads import make_batches

    workload = Workload("tiny", 8, (3, 1, 5), (50, 50, 50))
    lr, eps = 0.1, 1e-8
    step = make_torchrec_step(workload, optimizer, lr, batch_size=4, eps=eps)
    initial = torchrec_weights(step)
    bags = [
        torch.nn.EmbeddingBag(rows, workload.embedding_dim, mode="sum", include_last_offset=True)
        for rows in workload.num_embeddings
    ]
    with torch.no_grad():
        for bag, name in zip(bags, workload.feature_names):
            bag.weight.copy_(torch.from_numpy(initial[name]))
    params = [bag.weight for bag in bags]
    if optimizer == "sgd":
        reference_opt = torch.optim.SGD(params, lr=lr)
    elif optimizer == "adagrad":
        reference_opt = torch.optim.Adagrad(params, lr=lr, eps=eps)
    else:
        reference_opt = _RowWiseAdagradReference(params, lr=lr, eps=eps)
    batches = make_batches(workload, "uniform", batch_size=4, count=steps, seed=1)
    for batch in batches:
        # Gradient scaled up (x1000) so the updates are far above float noise.
        batch = BenchBatch(batch.features, batch.grad * 1000.0)
        step(batch)
        reference_opt.zero_grad()
        pooled = torch.cat(
            [bag(*batch.features[name]) for bag, name in zip(bags, workload.feature_names)], dim=1
        )
        pooled.backward(batch.grad)
        reference_opt.step()
    got = torchrec_weights(step)
    moved = 0.0
    for bag, name in zip(bags, workload.feature_names):
        expected = bag.weight.detach().numpy()
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=atol, err_msg=f"{optimizer}: table {name}")
        moved = max(moved, float(np.abs(expected - initial[name]).max()))
    assert moved > 100 * atol, f"weights barely moved ({moved}); the check is vacuous"


if __name__ == "__main__":
    if not TORCHREC_AVAILABLE:
        raise SystemExit(f"TorchRec unavailable: {TORCHREC_UNAVAILABLE_REASON}")
    for name in OPTIMIZERS:
        check_against_reference(name)
    print("PASS")
