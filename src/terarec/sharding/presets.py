"""Built-in models and clusters for planning on paper, such as a 100-trillion-parameter DLRM.

A :class:`ModelPreset` is a set of :class:`~terarec.sharding.types.TableWorkload` s, a dense
network, a batch size and the :class:`ClusterSpec` it is meant for; ``terarec plan --preset
100t`` plans it without any data or config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from terarec.embedding import EmbeddingTableConfig, OptimizerConfig, OptimizerType
from terarec.errors import ConfigError
from terarec.models import DLRMConfig, InputSpec, ModelConfig, ModelType, build_model
from terarec.sharding.config import CommPrecision
from terarec.sharding.types import DenseWorkload, TableWorkload, Topology

__all__ = ["PRESETS", "ClusterSpec", "ModelPreset", "dlrm_workload", "get_preset"]


@dataclass(frozen=True)
class ClusterSpec:
    """The machines of a cluster; every figure but the network's is per rank.

    Args:
        ram_per_machine (int): RAM bytes of one machine.
        ssd_per_machine (int): local SSD bytes of one machine.
        network_gbps (float): one machine's network link, Gbit/s per direction.
        ranks_per_machine (int, optional): training processes per machine (e.g. one per
            CPU socket). Default: ``2``
        memory_bandwidth (float, optional): bytes/s of random row gathers per rank. Default: ``20e9``
        ssd_bandwidth (float, optional): bytes/s of random 4 KiB reads and writes per rank. Default: ``3e9``
        dense_flops (float, optional): sustained FLOP/s per rank on the dense network. Default: ``1.5e12``
        intra_host_bandwidth (float, optional): bytes/s between ranks of one machine. Default: ``10e9``
        collective_latency (float, optional): seconds per collective per tree level. Default: ``3e-5``
        exchange_rate (float, optional): pooled values/s one rank packs for the all-to-all and
            adds back into place: the gather rate over about 14 bytes per value.
            Default: ``1.5e9``
        conversion_rate (float, optional): values/s one rank converts to and from bf16 or fp16,
            about 10 times the packing rate. Default: ``1.5e10``

    Example::

        >>> ClusterSpec(ram_per_machine=1 << 40, ssd_per_machine=8 << 40, network_gbps=100).topology(4).world_size
        8
    """

    ram_per_machine: int
    ssd_per_machine: int
    network_gbps: float
    ranks_per_machine: int = 2
    memory_bandwidth: float = 20e9
    ssd_bandwidth: float = 3e9
    dense_flops: float = 1.5e12
    intra_host_bandwidth: float = 10e9
    collective_latency: float = 3e-5
    exchange_rate: float = 1.5e9
    conversion_rate: float = 1.5e10

    def topology(self, num_machines: int) -> Topology:
        """``num_machines`` of these machines as a :class:`Topology`."""
        per = self.ranks_per_machine
        return Topology(
            world_size=num_machines * per,
            ram_per_rank=self.ram_per_machine // per,
            ssd_per_rank=self.ssd_per_machine // per,
            ranks_per_host=per,
            network_bandwidth=self.network_gbps * 1e9 / 8,
            intra_host_bandwidth=self.intra_host_bandwidth,
            memory_bandwidth=self.memory_bandwidth,
            ssd_bandwidth=self.ssd_bandwidth,
            dense_flops=self.dense_flops,
            collective_latency=self.collective_latency,
            exchange_rate=self.exchange_rate,
            conversion_rate=self.conversion_rate,
        )


@dataclass(frozen=True)
class ModelPreset:
    """A model to plan on paper, with the cluster it is meant for.

    Args:
        name (str): the name ``--preset`` takes.
        description (str): one line.
        tables (tuple[TableWorkload, ...]): embedding tables and their bag sizes and skew.
        dense (DenseWorkload): the dense network.
        batch_size (int): examples per rank per step.
        comm_precision (CommPrecision): pooled embeddings on the wire.
        cluster (ClusterSpec): the machines.
    """

    name: str
    description: str
    tables: tuple[TableWorkload, ...]
    dense: DenseWorkload
    batch_size: int
    comm_precision: CommPrecision
    cluster: ClusterSpec

    @property
    def num_parameters(self) -> int:
        """Embedding parameters: rows x dim over every table."""
        return sum(t.config.num_embeddings * t.config.embedding_dim for t in self.tables)


def dlrm_workload(num_dense: int, bottom_mlp: Sequence[int], top_mlp: Sequence[int], spec_dims: Sequence[int]) -> DenseWorkload:
    """The dense workload of a DLRM with these MLPs over ``len(spec_dims)`` features, as the
    model counts it (built on a forked RNG, so callers' random streams are untouched).

    Example::

        >>> dlrm_workload(13, (64,), (128, 64), (16,) * 26).num_parameters
        57361
    """
    config = ModelConfig(type=ModelType.DLRM, dlrm=DLRMConfig(tuple(bottom_mlp), tuple(top_mlp)))
    spec = InputSpec(num_dense, tuple(f"f{i}" for i in range(len(spec_dims))), tuple(spec_dims))
    with torch.random.fork_rng():
        return DenseWorkload.of_model(build_model(config, spec))


def _persia_100t() -> ModelPreset:
    dim = 128
    optimizer = OptimizerConfig(OptimizerType.ROWWISE_ADAGRAD, learning_rate=0.01)

    def table(name: str, rows: float, features: dict[str, float], skew: float) -> TableWorkload:
        config = EmbeddingTableConfig(name, int(rows), dim, tuple(features), optimizer=optimizer)
        return TableWorkload(config, tuple(features.values()), zipf_exponent=skew)

    huge = [
        table("user_id", 3.0e11, {"user_id": 1}, 0.9),
        table("item_id", 1.5e11, {"item_id": 1, "clicked_items": 50, "purchased_items": 20}, 1.1),
        table("user_x_category", 1.2e11, {"user_x_category": 30}, 1.05),
        table("user_x_campaign", 1.0e11, {"user_x_campaign": 10}, 1.05),
        table("query_x_item", 0.8e11, {"query_x_item": 20}, 1.05),
        table("device_x_geo", 0.4e11, {"device_x_geo": 1}, 1.05),
    ]
    small_rows = np.round(np.geomspace(1e2, 1e7, 100)).astype(np.int64)
    small = [table(f"context_{i}", int(rows), {f"context_{i}": 1}, 1.05) for i, rows in enumerate(small_rows)]
    tables = tuple(huge + small)
    num_sparse = sum(t.num_features for t in tables)
    return ModelPreset(
        name="100t",
        description=(
            "a 100-trillion-parameter DLRM at Persia's scale: 6 ID and cross-feature tables of 4e10 to 3e11 rows "
            "(user histories of 50 and 20 items, cross features of 10 to 30 IDs) and 100 context tables of 1e2 "
            "to 1e7 rows, all 128-dim with row-wise Adagrad"
        ),
        tables=tables,
        dense=dlrm_workload(13, (512, 256), (1024, 1024, 512, 256), (dim,) * num_sparse),
        batch_size=4096,
        comm_precision=CommPrecision.BF16,
        cluster=ClusterSpec(ram_per_machine=1 << 40, ssd_per_machine=8 * 10**12, network_gbps=100.0),
    )


PRESETS = {"100t": _persia_100t}
"""Preset builders by name."""


def get_preset(name: str) -> ModelPreset:
    """The built-in preset called ``name``.

    Example::

        >>> preset = get_preset("100t")
        >>> preset.num_parameters >= 10**14, len(preset.tables)
        (True, 106)

    Raises:
        ConfigError: for an unknown name, listing the known ones.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets are: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
