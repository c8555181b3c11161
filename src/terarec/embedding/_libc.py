"""libc's file I/O for compiled kernels: ``pread``, ``pwrite`` and ``errno``.

Linked by symbol name, so the kernels that call them can be cached on disk (ctypes function
pointers would force a recompile in every process). A buffer argument is the address NumPy's
``.ctypes.data`` gives, passed as an integer.
"""

from __future__ import annotations

import numba
from numba import types

__all__ = ["errno_value", "pread", "pwrite"]

pread = types.ExternalFunction("pread", types.intp(types.int32, types.uintp, types.uintp, types.int64))
pwrite = types.ExternalFunction("pwrite", types.intp(types.int32, types.uintp, types.uintp, types.int64))
_errno_location = types.ExternalFunction("__errno_location", types.CPointer(types.int32)())


@numba.njit(cache=True, nogil=True, inline="always")
def errno_value():
    """The calling thread's ``errno``."""
    return numba.carray(_errno_location(), (1,))[0]
