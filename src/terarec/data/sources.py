"""Where a run's examples come from: path forms, format inference and the train/eval split.

A data path is a file, a comma-separated list of files, a glob, or a directory: a prepared
directory (it holds ``meta.json``) or else every data file inside it, sorted by name
(``.tsv``, ``.csv`` and ``.parquet`` files; ``.txt`` files only when there are none of those).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terarec.data.config import DataConfig
from terarec.data.derived import derive_features
from terarec.data.prepared import open_prepared, prepare
from terarec.data.groups import group_boundary, group_rows
from terarec.data.readers import read_files
from terarec.data.retrieval import RetrievalData, build_retrieval_data
from terarec.data.stats import DatasetStats, compute_stats
from terarec.data.synthetic import generate_synthetic
from terarec.data.types import ColumnarData, DataFormat
from terarec.errors import ConfigError, DataError

__all__ = ["DataSplits", "infer_format", "load_dataset", "load_splits", "prepare_path", "resolve_path"]

_SUFFIX_FORMATS = {".parquet": DataFormat.PARQUET, ".csv": DataFormat.CSV,
                   ".tsv": DataFormat.CRITEO, ".txt": DataFormat.CRITEO,
                   ".libfm": DataFormat.LIBFM, ".libsvm": DataFormat.LIBFM,
                   ".inter": DataFormat.INTERACTIONS}


def infer_format(path: Path) -> DataFormat | None:
    """The format a data file's suffix names, or ``None`` for a suffix of no data format.

    Example::

        >>> infer_format(Path("day_0.tsv")), infer_format(Path("notes.md"))
        (<DataFormat.CRITEO: 'criteo'>, None)
    """
    return _SUFFIX_FORMATS.get(Path(path).suffix.lower())


@dataclass(frozen=True)
class DataSplits:
    """The training and evaluation data of a run.

    Args:
        train (ColumnarData): training examples.
        eval (ColumnarData): evaluation examples.
        stats (DatasetStats): statistics of ``train``.
        val (ColumnarData, optional): validation examples, or ``None`` when there are none.
        eval_probabilities (np.ndarray, optional): true click probabilities of ``eval``
            (synthetic data only), else ``None``.
        cardinalities (dict[str, int], optional): distinct possible IDs per feature (synthetic
            data only), else ``None``.
        retrieval (RetrievalData, optional): an interaction log's catalogue and queries; ``val``
            and ``eval`` are then its queries' rows. Default: ``None``
    """

    train: ColumnarData
    eval: ColumnarData
    stats: DatasetStats
    val: ColumnarData | None = None
    eval_probabilities: np.ndarray | None = None
    cardinalities: dict[str, int] | None = None
    retrieval: RetrievalData | None = None


def _expand(path: str) -> list[Path]:
    found: list[Path] = []
    for part in (p.strip() for p in path.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(part, recursive=True) if Path(m).is_file())
            if not matches:
                raise DataError(f"{part}: the glob matches no files")
            found.extend(matches)
            continue
        candidate = Path(part)
        if not candidate.exists():
            raise DataError(f"{part}: no such file or directory")
        if candidate.is_dir() and not (candidate / "meta.json").is_file():
            files = sorted(p for p in candidate.iterdir() if p.is_file() and not p.name.startswith("."))
            inside = [p for p in files if p.suffix.lower() in (".tsv", ".csv", ".parquet", ".libfm", ".libsvm")]
            if not inside:  # .txt (Criteo's day_N.txt) only when nothing else: READMEs are .txt too
                inside = [p for p in files if p.suffix.lower() == ".txt"]
            if not inside:
                raise DataError(f"{part}: directory holds no data files ({', '.join(_SUFFIX_FORMATS)}) "
                                f"and no meta.json of a prepared dataset")
            found.extend(inside)
        else:
            found.append(candidate)
    if not found:
        raise DataError(f"{path!r}: no data path given")
    return found


def resolve_path(path: str, fmt: DataFormat | None = None) -> tuple[list[Path], DataFormat]:
    """The files (or prepared directories) a data path names, and their format.

    Args:
        path (str): a file, comma-separated files, a glob or a directory.
        fmt (DataFormat, optional): the format; ``None`` infers it from the directory or the
            file suffixes. Default: ``None``

    Raises:
        DataError: if a named path does not exist or a glob or directory holds no data files.
        ConfigError: if the format cannot be inferred (unknown or mixed suffixes).
    """
    paths = _expand(path)
    prepared = [p.is_dir() for p in paths]
    if all(prepared):
        inferred: DataFormat | None = DataFormat.PREPARED
    elif any(prepared):
        raise ConfigError(f"data.path {path!r} mixes prepared directories and raw files")
    else:
        kinds = {infer_format(p) for p in paths}
        inferred = kinds.pop() if len(kinds) == 1 else None
    if fmt is None:
        if inferred is None:
            suffixes = sorted({p.suffix or "(none)" for p in paths})
            raise ConfigError(f"data.format cannot be inferred from {path!r} (suffixes {suffixes}); "
                              f"pass --format criteo|csv|parquet|libfm|prepared")
        fmt = inferred
    elif (fmt is DataFormat.PREPARED) != (inferred is DataFormat.PREPARED):
        raise ConfigError(f"data.format is {fmt.value!r} but {path!r} is "
                          f"{'a prepared directory' if inferred is DataFormat.PREPARED else 'raw files'}")
    return paths, fmt


def load_dataset(path: str, config: DataConfig) -> ColumnarData:
    """Loads the examples a data path names (prepared directories are memory-mapped), with the
    derived features ``config`` declares (:func:`~terarec.data.derived.derive_features`).

    Args:
        path (str): see :func:`resolve_path`.
        config (DataConfig): format and reading options.
    """
    paths, fmt = resolve_path(path, config.format)
    if fmt is DataFormat.PREPARED:
        parts = [open_prepared(p) for p in paths]
        # several prepared directories: copied into RAM
        data = ColumnarData.concat(parts) if len(parts) > 1 else parts[0]
    else:
        data = read_files(paths, fmt, config)
    data = derive_features(data, config)
    if config.group_col is not None:
        if fmt is DataFormat.PREPARED:
            raise ConfigError("data.group_col: grouped data is read from its raw CSV/Parquet files, not prepared")
        data = group_rows(data, config.group_col)
    return data


def prepare_path(config: DataConfig, out_dir: Path, *, overwrite: bool = False) -> DatasetStats:
    """Prepares the raw files ``config.path`` names into ``out_dir`` (see :func:`terarec.data.prepare`).

    Args:
        config (DataConfig): ``path`` (required) and the reading options.
        out_dir (Path): the prepared directory to create.
        overwrite (bool, optional): replace an existing ``out_dir``. Default: ``False``

    Raises:
        ConfigError: if ``config.path`` is unset or already a prepared directory.
    """
    if config.path is None:
        raise ConfigError("data.path is required to prepare data")
    paths, fmt = resolve_path(config.path, config.format)
    if fmt is DataFormat.PREPARED:
        raise ConfigError(f"data.path {config.path!r} is already prepared")
    return prepare(paths, fmt, config, Path(out_dir), overwrite=overwrite)


def load_splits(config: DataConfig, stats: DatasetStats | None = None) -> DataSplits:
    """The training and evaluation data ``config`` describes.

    Synthetic data when ``config.path`` is ``None`` (:func:`generate_synthetic`); else the
    examples of ``config.path``, evaluated on ``config.eval_path`` or, without one, on the last
    ``config.eval_fraction`` of the rows (logs are in time order, so this evaluates on the future).
    Validation comes from ``config.val_path`` or, without one, the last ``config.val_fraction``
    of the training rows: the most recent before the evaluation period, and a view, not a copy,
    of memory-mapped data. Statistics are those of the training rows left.

    Args:
        config (DataConfig): the ``data`` section of the run's configuration.
        stats (DatasetStats, optional): the training split's statistics when they are known
            already (a rank that got them from the rank that computed them); ``None`` computes
            them, one pass over the training split. Default: ``None``

    Example::

        >>> from terarec.data import SyntheticConfig
        >>> splits = load_splits(DataConfig(synthetic=SyntheticConfig(num_examples=100, num_eval_examples=20)))
        >>> splits.train.num_rows, splits.val.num_rows, splits.eval.num_rows, splits.stats.num_rows
        (90, 10, 20, 90)
    """
    if config.path is None:
        if config.eval_path is not None or config.val_path is not None:
            raise ConfigError("data.eval_path or data.val_path is set but data.path is not: give data.path too")
        ds = generate_synthetic(config.synthetic, config.dense_transform)
        train, val = _carve_validation(derive_features(ds.train, config), config, "synthetic data")
        evaluation = derive_features(ds.eval, config)
        return DataSplits(train, evaluation, stats or compute_stats(train), val, ds.eval_probabilities, ds.cardinalities)
    paths, fmt = resolve_path(config.path, config.format)
    if fmt is DataFormat.INTERACTIONS:
        return _load_interactions(config, paths, stats)
    data = load_dataset(config.path, config)
    if config.eval_path is not None:
        train, evaluation = data, _load_alike(config.eval_path, config, data, config.path)
    else:
        train, evaluation = _split_tail(data, config.eval_fraction, "data.eval_fraction", config.path, "evaluation")
    train, val = _carve_validation(train, config, config.path)
    return DataSplits(train, evaluation, stats if stats is not None else compute_stats(train), val)


def _load_interactions(config: DataConfig, paths: list[Path], stats: DatasetStats | None) -> DataSplits:
    if config.val_path is not None:
        raise ConfigError("data.val_path: an interaction log carves validation out of data.path (data.interactions.split)")
    if config.bucketize or config.crosses:
        raise ConfigError("data.bucketize and data.crosses do not apply to an interaction log")
    eval_paths = resolve_path(config.eval_path, config.format)[0] if config.eval_path is not None else None
    train, retrieval = build_retrieval_data(config, paths, eval_paths)
    val = retrieval.val.queries if retrieval.val is not None else None
    return DataSplits(train, retrieval.eval.queries, stats or compute_stats(train), val, retrieval=retrieval)


def _load_alike(path: str, config: DataConfig, like: ColumnarData, source: str) -> ColumnarData:
    """The data at ``path``, which must have ``like``'s columns."""
    loaded = load_dataset(path, config)
    if loaded.schema != like.schema:
        raise DataError(f"{path}: columns differ from {source}: {loaded.schema.to_dict()} vs {like.schema.to_dict()}")
    return loaded


def _split_tail(
    data: ColumnarData, fraction: float, key: str, source: str, purpose: str
) -> tuple[ColumnarData, ColumnarData]:
    """``data`` less its last ``fraction`` of rows, and those rows (views, not copies); grouped
    data is cut between groups, the tail holding at most ``fraction`` of the rows."""
    num_tail = int(round(data.num_rows * fraction))
    cut = data.num_rows - num_tail
    if data.groups is not None:
        cut = group_boundary(np.asarray(data.groups), cut)
    if cut >= data.num_rows or cut < 1:
        raise DataError(f"{source}: {data.num_rows} rows are too few to hold out {key}={fraction} for {purpose}")
    head, tail = data.slice_rows(0, cut), data.slice_rows(cut, data.num_rows)
    head.skipped_rows = data.skipped_rows
    return head, tail


def _carve_validation(train: ColumnarData, config: DataConfig, source: str) -> tuple[ColumnarData, ColumnarData | None]:
    """The training rows left and the validation data (``val_path``, or the training tail)."""
    if config.val_path is not None:
        return train, _load_alike(config.val_path, config, train, source)
    if config.val_fraction == 0:
        return train, None
    return _split_tail(train, config.val_fraction, "data.val_fraction", source, "validation (or set it to 0)")
