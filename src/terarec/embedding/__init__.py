"""The embedding layer: tables that own their rows and optimizer state and update themselves.

See :class:`EmbeddingCollection` for the model-facing API and :class:`EmbeddingTable` for the
contract every table kind (fixed, dynamic, tiered, and shards of them) implements.
:class:`DeepHashCollection` holds the kind without rows, Deep Hash Embeddings, which trains
with the dense network instead.
"""

from terarec.embedding.collection import (
    EmbeddingCollection,
    PooledEmbeddings,
    PreparedBatch,
)
from terarec.embedding.config import (
    TIERED_SLOT_BYTES,
    DataType,
    DynamicConfig,
    EmbeddingTableConfig,
    EvictionPolicy,
    InitConfig,
    InitType,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
    TieredConfig,
)
from terarec.embedding.deep_hash import (
    DeepHashCollection,
    DeepHashConfig,
    DeepHashEmbedding,
    DeepHashTableConfig,
    HashTransform,
)
from terarec.embedding.dynamic import DynamicRowMapper, DynamicTableStats
from terarec.embedding.dynamic_table import DynamicTable
from terarec.embedding.frozen import FrozenCollection, FrozenTable, export_tables
from terarec.embedding.fused import PreparedGroup, TableGroup
from terarec.embedding.memory import (
    MemoryEstimate,
    available_memory_bytes,
    check_disk,
    check_memory,
    format_bytes,
    free_disk_bytes,
)
from terarec.embedding.row_mapping import HashedRowMapper, RowMapper, RowMapping
from terarec.embedding.storage import RamRowStorage, RowStorage
from terarec.embedding.table import FixedTable, RowTable
from terarec.embedding.tiered import TieredRowStorage, TieredStats
from terarec.embedding.types import EmbeddingTable, PreparedIds

__all__ = [
    "TIERED_SLOT_BYTES",
    "DataType",
    "DeepHashCollection",
    "DeepHashConfig",
    "DeepHashEmbedding",
    "DeepHashTableConfig",
    "DynamicConfig",
    "DynamicRowMapper",
    "DynamicTable",
    "DynamicTableStats",
    "EmbeddingCollection",
    "EmbeddingTable",
    "EmbeddingTableConfig",
    "EvictionPolicy",
    "FixedTable",
    "FrozenCollection",
    "FrozenTable",
    "HashTransform",
    "HashedRowMapper",
    "InitConfig",
    "InitType",
    "MemoryEstimate",
    "OptimizerConfig",
    "OptimizerType",
    "PooledEmbeddings",
    "PoolingType",
    "PreparedBatch",
    "PreparedGroup",
    "PreparedIds",
    "RamRowStorage",
    "RowMapper",
    "RowMapping",
    "RowStorage",
    "RowTable",
    "TableGroup",
    "TieredConfig",
    "TieredRowStorage",
    "TieredStats",
    "available_memory_bytes",
    "free_disk_bytes",
    "check_disk",
    "export_tables",
    "check_memory",
    "format_bytes",
]
