"""The DeepCTR-Torch side of ``bench/quality.py``, and the inputs it shares with scikit-learn.

terarec hashes every categorical value to a 64-bit ID and maps IDs to table rows itself;
DeepCTR-Torch (``deepctr-torch==0.3.0``) wants per-feature indices ``0..V-1``. So the training,
validation and test splits come from terarec's own :func:`~terarec.data.load_splits` (same rows,
same IDs, same log-transformed dense values), and :func:`encode_splits` turns each feature's IDs
into indices: the distinct IDs of the rows trained on, sorted, are ``0..V-2``; every ID not
among them (first seen in the validation or test rows) shares the last index ``V-1``, which no
training row touches.

How each terarec model is built in DeepCTR-Torch (``all`` = every sparse and dense feature):

=============  ====================================================================================
``lr``         ``WDL(linear=all, dnn=[], dnn_hidden_units=())``: its linear part alone (one weight
               per ID and per dense feature, plus the output bias). DeepCTR has no LR model.
``dnn``        ``WDL(linear=[], dnn=all)``: Wide & Deep without the wide part, i.e. an MLP over
               the embeddings and dense features. (``DeepFM(use_fm=False)`` would keep a linear
               part, so it is not a plain DNN.)
``deepfm``     ``DeepFM(linear=all, dnn=all)``
``wide_deep``  ``WDL(linear=all, dnn=all)``
``dcnv2``      ``DCN(linear=[], dnn=all, cross_parameterization="matrix")``: full-matrix cross
               layers beside the MLP, which is DCN-v2 (parallel). Without a linear part, like the
               paper; ``DCNMix`` is the low-rank mixture, not used here.
``xdeepfm``    ``xDeepFM(linear=all, dnn=all, cin_split_half=True)``
=============  ====================================================================================

What needed care in DeepCTR-Torch 0.3.0:

- ``import deepctr_torch`` starts a thread that asks PyPI for a newer release through
  ``requests``, a package its wheel does not declare; :func:`import_deepctr` stubs that check
  out, so the benchmark makes no network call and needs no ``requests``.
- ``fit`` concatenates every input into one float64 array and feeds float32 to the model, so
  indices above :math:`2^{24}` would be rounded; :func:`encode_splits` refuses such a feature.
- Its loss is the batch's sum, not its mean; Adam is blind to that scale (but for its
  ``eps``). Its default L2 (``1e-5`` on every embedding, linear and cross weight) is added to
  that sum and computed over whole tables at every step; terarec adds no L2 by default, so
  every ``l2_reg_*`` is 0 here. Its init (normal, std ``1e-4``, for embeddings and MLP
  weights alike), ReLU, no dropout and no batch norm are left as DeepCTR ships them.
- Its tables are dense ``nn.Embedding`` s updated by one ``torch.optim.Adam`` (lr ``1e-3``) with
  the MLP: Adam moves every row at every step, not only the rows in the batch.
- Its ``EarlyStopping(restore_best_weights=True)`` restores the best weights only when it
  stops early, not when the last epoch is reached; so :func:`run_deepctr` calls ``fit`` for one
  epoch at a time, scores the validation rows itself and keeps the best state.
- ``fit`` prints the device and the sample counts at every call, even with ``verbose=0``; that
  output is swallowed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import time
import types
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score

from terarec.data import ColumnarData

DEEPCTR_MODELS = ("lr", "dnn", "deepfm", "wide_deep", "dcnv2", "xdeepfm")
LEARNING_RATE = 1e-3
# Above this, an index does not survive the float32 cast inside DeepCTR's ``fit``.
_MAX_EXACT_FLOAT32_INDEX = 2**24
_PROBABILITY_CLIP = 1e-7  # terarec.train.metrics clips the same way


@dataclass(frozen=True)
class TrainSettings:
    """What every system shares: model sizes, batches, epochs and early stopping.

    Args:
        embedding_dim (int): width of every feature's embedding.
        mlp (tuple[int, ...]): hidden widths of every model's MLP.
        cross_layers (int): DCN-v2 cross layers.
        cin_layers (tuple[int, ...]): xDeepFM's feature maps per CIN layer.
        batch_size (int): examples per step.
        epochs (int): most passes over the training rows.
        patience (int): stop after this many epochs without a better validation AUC (``0``: never
            stop early); the best epoch's weights are scored on the test split either way.
        val_fraction (float): validation rows, carved from the tail of the training split.
    """

    embedding_dim: int
    mlp: tuple[int, ...]
    cross_layers: int
    cin_layers: tuple[int, ...]
    batch_size: int
    epochs: int
    patience: int
    val_fraction: float


@dataclass(frozen=True)
class EncodedPart:
    """One split as dense arrays.

    Shape:
        - labels: :math:`(R)` ``float32``
        - dense: :math:`(R, D_{dense})` ``float32``
        - indices: :math:`(R, F)` ``int64``, feature ``f``'s in ``[0, num_embeddings[f])``
    """

    labels: np.ndarray
    dense: np.ndarray
    indices: np.ndarray


@dataclass(frozen=True)
class EncodedSplits:
    """Training, validation and test rows with per-feature indices (see :func:`encode_splits`).

    Args:
        feature_names (tuple[str, ...]): the ``F`` sparse features.
        dense_names (tuple[str, ...]): the dense features.
        num_embeddings (tuple[int, ...]): indices per feature, the shared unseen-ID index included.
        train (EncodedPart): rows trained on.
        val (EncodedPart): rows early stopping watches.
        test (EncodedPart): rows scored.
    """

    feature_names: tuple[str, ...]
    dense_names: tuple[str, ...]
    num_embeddings: tuple[int, ...]
    train: EncodedPart
    val: EncodedPart
    test: EncodedPart


def _one_id_per_row(data: ColumnarData, name: str) -> np.ndarray:
    column = data.sparse[name]
    if not np.array_equal(np.asarray(column.offsets), np.arange(data.num_rows + 1)):
        raise ValueError(f"sparse feature {name!r} of {data.source or 'the data'} has bags of several IDs "
                         f"(or none); the baselines take exactly one ID per row")
    return np.asarray(column.values)


def encode_splits(train: ColumnarData, val: ColumnarData, test: ColumnarData) -> EncodedSplits:
    """Maps every ID of the three splits to its feature's index.

    Args:
        train (ColumnarData): rows trained on; their distinct IDs are the vocabulary.
        val (ColumnarData): validation rows.
        test (ColumnarData): test rows.

    Raises:
        ValueError: if a feature has a row without exactly one ID, or more indices than a
            float32 holds exactly.
    """
    names = train.schema.sparse_features
    parts = {"train": train, "val": val, "test": test}
    columns: dict[str, list[np.ndarray]] = {part: [] for part in parts}
    num_embeddings = []
    for name in names:
        ids = {part: _one_id_per_row(data, name) for part, data in parts.items()}
        vocabulary = np.unique(ids["train"])
        if vocabulary.shape[0] + 1 > _MAX_EXACT_FLOAT32_INDEX:
            raise ValueError(f"feature {name!r} has {vocabulary.shape[0]} distinct IDs; DeepCTR's float32 "
                             f"inputs hold indices below {_MAX_EXACT_FLOAT32_INDEX} exactly")
        num_embeddings.append(vocabulary.shape[0] + 1)
        for part, part_ids in ids.items():
            index = np.searchsorted(vocabulary, part_ids)
            known = vocabulary[np.minimum(index, vocabulary.shape[0] - 1)] == part_ids
            columns[part].append(np.where(known, index, vocabulary.shape[0]))
    encoded = {part: EncodedPart(np.asarray(data.labels, dtype=np.float32), np.asarray(data.dense, dtype=np.float32),
                                 np.stack(columns[part], axis=1))
               for part, data in parts.items()}
    return EncodedSplits(names, train.schema.dense_features, tuple(num_embeddings), **encoded)


def click_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """AUC (ties count one half) and log loss (probabilities clipped to ``[1e-7, 1 - 1e-7]``), as terarec reports them."""
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), _PROBABILITY_CLIP, 1 - _PROBABILITY_CLIP)
    labels = np.asarray(labels, dtype=np.float64).ravel()
    one_class = labels.min() == labels.max()
    return {"auc": float("nan") if one_class else float(roc_auc_score(labels, probabilities)),
            "log_loss": float(log_loss(labels, probabilities, labels=[0.0, 1.0]))}


def import_deepctr() -> types.ModuleType:
    """Imports ``deepctr_torch`` with its PyPI version check replaced by a no-op (see the module docstring)."""
    if "deepctr_torch" not in sys.modules:
        stub = types.ModuleType("deepctr_torch.utils")
        stub.check_version = lambda version: None  # type: ignore[attr-defined]
        sys.modules["deepctr_torch.utils"] = stub
    import deepctr_torch

    return deepctr_torch


def _build(model: str, data: EncodedSplits, settings: TrainSettings, seed: int) -> torch.nn.Module:
    import_deepctr()
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import DCN, WDL, DeepFM, xDeepFM

    features = [SparseFeat(name, vocabulary_size=rows, embedding_dim=settings.embedding_dim)
                for name, rows in zip(data.feature_names, data.num_embeddings)]
    features += [DenseFeat(name, 1) for name in data.dense_names]
    no_l2 = {"l2_reg_linear": 0.0, "l2_reg_embedding": 0.0, "l2_reg_dnn": 0.0, "seed": seed, "device": "cpu"}
    mlp = settings.mlp
    if model == "lr":
        return WDL(features, [], dnn_hidden_units=(), **no_l2)
    if model == "dnn":
        return WDL([], features, dnn_hidden_units=mlp, **no_l2)
    if model == "deepfm":
        return DeepFM(features, features, dnn_hidden_units=mlp, **no_l2)
    if model == "wide_deep":
        return WDL(features, features, dnn_hidden_units=mlp, **no_l2)
    if model == "dcnv2":
        return DCN([], features, cross_num=settings.cross_layers, cross_parameterization="matrix",
                   dnn_hidden_units=mlp, l2_reg_cross=0.0, **no_l2)
    if model == "xdeepfm":
        return xDeepFM(features, features, dnn_hidden_units=mlp, cin_layer_size=settings.cin_layers,
                       cin_split_half=True, l2_reg_cin=0.0, **no_l2)
    raise ValueError(f"unknown model {model!r}: expected one of {', '.join(DEEPCTR_MODELS)}")


def _inputs(data: EncodedSplits, part: EncodedPart) -> dict[str, np.ndarray]:
    inputs = {name: part.indices[:, j] for j, name in enumerate(data.feature_names)}
    inputs.update({name: part.dense[:, j] for j, name in enumerate(data.dense_names)})
    return inputs


def run_deepctr(model: str, data: EncodedSplits, settings: TrainSettings, seed: int,
                eval_batch_size: int = 16384) -> dict[str, object]:
    """Trains one DeepCTR-Torch model with early stopping on validation AUC and scores the test rows.

    Args:
        model (str): one of :data:`DEEPCTR_MODELS`.
        data (EncodedSplits): the rows, from :func:`encode_splits`.
        settings (TrainSettings): sizes, batches, epochs and patience.
        seed (int): seeds the weights and the batch order (``torch.manual_seed``).
        eval_batch_size (int, optional): rows per prediction call. Default: ``16384``

    Returns:
        dict[str, object]: test ``auc`` and ``log_loss``; ``train_seconds`` (the epochs and their
        validation passes); ``epochs_run``, ``best_epoch`` (1-based) and its ``val_auc``.
    """
    torch.manual_seed(seed)
    net = _build(model, data, settings, seed)
    net.compile(torch.optim.Adam(net.parameters(), lr=LEARNING_RATE), "binary_crossentropy")
    train_x, val_x = _inputs(data, data.train), _inputs(data, data.val)
    best_auc, best_epoch, best_state = float("nan"), 0, None
    epoch = 0
    started = time.perf_counter()
    while epoch < settings.epochs and not (settings.patience and epoch - best_epoch >= settings.patience):
        with contextlib.redirect_stdout(io.StringIO()):  # fit prints its device and counts at every call
            net.fit(train_x, data.train.labels, batch_size=settings.batch_size, epochs=1, verbose=0, shuffle=True)
        epoch += 1
        val_auc = click_metrics(data.val.labels, net.predict(val_x, eval_batch_size))["auc"]
        if best_state is None or val_auc > best_auc:
            best_auc, best_epoch, best_state = val_auc, epoch, copy.deepcopy(net.state_dict())
    train_seconds = time.perf_counter() - started
    net.load_state_dict(best_state)
    scores = click_metrics(data.test.labels, net.predict(_inputs(data, data.test), eval_batch_size))
    return {**scores, "train_seconds": train_seconds, "epochs_run": epoch, "best_epoch": best_epoch, "val_auc": best_auc}
