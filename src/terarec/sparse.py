"""Jagged (variable-length) ID arrays, the sparse input of every embedding layer.

A sparse feature holds, per example, a *bag* of IDs: one ID for a one-hot feature (user id),
several for a multi-hot one (recently watched items), none when the value is missing.
Following TorchRec, a batch of bags is stored in CSR form: ``values`` concatenates the bags
and ``offsets`` (length ``B + 1``) marks where each begins, so bag ``i`` is
``values[offsets[i]:offsets[i + 1]]``.

This module sits below both :mod:`terarec.data` and :mod:`terarec.embedding`, which share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["JaggedTensor", "concat_bags"]


@dataclass(frozen=True)
class JaggedTensor:
    """A batch of ID bags in CSR form.

    Args:
        values (Tensor): the IDs of all bags, concatenated; ``int64``.
        offsets (Tensor): where each bag starts in ``values``, then ``len(values)``; ``int64``,
            non-decreasing, ``offsets[0] == 0``.
        weights (Tensor, optional): each ID's ``float32`` value, which scales its embedding
            (libFM's ``idx:val``); ``None`` when every value is 1. Default: ``None``

    Shape:
        - values: :math:`(N)`, ``N`` IDs in the batch
        - offsets: :math:`(B + 1)`, ``B`` bags (examples)

    Raises:
        TypeError: if either tensor is not ``int64``.
        ValueError: if the shapes or the first/last offset disagree with ``values``.

    Example::

        >>> # bag 0: [11, 12]   bag 1: []   bag 2: [13]
        >>> jt = JaggedTensor(torch.tensor([11, 12, 13]), torch.tensor([0, 2, 2, 3]))
        >>> jt.batch_size, jt.lengths().tolist()
        (3, [2, 0, 1])
        >>> JaggedTensor.from_lengths(torch.tensor([11, 12, 13]), torch.tensor([2, 0, 1])).offsets.tolist()
        [0, 2, 2, 3]
    """

    values: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("values", "offsets"):
            tensor = getattr(self, name)
            if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.int64:
                got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise TypeError(f"JaggedTensor.{name} must be an int64 tensor, got {got}")
            if tensor.dim() != 1:
                raise ValueError(f"JaggedTensor.{name} must be 1-D, got shape {tuple(tensor.shape)}")
        if self.offsets.numel() == 0:
            raise ValueError("JaggedTensor.offsets must hold at least one element (B + 1 with B >= 0)")
        first, last = int(self.offsets[0]), int(self.offsets[-1])
        if first != 0 or last != self.values.numel():
            raise ValueError(
                f"JaggedTensor.offsets must run from 0 to len(values)={self.values.numel()}, "
                f"got {first}..{last}"
            )
        if self.weights is not None and (
            not isinstance(self.weights, torch.Tensor)
            or self.weights.dtype != torch.float32
            or self.weights.shape != self.values.shape
        ):
            raise ValueError(f"JaggedTensor.weights must be a float32 tensor shaped like values {tuple(self.values.shape)}")

    @classmethod
    def from_lengths(cls, values: torch.Tensor, lengths: torch.Tensor) -> JaggedTensor:
        """Builds the CSR form from per-bag ``lengths`` of shape :math:`(B)`."""
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
        torch.cumsum(lengths.to(torch.int64), dim=0, out=offsets[1:])
        return cls(values, offsets)

    @property
    def batch_size(self) -> int:
        """``B``, the number of bags."""
        return self.offsets.numel() - 1

    def lengths(self) -> torch.Tensor:
        """The size of each bag, shape :math:`(B)`."""
        return self.offsets[1:] - self.offsets[:-1]


def concat_bags(features: Sequence[JaggedTensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The bags of several features one after another, as one table that several features
    share reads them: ``values`` concatenated, each feature's offsets shifted past the previous.

    Shape:
        - output: ``values`` :math:`(\\sum N_f)`, ``offsets`` :math:`(F B + 1)`

    Example::

        >>> a = JaggedTensor(torch.tensor([1, 2]), torch.tensor([0, 2, 2]))
        >>> b = JaggedTensor(torch.tensor([3]), torch.tensor([0, 0, 1]))
        >>> [t.tolist() for t in concat_bags([a, b])]
        [[1, 2, 3], [0, 2, 2, 2, 3]]
    """
    if len(features) == 1:
        return features[0].values, features[0].offsets
    values = torch.cat([f.values for f in features])
    parts, base = [], 0
    for f in features:
        parts.append(f.offsets[:-1] + base)
        base += f.values.numel()
    parts.append(torch.tensor([base], dtype=torch.int64))
    return values, torch.cat(parts)
