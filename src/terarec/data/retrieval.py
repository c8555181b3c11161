"""From an interaction log to retrieval data: filters, the split, queries and the item catalogue.

Training examples are the training events, one row each: the user's features (``user_col``,
its side features, and ``history``: its last ``history_length`` training items *before* the
event, by time then file order) then the item's (``item_col`` and its side features). Held-out
events become one query per user: the user's features as of the query, the items to find
(``targets``) and the items left out of the ranking (``exclude``: the items the user is known
to have had, but the targets). Validation queries see the training events only; evaluation
queries the training and validation events. Nothing held out reaches a training row, and a
training row's history holds no event at or after it.

The catalogue is every item of a training event: retrieval ranks it whole. What cannot be
ranked fairly is counted and left out, never scored as a miss: held-out events of users with
no training event (``cold_users``), of items absent from training (``unknown_target_items``),
and queries left with no target (``queries_without_targets``). Repeated events of one user and
item are kept (``duplicate_events`` counts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from terarec.data.config import DataConfig, SplitMethod
from terarec.data.hashing import MISSING_ID, hash_strings
from terarec.data.interactions import SideFeatures, read_interactions, read_side_features
from terarec.data.loader import gather_jagged
from terarec.data.types import ColumnarData, JaggedColumn, Schema
from terarec.errors import ConfigError, DataError

__all__ = ["HISTORY_FEATURE", "QuerySet", "RetrievalData", "build_retrieval_data"]

HISTORY_FEATURE = "history"
"""The name of the feature holding a user's recent items."""

_TRAIN, _VAL, _EVAL = 0, 1, 2


@dataclass(frozen=True)
class QuerySet:
    """Held-out events, one query per user.

    Args:
        queries (ColumnarData): one row per query: the user's features, the item's features as
            empty bags.
        targets (JaggedColumn): per query, the catalogue positions of the items to find.
        exclude (JaggedColumn): per query, the catalogue positions left out of its ranking.
        users (pa.Array): each query's user, as text.

    Shape:
        - targets.offsets, exclude.offsets: :math:`(Q + 1)`
    """

    queries: ColumnarData
    targets: JaggedColumn
    exclude: JaggedColumn
    users: pa.Array

    @property
    def num_queries(self) -> int:
        return self.queries.num_rows


@dataclass(frozen=True)
class RetrievalData:
    """What retrieval needs beside the training rows.

    Args:
        catalogue (ColumnarData): one row per item: the item's features, the user's as empty bags.
        items (pa.Array): each catalogue item, as text.
        item_counts (np.ndarray): training events per catalogue item (the sampling
            probabilities of in-batch negatives).
        user_features (tuple[str, ...]): the user tower's features.
        item_features (tuple[str, ...]): the item tower's features.
        eval (QuerySet): evaluation queries.
        val (QuerySet, optional): validation queries, or ``None``.
        report (dict[str, int]): what the filters and the split kept and left out.
    """

    catalogue: ColumnarData
    items: pa.Array
    item_counts: np.ndarray
    user_features: tuple[str, ...]
    item_features: tuple[str, ...]
    eval: QuerySet
    val: QuerySet | None
    report: dict[str, int]

    @property
    def num_items(self) -> int:
        return self.catalogue.num_rows


def _empty_bags(rows: int) -> JaggedColumn:
    return JaggedColumn(np.zeros(0, np.int64), np.zeros(rows + 1, np.int64))


def _single(values: np.ndarray) -> JaggedColumn:
    return JaggedColumn(np.ascontiguousarray(values, np.int64), np.arange(len(values) + 1, dtype=np.int64))


def _side_rows(side: SideFeatures, names: pa.Array) -> tuple[dict[str, JaggedColumn], int]:
    """Each of ``names``' side features (a missing value's ID where the file has no row for it),
    and how many names it lacks."""
    rows = np.asarray(pc.fill_null(pc.index_in(names, value_set=side.keys), -1), dtype=np.int64)
    missing = rows < 0
    columns = {}
    for name, column in side.columns.items():
        # One more bag, holding the missing value's ID, for names the file lacks.
        padded = JaggedColumn(
            np.concatenate([column.values, [MISSING_ID]]).astype(np.int64),
            np.concatenate([column.offsets, [column.offsets[-1] + 1]]).astype(np.int64),
        )
        columns[name] = gather_jagged(padded, np.where(missing, len(side.keys), rows))
    return columns, int(missing.sum())


def _windows(context_values: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> JaggedColumn:
    """Bags of ``context_values[max(start, end - length):end]`` per row."""
    first = np.maximum(starts, ends - length)
    lengths = ends - first
    offsets = np.zeros(len(ends) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    positions = np.repeat(first - offsets[:-1], lengths) + np.arange(int(offsets[-1]), dtype=np.int64)
    return JaggedColumn(context_values[positions], offsets)


def _csr(rows: np.ndarray, values: np.ndarray, num_rows: int) -> JaggedColumn:
    """Distinct ``values`` per row, sorted, as a jagged column."""
    if len(rows):
        pairs = np.unique(np.stack([rows, values], axis=1), axis=0)
        rows, values = pairs[:, 0], pairs[:, 1]
    offsets = np.zeros(num_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=offsets[1:])
    return JaggedColumn(np.ascontiguousarray(values, np.int64), offsets)


def _k_core(users: np.ndarray, items: np.ndarray, keep: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """``keep`` less the events of users with fewer than ``min_user`` kept events and items with
    fewer than ``min_item``, repeated until both hold."""
    keep = keep.copy()
    while True:
        user_counts = np.bincount(users[keep], minlength=int(users.max()) + 1)
        item_counts = np.bincount(items[keep], minlength=int(items.max()) + 1)
        drop = keep & ((user_counts[users] < min_user) | (item_counts[items] < min_item))
        if not drop.any():
            return keep
        keep &= ~drop


def _assign_roles(
    config: DataConfig, users: np.ndarray, times: np.ndarray, candidates: np.ndarray, held_role: int, validate: bool
) -> np.ndarray:
    """The role of every event in ``candidates``: training, or held out as ``held_role`` and, when
    ``validate``, as validation (see :class:`~terarec.data.SplitMethod`)."""
    roles = np.full(len(users), _TRAIN, np.int8)
    index = np.flatnonzero(candidates)
    method = config.interactions.split
    if method is SplitMethod.LEAVE_LAST_OUT:
        order = index[np.lexsort((index, times[index], users[index]))]
        sorted_users = users[order]
        counts = np.bincount(sorted_users)
        position = np.arange(len(order)) - np.searchsorted(sorted_users, sorted_users)
        remaining = counts[sorted_users] - position  # 1 for the user's last event
        roles[order[(remaining == 1) & (counts[sorted_users] >= 2)]] = held_role
        if validate:
            roles[order[(remaining == 2) & (counts[sorted_users] >= 3)]] = _VAL
        return roles
    if method is SplitMethod.TIME:
        order = index[np.lexsort((index, times[index]))]
    else:
        order = index[np.random.default_rng(config.interactions.seed).permutation(len(index))]
    held = int(round(len(order) * (config.eval_fraction if held_role == _EVAL else config.val_fraction)))
    roles[order[len(order) - held :]] = held_role
    if validate and held_role == _EVAL:
        rest = order[: len(order) - held]
        validated = int(round(len(rest) * config.val_fraction))
        roles[rest[len(rest) - validated :]] = _VAL
    return roles


def build_retrieval_data(config: DataConfig, paths: list[Path], eval_paths: list[Path] | None) -> tuple[ColumnarData, RetrievalData]:
    """The training rows and the retrieval data of an interaction log (see the module docstring).

    Args:
        config (DataConfig): ``data.interactions`` and the split fractions.
        paths (list[Path]): the log's files.
        eval_paths (list[Path], optional): a fixed evaluation log (``data.eval_path``); the
            split method then carves validation out of ``paths``. Default: ``None``

    Raises:
        ConfigError: on settings the log cannot meet (``min_rating`` without ratings, names that clash).
        DataError: on malformed files, or when the split leaves no training event or no query.
    """
    settings = config.interactions
    train_log = read_interactions(paths, config)
    logs = [train_log] + ([read_interactions(eval_paths, config)] if eval_paths else [])
    user_text = pa.concat_arrays([log.users for log in logs])
    item_text = pa.concat_arrays([log.items for log in logs])
    fixed_eval = np.arange(len(user_text)) >= train_log.num_events
    encoded_users, encoded_items = pc.dictionary_encode(user_text), pc.dictionary_encode(item_text)
    users = np.asarray(encoded_users.indices, dtype=np.int64)
    items = np.asarray(encoded_items.indices, dtype=np.int64)
    if any(log.times is None for log in logs):
        times = np.zeros(len(users))
    else:
        times = np.concatenate([log.times for log in logs])  # type: ignore[misc]
    report: dict[str, int] = {"events": len(users)}
    keep = np.ones(len(users), bool)
    if settings.min_rating is not None:
        if any(log.ratings is None for log in logs):
            raise ConfigError(
                f"data.interactions.min_rating is set but {', '.join(train_log.sources)} has no rating column "
                "(name it with data.interactions.rating_col)"
            )
        ratings = np.concatenate([log.ratings for log in logs])  # type: ignore[misc]
        keep &= ratings >= settings.min_rating
        report["below_min_rating"] = int((~keep).sum())
    filtered = _k_core(users, items, keep & ~fixed_eval, settings.min_user_events, settings.min_item_events)
    report["k_core_dropped"] = int((keep & ~fixed_eval).sum() - filtered.sum())
    keep = filtered | (keep & fixed_eval)
    pair_keys = users[keep] * (int(items.max()) + 1) + items[keep]
    report["duplicate_events"] = int(len(pair_keys) - len(np.unique(pair_keys)))

    validate = config.val_fraction > 0
    candidates = keep & ~fixed_eval
    if not eval_paths:
        roles = _assign_roles(config, users, times, candidates, _EVAL, validate)
    elif validate:
        roles = _assign_roles(config, users, times, candidates, _VAL, False)
    else:
        roles = np.full(len(users), _TRAIN, np.int8)
    roles[fixed_eval] = _EVAL
    roles[~keep] = -1
    train_mask = roles == _TRAIN
    if not train_mask.any():
        raise DataError(f"{', '.join(train_log.sources)}: no training event is left after filtering and splitting")

    # The catalogue: items of training events, in order of first appearance.
    catalogue_codes = pc.unique(pa.array(items[train_mask])).to_numpy()
    position_of_item = np.full(len(encoded_items.dictionary), -1, np.int64)
    position_of_item[catalogue_codes] = np.arange(len(catalogue_codes))
    item_counts = np.bincount(position_of_item[items[train_mask]], minlength=len(catalogue_codes))
    user_hashes = hash_strings(encoded_users.dictionary)
    item_hashes = hash_strings(encoded_items.dictionary)

    user_names = [settings.user_col]
    item_names = [settings.item_col]
    reserved = {settings.user_col, settings.item_col, HISTORY_FEATURE}
    user_side = item_side = None
    if settings.user_features is not None:
        user_side = read_side_features(settings.user_features, settings.user_col, config, reserved)
        user_names += list(user_side.columns)
        reserved |= set(user_side.columns)
    if settings.item_features is not None:
        item_side = read_side_features(settings.item_features, settings.item_col, config, reserved)
        clash = set(item_side.columns) & reserved
        if clash:
            raise ConfigError(f"{settings.item_features}: side feature(s) {sorted(clash)} clash with user features; list them in data.ignore")
        item_names += list(item_side.columns)
    if settings.history_length:
        user_names.append(HISTORY_FEATURE)
    schema = Schema("label", (), (*user_names, *item_names))

    def user_columns(user_codes: np.ndarray, history: JaggedColumn) -> dict[str, JaggedColumn]:
        columns = {settings.user_col: _single(user_hashes[user_codes])}
        if user_side is not None:
            side, missing = _side_rows(user_side, encoded_users.dictionary.take(pa.array(user_codes)))
            report["rows_without_user_features"] = report.get("rows_without_user_features", 0) + missing
            columns.update(side)
        if settings.history_length:
            columns[HISTORY_FEATURE] = history
        return columns

    def item_columns(item_codes: np.ndarray) -> dict[str, JaggedColumn]:
        columns = {settings.item_col: _single(item_hashes[item_codes])}
        if item_side is not None:
            side, missing = _side_rows(item_side, encoded_items.dictionary.take(pa.array(item_codes)))
            report["rows_without_item_features"] = report.get("rows_without_item_features", 0) + missing
            columns.update(side)
        return columns

    def table(columns: dict[str, JaggedColumn], rows: int, source: str) -> ColumnarData:
        sparse = {name: columns.get(name, _empty_bags(rows)) for name in schema.sparse_features}
        return ColumnarData(schema, np.ones(rows, np.float32), np.zeros((rows, 0), np.float32), sparse, source=source)

    def context(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Events of ``mask`` sorted by user, time and file order; each user's first position."""
        index = np.flatnonzero(mask)
        order = index[np.lexsort((index, times[index], users[index]))]
        starts = np.searchsorted(users[order], np.arange(len(encoded_users.dictionary) + 1))
        return order, starts, item_hashes[items[order]]

    # Training rows, in file order, each with the user's earlier training items.
    order, starts, context_items = context(train_mask)
    train_rows = np.flatnonzero(train_mask)
    rank_in_user = np.empty(len(order), np.int64)
    rank_in_user[np.searchsorted(train_rows, order)] = np.arange(len(order)) - starts[users[order]]
    train_users = users[train_rows]
    history = _windows(context_items, starts[train_users], starts[train_users] + rank_in_user, settings.history_length)
    source = ",".join(train_log.sources)
    train = table({**user_columns(train_users, history), **item_columns(items[train_rows])}, len(train_rows), source)
    report["train_events"] = len(train_rows)

    known_users = np.bincount(users[train_mask], minlength=len(encoded_users.dictionary)) > 0

    def queries(role: int, context_mask: np.ndarray, name: str) -> QuerySet | None:
        held = np.flatnonzero(roles == role)
        if not len(held):
            return None
        cold = ~known_users[users[held]]
        report[f"{name}_cold_users"] = int(len(np.unique(users[held][cold])))
        held = held[~cold]
        positions = position_of_item[items[held]]
        report[f"{name}_unknown_target_items"] = int((positions < 0).sum())
        held, positions = held[positions >= 0], positions[positions >= 0]
        query_users, query_of_event = np.unique(users[held], return_inverse=True)
        report[f"{name}_queries"] = len(query_users)
        if not len(query_users):
            return None
        targets = _csr(query_of_event, positions, len(query_users))
        order, starts, context_items = context(context_mask)
        history = _windows(context_items, starts[query_users], starts[query_users + 1], settings.history_length)
        # Known items per query: every context event of its user, less its targets.
        query_of_user = np.full(len(encoded_users.dictionary), -1, np.int64)
        query_of_user[query_users] = np.arange(len(query_users))
        known_query = query_of_user[users[order]]
        known_position = position_of_item[items[order]]
        on = (known_query >= 0) & (known_position >= 0)
        known_query, known_position = known_query[on], known_position[on]
        width = len(catalogue_codes)
        is_target = np.isin(known_query * width + known_position, query_of_event * width + positions)
        report[f"{name}_targets_seen_before"] = int(len(np.unique((known_query * width + known_position)[is_target])))
        exclude = _csr(known_query[~is_target], known_position[~is_target], len(query_users))
        rows = table(user_columns(query_users, history), len(query_users), f"{source} ({name} queries)")
        return QuerySet(rows, targets, exclude, encoded_users.dictionary.take(pa.array(query_users)))

    val = queries(_VAL, train_mask, "val")
    evaluation = queries(_EVAL, train_mask | (roles == _VAL), "eval")
    if evaluation is None:
        raise DataError(f"{source}: the split leaves no evaluation query (users need two events or more)")
    catalogue = table(item_columns(catalogue_codes), len(catalogue_codes), f"{source} (catalogue)")
    report["users"] = int(known_users.sum())
    report["items"] = len(catalogue_codes)
    return train, RetrievalData(
        catalogue=catalogue,
        items=encoded_items.dictionary.take(pa.array(catalogue_codes)),
        item_counts=item_counts,
        user_features=tuple(user_names),
        item_features=tuple(item_names),
        eval=evaluation,
        val=val,
        report=report,
    )
