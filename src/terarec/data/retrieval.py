"""From an interaction log to retrieval data: filters, the split, queries and the item catalogue.

Training examples are the training events, one row each: the user's features (``user_col``,
its side features, and ``history``: its last ``history_length`` training items *before* the
event, by time then file order) then the item's (``item_col`` and its side features). Held-out
events become one query per user: the user's features as of the query, the items to find
(``targets``) and the items left out of the ranking (``exclude``: the items the user is known
to have had, but the targets). Validation queries see the training events only; evaluation
queries the training and validation events. Nothing held out reaches a training row, and a
training row's history holds no event at or after it (with ``history: others``, for logs whose
order means nothing, it holds the user's other training events).

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

from terarec.data.config import DataConfig, HistoryKind, SplitMethod
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


def _windows_without(context_values: np.ndarray, starts: np.ndarray, ends: np.ndarray, own: np.ndarray, length: int) -> JaggedColumn:
    """Bags of the last ``length`` of ``context_values[start:end]`` without position ``own``, per row."""
    count = np.minimum(ends - starts - 1, length)
    inside = own >= ends - count - 1
    first = np.where(inside, ends - count - 1, ends - count)
    offsets = np.zeros(len(ends) + 1, np.int64)
    np.cumsum(count, out=offsets[1:])
    positions = np.repeat(first - offsets[:-1], count) + np.arange(int(offsets[-1]), dtype=np.int64)
    positions += np.repeat(inside, count) & (positions >= np.repeat(own, count))
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
    return _RetrievalBuilder(config, paths, eval_paths).build()


class _RetrievalBuilder:
    """The steps of :func:`build_retrieval_data`, over the events of one log, in order: read and
    encode, filter, split, then build training rows, queries and the catalogue. ``report``
    collects the counts on the way."""

    def __init__(self, config: DataConfig, paths: list[Path], eval_paths: list[Path] | None) -> None:
        self.config, self.settings = config, config.interactions
        train_log = read_interactions(paths, config)
        self.logs = [train_log] + ([read_interactions(eval_paths, config)] if eval_paths else [])
        self.fixed_eval_file = bool(eval_paths)
        self.source = ",".join(train_log.sources)
        self.encoded_users = pc.dictionary_encode(pa.concat_arrays([log.users for log in self.logs]))
        self.encoded_items = pc.dictionary_encode(pa.concat_arrays([log.items for log in self.logs]))
        self.users = np.asarray(self.encoded_users.indices, dtype=np.int64)
        self.items = np.asarray(self.encoded_items.indices, dtype=np.int64)
        self.fixed_eval = np.arange(len(self.users)) >= train_log.num_events
        times = [log.times for log in self.logs]
        self.times = np.zeros(len(self.users)) if any(t is None for t in times) else np.concatenate(times)  # type: ignore[arg-type]
        self.user_hashes = hash_strings(self.encoded_users.dictionary)
        self.item_hashes = hash_strings(self.encoded_items.dictionary)
        self.num_users = len(self.encoded_users.dictionary)
        self.report: dict[str, int] = {"events": len(self.users)}

    def kept(self) -> np.ndarray:
        """The events left by the rating and k-core filters (the fixed evaluation file's are not
        k-core filtered), with repeated user-item events counted."""
        settings, report = self.settings, self.report
        keep = np.ones(len(self.users), bool)
        if settings.min_rating is not None:
            if any(log.ratings is None for log in self.logs):
                raise ConfigError(
                    f"data.interactions.min_rating is set but {self.source} has no rating column "
                    "(name it with data.interactions.rating_col)"
                )
            keep &= np.concatenate([log.ratings for log in self.logs]) >= settings.min_rating  # type: ignore[misc]
            report["below_min_rating"] = int((~keep).sum())
        trainable = keep & ~self.fixed_eval
        filtered = _k_core(self.users, self.items, trainable, settings.min_user_events, settings.min_item_events)
        report["k_core_dropped"] = int(trainable.sum() - filtered.sum())
        keep = filtered | (keep & self.fixed_eval)
        pair_keys = self.users[keep] * (int(self.items.max()) + 1) + self.items[keep]
        report["duplicate_events"] = int(len(pair_keys) - len(np.unique(pair_keys)))
        return keep

    def roles(self, keep: np.ndarray) -> np.ndarray:
        """Each event's role (training, validation, evaluation; ``-1`` filtered out)."""
        validate = self.config.val_fraction > 0
        candidates = keep & ~self.fixed_eval
        if not self.fixed_eval_file:
            roles = _assign_roles(self.config, self.users, self.times, candidates, _EVAL, validate)
        elif validate:
            roles = _assign_roles(self.config, self.users, self.times, candidates, _VAL, False)
        else:
            roles = np.full(len(self.users), _TRAIN, np.int8)
        roles[self.fixed_eval] = _EVAL
        roles[~keep] = -1
        return roles

    def read_side_features(self) -> None:
        """The side files, and the schema: the user's features, then the item's."""
        settings = self.settings
        self.user_names, self.item_names = [settings.user_col], [settings.item_col]
        reserved = {settings.user_col, settings.item_col, HISTORY_FEATURE}
        self.user_side = self.item_side = None
        if settings.user_features is not None:
            self.user_side = read_side_features(settings.user_features, settings.user_col, self.config, reserved)
            self.user_names += list(self.user_side.columns)
            reserved |= set(self.user_side.columns)
        if settings.item_features is not None:
            self.item_side = read_side_features(settings.item_features, settings.item_col, self.config, reserved)
            self.item_names += list(self.item_side.columns)
        if settings.history_length:
            self.user_names.append(HISTORY_FEATURE)
        self.schema = Schema("label", (), (*self.user_names, *self.item_names))

    def user_columns(self, user_codes: np.ndarray, history: JaggedColumn) -> dict[str, JaggedColumn]:
        columns = {self.settings.user_col: _single(self.user_hashes[user_codes])}
        if self.user_side is not None:
            side, missing = _side_rows(self.user_side, self.encoded_users.dictionary.take(pa.array(user_codes)))
            self.report["rows_without_user_features"] = self.report.get("rows_without_user_features", 0) + missing
            columns.update(side)
        if self.settings.history_length:
            columns[HISTORY_FEATURE] = history
        return columns

    def item_columns(self, item_codes: np.ndarray) -> dict[str, JaggedColumn]:
        columns = {self.settings.item_col: _single(self.item_hashes[item_codes])}
        if self.item_side is not None:
            side, missing = _side_rows(self.item_side, self.encoded_items.dictionary.take(pa.array(item_codes)))
            self.report["rows_without_item_features"] = self.report.get("rows_without_item_features", 0) + missing
            columns.update(side)
        return columns

    def table(self, columns: dict[str, JaggedColumn], rows: int, source: str) -> ColumnarData:
        """Rows of every feature, the ones ``columns`` lacks as empty bags."""
        sparse = {name: columns.get(name, _empty_bags(rows)) for name in self.schema.sparse_features}
        return ColumnarData(self.schema, np.ones(rows, np.float32), np.zeros((rows, 0), np.float32), sparse, source=source)

    def context(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Events of ``mask`` sorted by user, time and file order; each user's first position
        in that order; their items' IDs."""
        index = np.flatnonzero(mask)
        order = index[np.lexsort((index, self.times[index], self.users[index]))]
        starts = np.searchsorted(self.users[order], np.arange(self.num_users + 1))
        return order, starts, self.item_hashes[self.items[order]]

    def training_rows(self, train_mask: np.ndarray) -> ColumnarData:
        """One row per training event, in file order, each with the user's earlier (or, with
        ``history: others``, other) training items."""
        order, starts, context_items = self.context(train_mask)
        train_rows = np.flatnonzero(train_mask)
        rank_in_user = np.empty(len(order), np.int64)
        rank_in_user[np.searchsorted(train_rows, order)] = np.arange(len(order)) - starts[self.users[order]]
        users, length = self.users[train_rows], self.settings.history_length
        if self.settings.history is HistoryKind.OTHERS:
            history = _windows_without(context_items, starts[users], starts[users + 1], starts[users] + rank_in_user, length)
        else:
            history = _windows(context_items, starts[users], starts[users] + rank_in_user, length)
        self.report["train_events"] = len(train_rows)
        columns = {**self.user_columns(users, history), **self.item_columns(self.items[train_rows])}
        return self.table(columns, len(train_rows), self.source)

    def queries(self, held: np.ndarray, context_mask: np.ndarray, name: str) -> QuerySet | None:
        """One query per user of the ``held`` out events, known to have had the items of the
        ``context_mask`` events; what cannot be ranked is counted under ``name``."""
        report, users = self.report, self.users
        cold = ~self.known_users[users[held]]
        report[f"{name}_cold_users"] = int(len(np.unique(users[held][cold])))
        held = held[~cold]
        positions = self.position_of_item[self.items[held]]
        report[f"{name}_unknown_target_items"] = int((positions < 0).sum())
        held, positions = held[positions >= 0], positions[positions >= 0]
        query_users, query_of_event = np.unique(users[held], return_inverse=True)
        report[f"{name}_queries"] = len(query_users)
        if not len(query_users):
            return None
        targets = _csr(query_of_event, positions, len(query_users))
        order, starts, context_items = self.context(context_mask)
        history = _windows(context_items, starts[query_users], starts[query_users + 1], self.settings.history_length)
        # Known items per query: every context event of its user, less its targets.
        query_of_user = np.full(self.num_users, -1, np.int64)
        query_of_user[query_users] = np.arange(len(query_users))
        known_query, known_position = query_of_user[users[order]], self.position_of_item[self.items[order]]
        on = (known_query >= 0) & (known_position >= 0)
        known = known_query[on] * self.num_items + known_position[on]
        is_target = np.isin(known, query_of_event * self.num_items + positions)
        report[f"{name}_targets_seen_before"] = int(len(np.unique(known[is_target])))
        exclude = _csr(known_query[on][~is_target], known_position[on][~is_target], len(query_users))
        rows = self.table(self.user_columns(query_users, history), len(query_users), f"{self.source} ({name} queries)")
        return QuerySet(rows, targets, exclude, self.encoded_users.dictionary.take(pa.array(query_users)))

    def build(self) -> tuple[ColumnarData, RetrievalData]:
        roles = self.roles(self.kept())
        train_mask = roles == _TRAIN
        if not train_mask.any():
            raise DataError(f"{self.source}: no training event is left after filtering and splitting")
        # The catalogue: items of training events, in order of first appearance.
        catalogue_codes = pc.unique(pa.array(self.items[train_mask])).to_numpy()
        self.num_items = len(catalogue_codes)
        self.position_of_item = np.full(len(self.encoded_items.dictionary), -1, np.int64)
        self.position_of_item[catalogue_codes] = np.arange(self.num_items)
        self.known_users = np.bincount(self.users[train_mask], minlength=self.num_users) > 0
        self.read_side_features()
        train = self.training_rows(train_mask)
        val = self.queries(np.flatnonzero(roles == _VAL), train_mask, "val")
        evaluation = self.queries(np.flatnonzero(roles == _EVAL), train_mask | (roles == _VAL), "eval")
        if evaluation is None:
            raise DataError(f"{self.source}: the split leaves no evaluation query (users need two events or more)")
        self.report["users"] = int(self.known_users.sum())
        self.report["items"] = self.num_items
        return train, RetrievalData(
            catalogue=self.table(self.item_columns(catalogue_codes), self.num_items, f"{self.source} (catalogue)"),
            items=self.encoded_items.dictionary.take(pa.array(catalogue_codes)),
            item_counts=np.bincount(self.position_of_item[self.items[train_mask]], minlength=self.num_items),
            user_features=tuple(self.user_names),
            item_features=tuple(self.item_names),
            eval=evaluation,
            val=val,
            report=self.report,
        )
