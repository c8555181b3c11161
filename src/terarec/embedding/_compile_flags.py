"""The compile flags every floating-point kernel of the embedding layer shares.

Only fast-math flags that leave every finite result's bits alone (no NaN/inf/signed-zero
care). Not ``contract`` or ``arcp``: fused multiply-adds and reciprocals round differently in
a loop's vector body than in its scalar remainder, so results would depend on the vector width
(AVX2 or AVX-512) and a column block of a row (a column-wise shard) would not train
bit-identically to the whole row. Not ``reassoc``: LLVM may reorder sums differently in a fresh
compile than in the code numba loads from its cache, and a resumed run would differ in the
last bit. Sums that need several accumulators to vectorise spell them out in the source.
"""

from __future__ import annotations

__all__ = ["FASTMATH"]

FASTMATH = {"nsz", "nnan", "ninf"}
