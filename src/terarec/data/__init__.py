"""The data layer: schemas, readers of real formats, prepared columnar data, synthetic data
with a known click model, dataset statistics and a sharded, prefetching batch loader.

Typical use::

    splits = load_splits(config.data)                  # train / eval ColumnarData + stats
    loader = BatchLoader(splits.train, batch_size=2048, rank=rank, world_size=world_size)
    for batch in loader.iterate(epoch):                # Batch: labels, dense, sparse JaggedTensors
        ...
"""

from terarec.data.config import (
    CRITEO_1TB_CARDINALITIES,
    DataConfig,
    HistoryKind,
    InteractionsConfig,
    SplitMethod,
    SyntheticConfig,
)
from terarec.data.hashing import MISSING_ID, hash_string, hash_strings
from terarec.data.loader import BatchLoader, gather_jagged
from terarec.data.prepared import FORMAT_VERSION, open_prepared, prepare, read_prepared_stats
from terarec.data.groups import GroupedBatchLoader, group_boundary, group_rows, take_rows
from terarec.data.negatives import NegativeSamplingLoader, concat_batches
from terarec.data.records import RecordError, read_features, records_to_data
from terarec.data.interactions import InteractionLog, SideFeatures, read_interactions, read_side_features
from terarec.data.retrieval import HISTORY_FEATURE, QuerySet, RetrievalData, build_retrieval_data
from terarec.data.readers import CRITEO_COLUMNS, iter_blocks, read_files, resolve_schema
from terarec.data.sources import DataSplits, load_dataset, load_splits, prepare_path, resolve_path
from terarec.data.stream import StreamDirectory, StreamListing, read_stream_file
from terarec.data.stats import DatasetStats, StatsAccumulator, compute_stats, estimate_distinct
from terarec.data.synthetic import SyntheticDataset, generate_synthetic
from terarec.data.types import (
    BadRowPolicy,
    Batch,
    ColumnarData,
    DataFormat,
    DenseTransform,
    JaggedColumn,
    Schema,
)

__all__ = [
    "CRITEO_1TB_CARDINALITIES",
    "CRITEO_COLUMNS",
    "FORMAT_VERSION",
    "GroupedBatchLoader",
    "HISTORY_FEATURE",
    "HistoryKind",
    "MISSING_ID",
    "NegativeSamplingLoader",
    "BadRowPolicy",
    "Batch",
    "BatchLoader",
    "ColumnarData",
    "DataConfig",
    "DataFormat",
    "DataSplits",
    "DatasetStats",
    "DenseTransform",
    "InteractionLog",
    "InteractionsConfig",
    "JaggedColumn",
    "QuerySet",
    "RecordError",
    "RetrievalData",
    "Schema",
    "SideFeatures",
    "SplitMethod",
    "StatsAccumulator",
    "StreamDirectory",
    "StreamListing",
    "SyntheticConfig",
    "SyntheticDataset",
    "build_retrieval_data",
    "compute_stats",
    "concat_batches",
    "estimate_distinct",
    "gather_jagged",
    "generate_synthetic",
    "group_boundary",
    "group_rows",
    "hash_string",
    "hash_strings",
    "iter_blocks",
    "load_dataset",
    "load_splits",
    "read_features",
    "records_to_data",
    "open_prepared",
    "prepare",
    "prepare_path",
    "read_files",
    "read_interactions",
    "read_prepared_stats",
    "read_side_features",
    "read_stream_file",
    "resolve_path",
    "resolve_schema",
    "take_rows",
]
