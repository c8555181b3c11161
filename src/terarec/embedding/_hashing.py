"""Hashing in the embedding layer's kernels: IDs to rows, table seeds, and the per-step keys of
stochastic rounding. Integer arithmetic only, so the same on every CPU."""

from __future__ import annotations

import hashlib

import numba
import numpy as np

__all__ = ["derive_table_seed", "hash_to_rows", "mix_seed", "rounding_key", "splitmix64", "step_rounding_seed"]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, nogil=True)
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64's finaliser of ``x + golden``: a bijective, well-mixed 64-bit hash."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def mix_seed(seed, stream):
    """``splitmix64(seed ^ splitmix64(stream))``: an independent 64-bit seed per ``stream``."""
    return splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(stream)))


def derive_table_seed(seed: int, name: str) -> np.uint64:
    """Stable 64-bit seed of table ``name`` under global ``seed`` (BLAKE2b, not Python's ``hash``)."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{name}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


@numba.njit(cache=True, nogil=True, inline="always")
def rounding_key(seed, row):
    """Stochastic-rounding key of ``row`` in a step whose seed is ``seed``
    (:func:`step_rounding_seed`); :mod:`~terarec.embedding._bf16` salts it with the column."""
    return splitmix64(seed + np.uint64(row))


def step_rounding_seed(table_seed: np.uint64, step: int, first_row: int = 0) -> np.uint64:
    """Seed of a table's stochastic rounding at ``step``: a hash of both, plus ``first_row``,
    so a shard holding rows from ``first_row`` on rounds each row as the whole table would."""
    mixed = int(splitmix64(np.uint64(table_seed) ^ splitmix64(np.uint64(step))))
    return np.uint64((mixed + int(first_row)) & 0xFFFF_FFFF_FFFF_FFFF)


# The kernels of ``prepare`` (hash, group) are serial on purpose: ``prepare`` runs on a
# background thread beside the parallel lookup/update kernels, and numba's fallback
# ``workqueue`` threading layer aborts when two threads launch parallel kernels at once.
# ``nogil`` still lets them overlap with the training thread.


@numba.njit(cache=True, nogil=True)
def hash_to_rows(ids, num_embeddings, out):
    """``out[i] = splitmix64(uint64(ids[i])) % num_embeddings``: a stable, seedless row per ID."""
    n = np.uint64(num_embeddings)
    for i in range(ids.shape[0]):
        out[i] = np.int64(splitmix64(np.uint64(ids[i])) % n)
