"""MXNet's NDArray-list files (GluonCV's .params) read without MXNet: every array version, dtypes, and the
errors that name the file."""

import numpy as np
import pytest

from bof.utils.mxnet_params import is_mxnet_params, read_mxnet_params
from tests.helpers.generated import write_mxnet_params

ARRAYS = {
    "conv1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
    "bn1.gamma": np.array([0.5, -1.0], np.float32),
    "half": np.array([[1.5, 2.0]], np.float16),
    "double": np.array([3.25], np.float64),
    "index": np.array([7, -8], np.int32),
}


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_every_array_version_reads_back_names_shapes_dtypes_and_values(tmp_path, version):
    path = write_mxnet_params(tmp_path / "x.params", ARRAYS, version=version)
    assert is_mxnet_params(path)
    arrays = read_mxnet_params(path)
    assert list(arrays) == list(ARRAYS)
    for name, array in ARRAYS.items():
        assert arrays[name].dtype == array.dtype and np.array_equal(arrays[name], array), name


def test_the_format_is_told_by_its_magic_not_its_suffix(tmp_path):
    path = write_mxnet_params(tmp_path / "weights.pt", ARRAYS)
    other = tmp_path / "other.params"
    other.write_bytes(b"\0" * 64)
    assert is_mxnet_params(path) and not is_mxnet_params(other)
    with pytest.raises(ValueError, match=r"other.params: not an MXNet .params file"):
        read_mxnet_params(other)


@pytest.mark.parametrize("cut", [4, 10, 200])
def test_a_truncated_file_names_the_file_and_what_was_cut(tmp_path, cut):
    path = write_mxnet_params(tmp_path / "x.params", ARRAYS)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(ValueError, match=r"x.params: truncated MXNet .params file: .* needs"):
        read_mxnet_params(path)


def test_an_unsupported_dtype_is_named(tmp_path):
    path = write_mxnet_params(tmp_path / "x.params", {"w": np.zeros(3, np.float32)})
    data = bytearray(path.read_bytes())
    flag_at = 8 * 3 + 4 + 4 + 4 + 8 + 8  # header, count, magic, stype, ndim, dim, context
    data[flag_at : flag_at + 4] = np.array([12], "<i4").tobytes()  # bfloat16
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"x.params: array 0 has dtype flag 12 \(bfloat16\)"):
        read_mxnet_params(path)


def test_trailing_bytes_and_a_wrong_array_magic_are_errors(tmp_path):
    path = write_mxnet_params(tmp_path / "x.params", ARRAYS)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="1 bytes after the last name"):
        read_mxnet_params(path)
    data = bytearray(write_mxnet_params(path, ARRAYS).read_bytes())
    data[24:28] = np.array([0xDEADBEEF], "<u4").tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="array 0 starts with 0xDEADBEEF"):
        read_mxnet_params(path)
