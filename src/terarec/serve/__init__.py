"""Serving what was trained: the approximate nearest-neighbour index over a retrieval model's items.

Typical use::

    report = index_run(Path("runs/ml100k"))              # RUN/index: faiss IVF index, item IDs, report
    index = ItemIndex.load(Path("runs/ml100k/index"))
    items, scores = index.search(user_vectors, k=100)
"""

from terarec.serve.indexing import index_run
from terarec.serve.item_index import IndexKind, ItemIndex, measure_index

__all__ = ["IndexKind", "ItemIndex", "index_run", "measure_index"]
