"""Distinct rows among draws of a bounded Zipf law: how many rows of a table a step touches.

IDs follow a Zipf law of exponent ``s`` over a table's ``R`` rows (row ``k`` drawn with
probability ``k^-s / H``); :func:`expected_unique` gives the expected number of distinct rows
among ``N`` draws, optionally without the ``skip_rows`` hottest (those a cache holds). Exact
below 65,536 rows, otherwise exact over the 1,024 hottest rows and summed over 4,096
log-spaced buckets of the tail.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["expected_unique"]

_EXACT_RANKS = 1 << 16  # below this many rows, sum over every row
_HEAD_RANKS = 1024  # beyond it, the hottest rows stay exact and the tail is bucketed
_TAIL_BUCKETS = 4096  # log-spaced: adjacent buckets differ by < 1% for 10^12 rows


@functools.lru_cache(maxsize=512)
def _zipf(num_rows: int, exponent: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Popularity-rank buckets of ranks ``1..num_rows``: first rank, size, and the probability
    of each row in the bucket (the bucket's mean of ``i ** -exponent``, normalised)."""
    if num_rows <= _EXACT_RANKS:
        lo = np.arange(1, num_rows + 1, dtype=np.float64)
        size = np.ones_like(lo)
    else:
        edges = np.unique(
            np.concatenate(
                [
                    np.arange(1, _HEAD_RANKS + 1, dtype=np.float64),
                    np.round(np.geomspace(_HEAD_RANKS + 1, num_rows + 1, _TAIL_BUCKETS)),
                ]
            )
        )
        lo, size = edges[:-1], np.diff(edges)
    a, b = lo - 0.5, lo + size - 0.5  # midpoint-corrected integral over each bucket
    if exponent == 1.0:
        integral = np.log(b / a)
    else:
        integral = (b ** (1.0 - exponent) - a ** (1.0 - exponent)) / (1.0 - exponent)
    mean = np.where(size == 1.0, lo**-exponent, integral / size)
    return lo, size, mean / float(np.sum(mean * size))


def expected_unique(num_ids: float, num_rows: int, zipf_exponent: float, skip_rows: int = 0) -> float:
    """Expected distinct rows among ``num_ids`` IDs drawn from a bounded Zipf law over ``num_rows``
    rows, counting only rows less popular than the ``skip_rows`` hottest.

    Row ``i`` (by popularity, ``1..R``) is drawn with probability
    :math:`p_i = i^{-s} / \\sum_j j^{-s}` and appears at least once with probability
    :math:`1 - (1 - p_i)^N`; the sum over rows is exact up to ``2**16`` rows and over
    log-spaced buckets above (``s = 0`` is uniform). With ``skip_rows`` set to a cache's rows,
    it is the expected distinct cache misses of a step. Vectorised: no loop over rows.

    Args:
        num_ids (float): IDs drawn ``N``.
        num_rows (int): rows ``R``.
        zipf_exponent (float): skew ``s``; ``0`` is uniform.
        skip_rows (int, optional): hottest rows not counted. Default: ``0``

    Example::

        >>> round(expected_unique(100, 100, 0.0), 2)  # 100 * (1 - 0.99 ** 100)
        63.4
        >>> expected_unique(100, 100, 0.0, skip_rows=100)
        0.0
        >>> expected_unique(10**6, 10**12, 1.05) < expected_unique(10**6, 10**12, 0.5) < 10**6
        True
    """
    if num_rows < 1:
        raise ValueError(f"num_rows must be >= 1, got {num_rows}")
    if num_ids <= 0 or skip_rows >= num_rows:
        return 0.0
    return _expected_unique(float(num_ids), int(num_rows), float(zipf_exponent), max(int(skip_rows), 0))


@functools.lru_cache(maxsize=1 << 14)
def _expected_unique(num_ids: float, num_rows: int, zipf_exponent: float, skip_rows: int) -> float:
    lo, size, p = _zipf(num_rows, zipf_exponent)
    with np.errstate(divide="ignore"):  # a row of probability 1 is always hit
        hit = -np.expm1(float(num_ids) * np.log1p(-np.minimum(p, 1.0)))
    counted = np.clip(lo + size - 1.0 - skip_rows, 0.0, size)  # rows of each bucket ranked below skip_rows
    return float(np.sum(counted * hit))
