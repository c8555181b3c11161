"""The embedding layer: tables that own their rows and optimizer state and update themselves.

See :class:`EmbeddingCollection` for the model-facing API and :class:`EmbeddingTable` for the
contract every table kind (fixed now; dynamic, tiered and sharded later) implements.
"""

from terarec.embedding.collection import EmbeddingCollection, PooledEmbeddings, PreparedBatch
from terarec.embedding.fused import PreparedGroup, TableGroup
from terarec.embedding.memory import available_memory_bytes, check_memory, format_bytes
from terarec.embedding.row_mapping import HashedRowMapper, RowMapper
from terarec.embedding.storage import RamRowStorage, RowStorage
from terarec.embedding.table import FixedTable
from terarec.embedding.types import (
    EmbeddingTable,
    EmbeddingTableConfig,
    InitConfig,
    InitType,
    MemoryEstimate,
    OptimizerConfig,
    OptimizerType,
    PoolingType,
    PreparedIds,
)

__all__ = [
    "EmbeddingCollection",
    "EmbeddingTable",
    "EmbeddingTableConfig",
    "FixedTable",
    "HashedRowMapper",
    "InitConfig",
    "InitType",
    "MemoryEstimate",
    "OptimizerConfig",
    "OptimizerType",
    "PoolingType",
    "PooledEmbeddings",
    "PreparedBatch",
    "PreparedGroup",
    "PreparedIds",
    "RamRowStorage",
    "RowMapper",
    "RowStorage",
    "TableGroup",
    "available_memory_bytes",
    "check_memory",
    "format_bytes",
]
