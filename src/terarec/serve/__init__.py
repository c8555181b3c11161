"""Serving what was trained: model export, the HTTP service, and the item index of retrieval models.

Typical use::

    export_run(Path("runs/ml100k"), Path("models/ml100k"))   # terarec export: weights, tables, index, CRCs
    model = ServedModel(Path("models/ml100k"))
    model.score({"user_id": "196"}, [{"item_id": "242"}, {"item_id": "302"}])
    model.retrieve({"user_id": "196", "history": ["242"]}, k=100)
    app = create_app(ServeSettings("models/ml100k"))         # terarec serve: FastAPI over it

    report = index_run(Path("runs/ml100k"))                  # terarec index: RUN/index, measured
    index = ItemIndex.load(Path("runs/ml100k/index"))
"""

from terarec.serve.app import ServeSettings, create_app
from terarec.serve.export import ExportReport, export_run, verify_model_dir
from terarec.serve.indexing import index_run
from terarec.serve.item_index import IndexKind, ItemIndex, measure_index
from terarec.serve.model import Retrieved, ServedModel

__all__ = [
    "ExportReport",
    "IndexKind",
    "ItemIndex",
    "Retrieved",
    "ServeSettings",
    "ServedModel",
    "create_app",
    "export_run",
    "index_run",
    "measure_index",
    "verify_model_dir",
]
