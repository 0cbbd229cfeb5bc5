"""MXNet's NDArray-list files (``mx.nd.save`` of a dict; Gluon's ``save_parameters``, which GluonCV's model
zoo ``.params`` files are) read with numpy, without MXNet. Reading only.

The layout, from MXNet's ``src/ndarray/ndarray.cc`` (``NDArray::Save`` / ``NDArray::Load``), all
little-endian:

* list header: uint64 magic ``0x112`` (``kMXAPINDArrayListMagic``), uint64 reserved;
* uint64 array count, then each array: uint32 version magic (``0xF993FAC9`` V2, ``0xF993FACA`` V3 with
  numpy shape semantics, ``0xF993FAC8`` V1 without a storage type; any other value is the ndim of the
  legacy layout with uint32 dimensions), int32 storage type (V2/V3; 0 dense, sparse unsupported), the
  shape (uint32/int32 ndim, then int64 dimensions; legacy: uint32), and unless the shape is empty the
  context (int32 device type, int32 device id), int32 dtype flag and the raw C-order data;
* uint64 name count (0 or the array count), then each name: uint64 length, UTF-8 bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8"}  # mshadow type flags
DTYPE_NAMES = {7: "bool", 12: "bfloat16"}


def is_mxnet_params(path: str | Path) -> bool:
    """Whether the file starts with MXNet's NDArray-list magic (whatever its suffix)."""
    with open(path, "rb") as f:
        head = f.read(8)
    return len(head) == 8 and int(np.frombuffer(head, "<u8")[0]) == LIST_MAGIC


class _Reader:
    def __init__(self, path: Path):
        self.path, self.data, self.offset = path, path.read_bytes(), 0

    def take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated MXNet .params file: {what} needs {size} bytes at offset "
                f"{self.offset:,}, the file has {len(self.data):,}"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def number(self, dtype: str, what: str) -> int:
        return int(np.frombuffer(self.take(np.dtype(dtype).itemsize, what), dtype)[0])

    def shape(self, what: str, dim: str = "<i8") -> tuple[int, ...]:
        ndim = self.number("<i4", f"{what}'s ndim")
        if ndim < 0:  # V3: unknown shape
            return ()
        return tuple(int(d) for d in np.frombuffer(self.take(ndim * np.dtype(dim).itemsize, what), dim))


def _read_array(reader: _Reader, index: int) -> np.ndarray:
    what = f"array {index}"
    magic = reader.number("<u4", f"{what}'s magic")
    if magic in (V2_MAGIC, V3_MAGIC):
        stype = reader.number("<i4", f"{what}'s storage type")
        if stype != 0:
            raise ValueError(
                f"{reader.path}: {what} has sparse storage type {stype}; only dense arrays are supported"
            )
        shape = reader.shape(what)
    elif magic == V1_MAGIC:
        shape = reader.shape(what)
    elif magic < 32:  # legacy layout: the magic is the ndim, dimensions are uint32
        shape = tuple(int(d) for d in np.frombuffer(reader.take(4 * magic, what), "<u4"))
    else:
        raise ValueError(
            f"{reader.path}: {what} starts with 0x{magic:08X}, not an MXNet NDArray magic "
            f"(0x{V2_MAGIC:08X}, 0x{V3_MAGIC:08X}, 0x{V1_MAGIC:08X})"
        )
    if not shape:
        return np.zeros((0,), np.float32)
    reader.take(8, f"{what}'s context")
    flag = reader.number("<i4", f"{what}'s dtype")
    if flag not in DTYPES:
        raise ValueError(
            f"{reader.path}: {what} has dtype flag {flag} ({DTYPE_NAMES.get(flag, 'unknown')}); "
            f"supported: {', '.join(np.dtype(d).name for d in DTYPES.values())}"
        )
    dtype = np.dtype(DTYPES[flag])
    count = int(np.prod(shape))
    data = reader.take(count * dtype.itemsize, f"{what}'s data {shape}")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_mxnet_params(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of an MXNet NDArray-list file, in file order. A wrong magic, a truncated file,
    sparse storage, an unsupported dtype, unnamed arrays or trailing bytes are errors naming the file."""
    reader = _Reader(Path(path))
    magic = reader.number("<u8", "the list header")
    if magic != LIST_MAGIC:
        raise ValueError(
            f"{path}: not an MXNet .params file (first 8 bytes 0x{magic:X}, MXNet's NDArray list "
            f"magic is 0x{LIST_MAGIC:X})"
        )
    reader.take(8, "the list header's reserved field")
    arrays = [_read_array(reader, i) for i in range(reader.number("<u8", "the array count"))]
    count = reader.number("<u8", "the name count")
    if count != len(arrays):
        raise ValueError(
            f"{path}: {len(arrays)} arrays but {count} names; bof needs named arrays (save_parameters)"
        )
    names = [
        reader.take(reader.number("<u8", f"name {i}'s length"), f"name {i}").decode() for i in range(count)
    ]
    if reader.offset != len(reader.data):
        raise ValueError(f"{path}: {len(reader.data) - reader.offset:,} bytes after the last name")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: repeated array names")
    return dict(zip(names, arrays, strict=True))
