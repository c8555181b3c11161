import numpy as np
import pyarrow as pa
import pytest

from terarec.data import MISSING_ID, hash_string, hash_strings


def reference(values):
    return np.array([hash_string("" if v is None else v) for v in values], dtype=np.int64)


def test_known_vectors():
    # Published FNV-1a 64 test vectors.
    assert hash_string("") == np.uint64(0xCBF29CE484222325).astype(np.int64)
    assert np.int64(hash_string("a")).view(np.uint64) == 0xAF63DC4C8601EC8C
    assert np.int64(hash_string("foobar")).view(np.uint64) == 0x85944171F73967E8
    assert MISSING_ID == hash_string("")


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string()])
def test_kernel_matches_reference_with_nulls_and_slices(arrow_type):
    rng = np.random.default_rng(0)
    values = [None if rng.random() < 0.2 else "".join(rng.choice(list("abé9 中"), rng.integers(0, 12)))
              for _ in range(500)]
    array = pa.array(values, arrow_type)
    assert (hash_strings(array) == reference(values)).all()
    sliced = array.slice(37, 101)
    assert (hash_strings(sliced) == reference(values[37:138])).all()
    chunked = pa.chunked_array([array.slice(0, 3), array.slice(3, 0), array.slice(3)], arrow_type)
    assert (hash_strings(chunked) == reference(values)).all()


def test_numbers_hash_like_their_text():
    assert (hash_strings(pa.array([123, None, -7])) == reference(["123", None, "-7"])).all()
    assert (hash_strings(pa.array([1.5, 2.0])) == hash_strings(pa.array(["1.5", "2"]))).all()
    assert hash_strings(pa.array([], pa.string())).shape == (0,)


def test_rejects_non_arrow():
    with pytest.raises(TypeError, match="pyarrow"):
        hash_strings(["a"])  # type: ignore[arg-type]
