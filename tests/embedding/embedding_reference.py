"""Slow NumPy references of the embedding kernels, and random jagged test input."""

from __future__ import annotations

import numpy as np

U64 = np.uint64


def splitmix64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.uint64) + U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def hash_to_rows(ids: np.ndarray, num_embeddings: int) -> np.ndarray:
    return (splitmix64(ids.view(np.uint64)) % U64(num_embeddings)).astype(np.int64)


def _uniforms(rows: np.ndarray, dim: int, seed: int, parity: int) -> np.ndarray:
    key = splitmix64(U64(seed) ^ splitmix64(rows.view(np.uint64)))
    counters = (2 * np.arange(dim, dtype=np.uint64) + U64(parity)).astype(np.uint64)
    bits = splitmix64(key[:, None] + counters[None, :])
    return (bits >> U64(11)).astype(np.float64) * 2.0**-53


def init_uniform(rows: np.ndarray, dim: int, seed: int, scale: float) -> np.ndarray:
    return (scale * (2.0 * _uniforms(rows, dim, seed, 0) - 1.0)).astype(np.float32)


def init_normal(rows: np.ndarray, dim: int, seed: int, scale: float) -> np.ndarray:
    u1 = 1.0 - _uniforms(rows, dim, seed, 0)
    u2 = _uniforms(rows, dim, seed, 1)
    return (scale * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def dedupe(rows: np.ndarray, offsets: np.ndarray):
    unique_rows, counts = np.unique(rows, return_counts=True)
    occurrence_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    occurrences = np.array(sorted(range(len(rows)), key=lambda i: (rows[i], i)), dtype=np.int64)
    bag_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets)).astype(np.int64)
    return unique_rows, occurrence_offsets, occurrences, bag_of


def pool(weights: np.ndarray, slots: np.ndarray, offsets: np.ndarray, mean: bool) -> np.ndarray:
    batch = len(offsets) - 1
    lengths = np.diff(offsets)
    out = np.zeros((batch, weights.shape[1]), dtype=np.float64)
    np.add.at(out, np.repeat(np.arange(batch), lengths), weights[slots].astype(np.float64))
    if mean:
        out /= np.maximum(lengths, 1)[:, None]
    return out


def row_gradients(rows, offsets, grad_pooled, mean: bool):
    """``(unique_rows, g)``: each distinct row's gradient summed over its occurrences, float64."""
    lengths = np.diff(offsets)
    bag_of = np.repeat(np.arange(len(lengths)), lengths)
    per_id = grad_pooled[bag_of].astype(np.float64)
    if mean:
        per_id /= lengths[bag_of][:, None]
    unique_rows, inverse = np.unique(rows, return_inverse=True)
    g = np.zeros((len(unique_rows), grad_pooled.shape[1]))
    np.add.at(g, inverse, per_id)
    return unique_rows, g


def update(kind: str, weights, state, unique_rows, g, lr, eps=1e-8, beta1=0.9, beta2=0.999, step=1):
    """Applies one optimizer step in float64 to copies; returns ``(weights, state)``."""
    w, s = weights.astype(np.float64), state.astype(np.float64)
    r, dim = unique_rows, weights.shape[1]
    if kind == "sgd":
        w[r] -= lr * g
    elif kind == "adagrad":
        s[r] += g * g
        w[r] -= lr * g / (np.sqrt(s[r]) + eps)
    elif kind == "rowwise_adagrad":
        s[r, 0] += (g * g).mean(axis=1)
        w[r] -= lr * g / (np.sqrt(s[r, :1]) + eps)
    else:
        s[r, :dim] += (g - s[r, :dim]) * (1 - beta1)
        s[r, dim:] += (g * g - s[r, dim:]) * (1 - beta2)
        step_size = lr * np.sqrt(1 - beta2**step) / (1 - beta1**step)
        w[r] -= step_size * s[r, :dim] / (np.sqrt(s[r, dim:]) + eps)
    return w, s


def random_jagged(rng: np.random.Generator, batch: int, id_kind: str, num_distinct: int = 40):
    """``(ids, offsets)`` of ``batch`` bags: some empty, one huge, IDs repeated.

    ``id_kind`` is ``"int32"`` (IDs in the int32 range) or ``"int64"`` (the full 64-bit range,
    negative IDs and both extremes included).
    """
    lengths = rng.integers(0, 5, size=batch)
    lengths[rng.integers(0, batch)] = 0
    lengths[rng.integers(0, batch)] = 300  # one huge bag
    if id_kind == "int32":
        pool_ids = rng.integers(-(2**31), 2**31, size=num_distinct, dtype=np.int64)
    else:
        pool_ids = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=num_distinct, dtype=np.int64)
        pool_ids[:2] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    ids = rng.choice(pool_ids, size=int(lengths.sum()))  # few distinct IDs: many repeats
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return ids.astype(np.int64), offsets
