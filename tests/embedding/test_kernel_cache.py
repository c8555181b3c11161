"""A cached kernel recompiles when a helper it compiles in changes in another file."""

import os
import subprocess
import sys
from pathlib import Path

HELPERS = """
import numba

@numba.njit(cache=True, inline="always")
def version():
    return {version}
"""

KERNELS = """
import numba
import helpers
from helpers import version
from terarec.embedding._kernel_cache import stamp_with_sources

@numba.njit(cache=True)
def kernel():
    return version()

{stamp}
"""


def _run(directory: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(directory), "NUMBA_CACHE_DIR": str(directory / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", "import kernels; print(kernels.kernel())"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def _edit_helper_only(directory: Path, stamped: bool) -> tuple[int, int]:
    """The kernel's result before and after an edit of the helper's file alone, each in a new
    process that loads the kernel from numba's cache when it can."""
    directory.mkdir()
    stamp = "stamp_with_sources(globals(), helpers)" if stamped else ""
    (directory / "kernels.py").write_text(KERNELS.format(stamp=stamp))
    (directory / "helpers.py").write_text(HELPERS.format(version=1))
    before = _run(directory)
    (directory / "helpers.py").write_text(HELPERS.format(version=2))
    return before, _run(directory)


def test_stamped_kernel_sees_a_changed_helper(tmp_path: Path) -> None:
    assert _edit_helper_only(tmp_path / "stamped", stamped=True) == (1, 2)


def test_unstamped_kernel_runs_the_stale_helper(tmp_path: Path) -> None:
    # Numba's own behaviour, which the stamp exists for: if numba ever keys on helpers
    # itself, this fails and the stamp can go.
    assert _edit_helper_only(tmp_path / "plain", stamped=False) == (1, 1)


def test_terarec_kernels_are_stamped() -> None:
    from terarec.embedding import (
        _dynamic_kernels,
        _frozen_kernels,
        _fused_kernels,
        _init_kernels,
        _pooling_kernels,
        _tiered_kernels,
    )

    def names(*modules: str) -> list[str]:
        return [f"terarec.embedding.{module}" for module in modules]

    expected = {
        _pooling_kernels.pool_sum: names("_bf16", "_compile_flags", "_prefetch"),
        _fused_kernels.prepare_group: names(
            "_pooling_kernels", "_update_kernels", "_hashing", "_prefetch", "_compile_flags", "_dedupe_kernels", "_bf16"
        ),
        _tiered_kernels.plan_batch: names("_hashing", "_init_kernels", "_bf16", "_libc"),
        _frozen_kernels.fetch_rows: names("_libc"),
        _init_kernels.init_rows_at: names("_hashing", "_bf16"),
        _dynamic_kernels.assign_rows: names("_hashing", "_bf16"),
    }
    for kernel, sources in expected.items():
        stamp = kernel._cache._cache_file._source_stamp
        assert [name for name, _ in stamp[1]] == sources, kernel
