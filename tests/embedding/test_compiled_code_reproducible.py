"""Freshly compiled kernels and the ones numba loads from its cache give the same bits.

Regression: with LLVM's ``reassoc`` fast-math flag, a fresh compile and the cached code summed
in different orders, so a run resumed in a new process (cache warm) differed in the last bit
from the run that compiled the kernels (cache cold), and kill -9 + resume was not exact.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = """
import sys, numpy as np, torch
from terarec import JaggedTensor
from terarec.embedding import EmbeddingCollection, EmbeddingTableConfig, OptimizerConfig, OptimizerType, PoolingType
tables = []
for kind in OptimizerType:
    optimizer = OptimizerConfig(kind, learning_rate=0.1)
    tables += [EmbeddingTableConfig(f"{kind.value}_{i}", 300, 24, (f"{kind.value}_{i}",), optimizer=optimizer) for i in range(2)]
    tables.append(EmbeddingTableConfig(f"{kind.value}_shared", 300, 24, (f"{kind.value}_a", f"{kind.value}_b"),
                                       pooling=PoolingType.MEAN, optimizer=optimizer))
collection = EmbeddingCollection(tables, seed=0)
rng = np.random.default_rng(0)
for step in range(3):
    sparse = {f: JaggedTensor(torch.from_numpy(rng.integers(0, 50, 96)), torch.arange(0, 97, 3, dtype=torch.int64))
              for f in collection.feature_names}
    prepared = collection.prepare(sparse)
    pooled = collection.lookup(prepared)
    grad = torch.from_numpy(rng.standard_normal(tuple(pooled.values.shape)).astype(np.float32))
    collection.apply_gradients(prepared, grad)
np.save(sys.argv[1], np.concatenate([np.asarray(t.weights).ravel() for t in collection.tables.values()]
                                    + [np.asarray(t.state).ravel() for t in collection.tables.values()]
                                    + [pooled.values.detach().numpy().ravel()]))
"""


@pytest.mark.slow
def test_cold_compile_and_cached_code_give_identical_bits(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    outputs = []
    for run in ("cold", "warm"):
        out = tmp_path / f"{run}.npy"
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(np.load(out))
    assert any((tmp_path / "numba-cache").rglob("*.nbc")), "the first run must have written numba's cache"
    assert np.array_equal(outputs[0].view(np.uint32), outputs[1].view(np.uint32))
