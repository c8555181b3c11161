"""Numba's on-disk kernel cache, made to notice the helpers a kernel compiles in.

Numba keys a cached kernel on its own source file only (a hash of its contents in numba
0.6x, its modification time and size before). A kernel that inlines or calls a jitted helper
of another file keeps that helper's code in its cached machine code, so after an edit or a
``git pull`` that changes only the helper's file it would keep running the old helper.
:func:`stamp_with_sources` folds a hash of the other files into the key of every cached
kernel of a module: any change to their contents recompiles it. Fresh installs were never
affected (no cache yet); an editable install was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from numba.core.registry import CPUDispatcher

__all__ = ["stamp_with_sources"]


def stamp_with_sources(namespace: Mapping[str, object], *sources: ModuleType) -> int:
    """Keys the cached kernels defined in the module whose globals are ``namespace`` on the
    files of ``sources`` as well as their own; returns how many kernels it keyed.

    Call it at the end of the module, before any kernel runs. It sets numba's private
    ``_cache._cache_file._source_stamp`` (numba 0.5x-0.6x); on a numba without it, nothing
    changes and the cache behaves as numba's own.
    """
    extra = tuple(
        (module.__name__, hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()) for module in sources
    )
    keyed = 0
    for value in namespace.values():
        if not isinstance(value, CPUDispatcher) or value.py_func.__module__ != namespace["__name__"]:
            continue
        cache_file = getattr(getattr(value, "_cache", None), "_cache_file", None)
        if cache_file is not None and hasattr(cache_file, "_source_stamp"):
            cache_file._source_stamp = (cache_file._source_stamp, extra)
            keyed += 1
    return keyed
