"""Reading and writing `.safetensors` files with NumPy (bfloat16 via ml_dtypes).

The format is an 8-byte little-endian header length, a JSON header mapping each
tensor name to dtype, shape and byte offsets, then the raw bytes. We implement
it directly (memory-mapped reads) so that truncated or corrupt files get an
error naming the file and tensor, and bfloat16 needs no framework. Nothing is
ever unpickled.
"""

import json
import os
import struct

import ml_dtypes
import numpy as np

from caopd_jax.errors import CheckpointFormatError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile:
  """Lazy, memory-mapped view of one `.safetensors` file: `names()`, `shape(name)`, `read(name)`."""

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      raw = f.read(8)
      if len(raw) < 8:
        raise CheckpointFormatError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
      (header_len,) = struct.unpack("<Q", raw)
      if header_len > min(_MAX_HEADER, size - 8):
        raise CheckpointFormatError(f"{path}: corrupt or truncated safetensors header "
                                    f"(declares {header_len} header bytes, file has {size})")
      try:
        header = json.loads(f.read(header_len))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointFormatError(f"{path}: corrupt safetensors header ({e})") from None
    self.metadata = header.pop("__metadata__", {}) or {}
    self._entries = header
    self._data_start = 8 + header_len
    data_len = size - self._data_start
    for name, entry in header.items():
      begin, end = entry["data_offsets"]
      if entry["dtype"] not in _DTYPES:
        raise CheckpointFormatError(f"{path}: tensor {name!r} has unsupported dtype {entry['dtype']}")
      expected = int(np.prod(entry["shape"], dtype=np.int64)) * np.dtype(_DTYPES[entry["dtype"]]).itemsize
      if end > data_len or end - begin != expected:
        raise CheckpointFormatError(
            f"{path}: tensor {name!r} needs bytes {begin}..{end} of {data_len} available "
            f"(file truncated or corrupt; re-download or re-export it)")
    self._mmap = np.memmap(path, dtype=np.uint8, mode="r") if size else None

  def names(self) -> list[str]:
    return list(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name]["shape"])

  def read(self, name: str) -> np.ndarray:
    """The tensor as a read-only NumPy array (a view into the mapped file)."""
    entry = self._entries[name]
    begin, end = entry["data_offsets"]
    raw = self._mmap[self._data_start + begin:self._data_start + end]
    return raw.view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
  """Writes `tensors` (name -> array) to `path` in safetensors format."""
  header, offset = {}, 0
  arrays = {}
  for name, array in tensors.items():
    array = np.ascontiguousarray(array)
    if array.dtype not in _NAMES:
      raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot be stored in safetensors")
    header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                    "data_offsets": [offset, offset + array.nbytes]}
    arrays[name] = array
    offset += array.nbytes
  if metadata:
    header["__metadata__"] = metadata
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for array in arrays.values():
      f.write(array.tobytes())
