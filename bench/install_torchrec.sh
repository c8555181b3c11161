#!/usr/bin/env bash
# Install TorchRec (CPU) into the *current* Python environment, for bench/_torchrec.py.
# Use a separate venv: it pins torch exactly like terarec does.
#
#   python -m venv /work/venv-torchrec && . /work/venv-torchrec/bin/activate
#   bash bench/install_torchrec.sh
#   python bench/_torchrec.py        # self-check against plain PyTorch, prints PASS
#
# Why --no-deps: torchrec's metadata requires `fbgemm-gpu` (the CUDA build, several GB, and it
# would drag in a CUDA torch). On CPU the same Python package comes from `fbgemm-gpu-cpu`, so
# torchrec and fbgemm-gpu-cpu are installed without their dependencies and the real runtime
# dependencies are listed by hand below. pip then warns "torchrec 1.9.2 requires fbgemm-gpu,
# which is not installed"; that warning is expected and harmless.
#
# Known-good: torch 2.13.0 (CPU) + torchrec 1.9.2 + fbgemm-gpu-cpu 1.8.0.
# Known to fail: fbgemm-gpu-cpu 1.9.0 with torch 2.13.0 (import fails with an undefined symbol
# in the fbgemm_gpu shared library: fbgemm builds are tied to one torch ABI).
set -euo pipefail

pip install torch==2.13.0
pip install --no-deps torchrec==1.9.2 fbgemm-gpu-cpu==1.8.0
# torch is repeated so the resolver cannot swap it for another version.
pip install torch==2.13.0 tensordict torchmetrics==1.0.3 pyre-extensions iopath tqdm numpy numba psutil pyarrow pyyaml
# terarec itself (pure Python + numba), so the benchmark can import both in this venv.
pip install -e "$(cd "$(dirname "$0")/.." && pwd)" --no-deps

python -c "import torch, fbgemm_gpu, torchrec; print('torch', torch.__version__, 'torchrec', torchrec.__version__)"
