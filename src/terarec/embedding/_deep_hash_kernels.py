"""Numba kernel of Deep Hash Embeddings: the dense hash encoding of raw IDs.

Each of ``K`` hash functions is SplitMix64 of the ID XOR that function's seed, reduced modulo
``M`` buckets. Integer arithmetic and one division per value (plus ``log``, ``sqrt``, ``cos``
and ``sin`` for the Gaussian transform, without fast-math flags), so an ID encodes to the
same bits on every CPU target and at any thread count (each ID owns its output row).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from terarec.embedding import _hashing
from terarec.embedding._kernel_cache import stamp_with_sources
from terarec.embedding._hashing import splitmix64


__all__ = ["encode_ids"]


@numba.njit(cache=True, nogil=True, parallel=True)
def encode_ids(ids, seeds, buckets, gaussian, out):
    """``out[i, j]``, for ID ``ids[i]`` and hash ``j``: with ``h = splitmix64(id ^ seeds[j]) % M``,
    ``2 h / (M - 1) - 1`` (uniform on [-1, 1]); or, ``gaussian``, Box-Muller over the pair of
    hashes ``(2t, 2t + 1)`` made uniform on (0, 1) as ``(h + 1) / (M + 1)``: a standard normal
    pair. ``out`` is :math:`(N, K)` ``float32``; ``K`` even when ``gaussian``."""
    m = np.uint64(buckets)
    scale = 2.0 / (buckets - 1)
    k = seeds.shape[0]
    for i in numba.prange(ids.shape[0]):
        x = np.uint64(ids[i])
        if gaussian:
            for t in range(k // 2):
                u1 = (float(splitmix64(x ^ seeds[2 * t]) % m) + 1.0) / (buckets + 1.0)
                u2 = (float(splitmix64(x ^ seeds[2 * t + 1]) % m) + 1.0) / (buckets + 1.0)
                radius = math.sqrt(-2.0 * math.log(u1))
                out[i, 2 * t] = radius * math.cos(2.0 * math.pi * u2)
                out[i, 2 * t + 1] = radius * math.sin(2.0 * math.pi * u2)
        else:
            for j in range(k):
                out[i, j] = float(splitmix64(x ^ seeds[j]) % m) * scale - 1.0


stamp_with_sources(globals(), _hashing)
