"""Splitting interaction logs into training rows, queries and a catalogue: exact roles, no leakage,
counted exclusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terarec.data import (
    HISTORY_FEATURE,
    HistoryKind,
    DataConfig,
    DataFormat,
    InteractionsConfig,
    RetrievalData,
    SplitMethod,
    hash_string,
    load_splits,
)
from terarec.errors import ConfigError, DataError
from tests.helpers import SHARED_DATA


def _log(path: Path, events: list[tuple[str, str, float]]) -> Path:
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in events))
    return path


def _splits(path: Path, **settings: object):
    data_keys = {k: settings.pop(k) for k in list(settings) if k in ("eval_path", "eval_fraction", "val_fraction")}
    config = DataConfig(path=str(path), format=DataFormat.INTERACTIONS, interactions=InteractionsConfig(**settings), **data_keys)
    return load_splits(config)


def _names(values: np.ndarray, names: list[str]) -> list[str]:
    lookup = {hash_string(n): n for n in names}
    return [lookup[int(v)] for v in values]


def _bags(column, rows: range, names: list[str]) -> list[list[str]]:
    return [_names(column.values[column.offsets[r] : column.offsets[r + 1]], names) for r in rows]


ITEMS = [f"i{k}" for k in range(20)]


def test_leave_last_out_holds_out_each_users_last_two_events(tmp_path: Path) -> None:
    # By time: u1 i0 i1 i2 i3; u2 i1 i4; u3 i2 i3 i4 i0 (written out of time order)
    path = _log(tmp_path / "log.inter", [("u1", "i2", 3), ("u1", "i0", 1), ("u2", "i1", 5), ("u1", "i3", 4),
                                         ("u1", "i1", 2), ("u2", "i4", 6), ("u3", "i2", 1), ("u3", "i3", 2),
                                         ("u3", "i4", 3), ("u3", "i0", 4)])
    splits = _splits(path, history_length=2)
    train, retrieval = splits.train, splits.retrieval
    # Training rows in file order; u1 validates i2 and evaluates i3, u2 (two events) evaluates i4,
    # u3 validates i4 and evaluates i0.
    assert _names(train.sparse["user_id"].values, ["u1", "u2", "u3"]) == ["u1", "u2", "u1", "u3", "u3"]
    assert _names(train.sparse["item_id"].values, ITEMS) == ["i0", "i1", "i1", "i2", "i3"]
    assert _bags(train.sparse[HISTORY_FEATURE], range(5), ITEMS) == [[], [], ["i0"], [], ["i2"]]
    assert retrieval.items.to_pylist() == ["i0", "i1", "i2", "i3"]
    assert retrieval.item_counts.tolist() == [1, 2, 1, 1]
    # i4 never trains: the events that hold it out are counted, and their queries dropped.
    assert retrieval.val.users.to_pylist() == ["u1"] and retrieval.report["val_unknown_target_items"] == 1
    assert retrieval.eval.users.to_pylist() == ["u1", "u3"] and retrieval.report["eval_unknown_target_items"] == 1
    assert [retrieval.items.to_pylist()[t] for t in retrieval.eval.targets.values] == ["i3", "i0"]
    assert _bags(retrieval.eval.queries.sparse[HISTORY_FEATURE], range(2), ITEMS) == [["i1", "i2"], ["i3", "i4"]]


def test_targets_exclusions_and_histories_of_queries(tmp_path: Path) -> None:
    # Every item of a user is seen by someone else in training, so every target is in the catalogue.
    events = [("a", "i1", 1), ("a", "i2", 2), ("a", "i3", 3), ("a", "i4", 4),
              ("b", "i4", 1), ("b", "i3", 2), ("b", "i2", 3), ("b", "i1", 4),
              ("c", "i1", 1), ("c", "i2", 2), ("c", "i3", 3), ("c", "i4", 4)]
    retrieval = _splits(_log(tmp_path / "log.inter", events), history_length=5).retrieval
    catalogue = retrieval.items.to_pylist()
    evaluation, val = retrieval.eval, retrieval.val
    assert evaluation.users.to_pylist() == ["a", "b", "c"]
    assert [catalogue[t] for t in evaluation.targets.values] == ["i4", "i1", "i4"]
    assert [catalogue[t] for t in val.targets.values] == ["i3", "i2", "i3"]
    # An evaluation query knows the training and validation items; a validation query the training ones.
    excluded = [sorted(catalogue[t] for t in evaluation.exclude.values[s:e])
                for s, e in zip(evaluation.exclude.offsets[:-1], evaluation.exclude.offsets[1:])]
    assert excluded == [["i1", "i2", "i3"], ["i2", "i3", "i4"], ["i1", "i2", "i3"]]
    assert _bags(evaluation.queries.sparse[HISTORY_FEATURE], range(3), ITEMS)[1] == ["i4", "i3", "i2"]
    assert _bags(val.queries.sparse[HISTORY_FEATURE], range(3), ITEMS)[1] == ["i4", "i3"]
    # Queries carry the user's features; the item's are empty bags.
    assert np.diff(evaluation.queries.sparse["item_id"].offsets).tolist() == [0, 0, 0]
    assert np.diff(retrieval.catalogue.sparse["user_id"].offsets).tolist() == [0] * 4


def _assert_no_leakage(path: Path, retrieval: RetrievalData, train, events: list[tuple[str, str, float]], history: int) -> None:
    """Every training row's history is the user's latest training events strictly before it, and no
    held-out event reaches a training row."""
    users = sorted({u for u, _, _ in events})
    items = sorted({i for _, i, _ in events})
    held = set()
    for queries in filter(None, (retrieval.val, retrieval.eval)):
        catalogue = retrieval.items.to_pylist()
        for q, user in enumerate(queries.users.to_pylist()):
            for t in queries.targets.values[queries.targets.offsets[q] : queries.targets.offsets[q + 1]]:
                held.add((user, catalogue[t]))
    time_of = {(u, i): (t, n) for n, (u, i, t) in enumerate(events)}
    row_users = _names(train.sparse["user_id"].values, users)
    row_items = _names(train.sparse["item_id"].values, items)
    trained = set(zip(row_users, row_items))
    assert not trained & held
    histories = _bags(train.sparse[HISTORY_FEATURE], range(train.num_rows), items)
    for user, item, bag in zip(row_users, row_items, histories):
        earlier = sorted((time_of[(user, i)], i) for (u, i) in trained if u == user and time_of[(u, i)] < time_of[(user, item)])
        assert bag == [i for _, i in earlier][-history:] if history else bag == []
        assert not {(user, i) for i in bag} & held


@pytest.mark.parametrize("method", list(SplitMethod))
def test_no_held_out_or_later_event_reaches_a_training_history(tmp_path: Path, method: SplitMethod) -> None:
    rng = np.random.default_rng(3)
    events, seen = [], set()
    while len(events) < 600:
        user, item = f"u{rng.integers(40)}", f"i{rng.integers(60)}"
        if (user, item) not in seen:  # one event per pair, so an item names its event
            seen.add((user, item))
            events.append((user, item, float(rng.integers(1000))))
    path = _log(tmp_path / "log.inter", events)
    splits = _splits(path, split=method, history_length=4, eval_fraction=0.1, val_fraction=0.1)
    _assert_no_leakage(path, splits.retrieval, splits.train, events, 4)
    assert splits.retrieval.eval.num_queries > 0 and splits.retrieval.val.num_queries > 0


def test_a_fixed_evaluation_file_counts_cold_users_and_unknown_items(tmp_path: Path) -> None:
    path = _log(tmp_path / "train.inter", [("a", "i1", 1), ("a", "i2", 2), ("b", "i1", 1), ("b", "i3", 2)])
    test = _log(tmp_path / "test.inter", [("a", "i3", 3), ("a", "i9", 4), ("z", "i1", 1), ("b", "i2", 3)])
    splits = _splits(path, eval_path=str(test), val_fraction=0)
    report = splits.retrieval.report
    assert report["eval_cold_users"] == 1 and report["eval_unknown_target_items"] == 1
    assert splits.retrieval.val is None and splits.train.num_rows == 4
    assert splits.retrieval.eval.users.to_pylist() == ["a", "b"]


def test_filters_are_applied_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "rated.inter"
    rows = [("a", "i1", 5), ("a", "i2", 1), ("a", "i3", 4), ("b", "i1", 4), ("b", "i3", 5), ("c", "i1", 5), ("a", "i1", 4)]
    path.write_text("user_id:token\titem_id:token\trating:float\n" + "".join(f"{u}\t{i}\t{r}\n" for u, i, r in rows))
    splits = _splits(path, min_rating=4, min_user_events=2, min_item_events=2)
    report = splits.retrieval.report
    assert report["below_min_rating"] == 1  # a/i2
    assert report["k_core_dropped"] == 1  # c has one event left
    assert report["duplicate_events"] == 1  # a/i1 twice
    timeless = _log(tmp_path / "plain.inter", [("a", "i1", 1)])
    with pytest.raises(ConfigError, match="min_rating is set but .* has no rating column"):
        _splits(timeless.with_name("plain.inter"), min_rating=4)


def test_too_short_logs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no evaluation query"):
        _splits(_log(tmp_path / "one.inter", [("a", "i1", 1), ("b", "i2", 1)]))


def test_movielens_with_side_features() -> None:
    ml = SHARED_DATA / "movielens_100k"
    splits = _splits(ml / "ml-100k.inter", user_features=str(ml / "ml-100k.user"), item_features=str(ml / "ml-100k.item"))
    retrieval = splits.retrieval
    assert retrieval.user_features == ("user_id", "age", "gender", "occupation", "zip_code", HISTORY_FEATURE)
    assert retrieval.item_features == ("item_id", "movie_title", "release_year", "class")
    assert retrieval.eval.num_queries == 940 and retrieval.num_items == 1678
    assert retrieval.report["rows_without_user_features"] == 0
    assert splits.train.num_rows + retrieval.report["val_queries"] + retrieval.report["eval_queries"] + 4 == 100_000


def test_history_of_others_holds_every_other_training_event_and_nothing_held_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    pairs = sorted({(f"u{rng.integers(30)}", f"i{rng.integers(50)}") for _ in range(500)})
    events = [(*pairs[k], float(n)) for n, k in enumerate(rng.permutation(len(pairs)))]
    splits = _splits(_log(tmp_path / "log.inter", events), history=HistoryKind.OTHERS, history_length=5)
    train, retrieval = splits.train, splits.retrieval
    users = sorted({u for u, _, _ in events})
    items = sorted({i for _, i, _ in events})
    row_users = _names(train.sparse["user_id"].values, users)
    row_items = _names(train.sparse["item_id"].values, items)
    trained = list(zip(row_users, row_items))
    order = {(u, i): t for u, i, t in events}
    catalogue = retrieval.items.to_pylist()
    held = {(u, catalogue[t]) for q in (retrieval.val, retrieval.eval) for k, u in enumerate(q.users.to_pylist())
            for t in q.targets.values[q.targets.offsets[k] : q.targets.offsets[k + 1]]}
    for (user, item), bag in zip(trained, _bags(train.sparse[HISTORY_FEATURE], range(train.num_rows), items)):
        others = sorted((order[(u, i)], i) for u, i in trained if u == user and i != item)
        assert bag == [i for _, i in others][-5:]
        assert not {(user, i) for i in bag} & held
