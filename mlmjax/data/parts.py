"""The part files of prepared data: their names under workdir/data, writing one, reading one.

A part holds one field of one shard's rows of one split, as an [n, S] .npy file; a shard's
record (its counts, and its token statistics) sits beside its parts. The writer streams rows to
disk without knowing their number, so memory holds one chunk of rows, not a shard.
"""

import os
from collections.abc import Sequence

import numpy as np

from mlmjax import storage
from mlmjax.data import manifest as manifest_lib

PARTS = "parts"  # under workdir/data


def part_files(split: str, shard: int, fields: Sequence[str]) -> dict[str, str]:
  """The files of shard `shard`'s rows of `split`, by batch key (relative to workdir/data)."""
  return {f: f"{PARTS}/{split}-{shard:05d}.{f}.npy" for f in ("input_ids", "segment_ids",
                                                                *fields)}


def record_name(shard: int, suffix: str = ".json") -> str:
  """Shard `shard`'s record (".json") or token statistics (".stats.npz"), under workdir/data."""
  return f"{PARTS}/{shard:05d}{suffix}"


class NpyWriter:
  """Appends rows to a .npy file; `close` writes the final shape and renames it into place.

  The header is written first for a huge placeholder shape and later rewritten for the real
  one, padded to the same length, so rows stream to disk without knowing their number. Until
  `close`, the file has a temporary name: a crash never leaves a truncated array.
  """

  # magic (6) + version (2) + length (2) + the dict, padded as numpy pads it
  _HEADER_BYTES = manifest_lib.NPY_HEADER_BYTES

  def __init__(self, path: str, dtype: np.dtype, row_shape: tuple[int, ...], upload_to=None):
    self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
    self.upload_to = upload_to  # a URL: the file goes there on `close`, and leaves this disk
    self.rows = 0
    self._file = open(path + ".tmp", "wb")
    self._file.write(self._header(10**15))

  def _header(self, rows: int) -> bytes:
    header = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                   "shape": (rows, *self.row_shape)})
    size = self._HEADER_BYTES - 10
    if len(header) + 1 > size:
      raise ValueError(f"Row shape {self.row_shape} too large for a .npy header.")
    header = header.ljust(size - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + size.to_bytes(2, "little") + header.encode("latin1")

  def append(self, rows: np.ndarray) -> None:
    if rows.shape[1:] != self.row_shape:
      raise ValueError(f"rows of shape {rows.shape[1:]}, expected {self.row_shape}")
    self._file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
    self.rows += rows.shape[0]

  def abort(self) -> None:
    """Closes and deletes the unfinished file (a failed preparation leaves nothing behind)."""
    self._file.close()
    if os.path.exists(self.path + ".tmp"):
      os.remove(self.path + ".tmp")

  def close(self) -> tuple[int, ...]:
    self._file.seek(0)
    self._file.write(self._header(self.rows))
    self._file.close()
    os.replace(self.path + ".tmp", self.path)
    if self.upload_to is not None:
      storage.upload(self.path, self.upload_to)
      os.remove(self.path)
    return (self.rows, *self.row_shape)


def staging_dir(data_dir: str) -> str | None:
  """Where parts of `data_dir` are written before their upload: None for a local folder (they
  are written in place), a local folder for a URL."""
  return None if storage.local_dir(data_dir) else storage.staging_dir(data_dir)


def writer(data_dir: str, name: str, staging: str | None, dtype, row_shape) -> NpyWriter:
  """A writer of data_dir/name: in place for a local folder, staged and uploaded for a URL."""
  if staging is None:
    target = os.path.join(data_dir, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return NpyWriter(target, dtype, row_shape)
  return NpyWriter(os.path.join(staging, os.path.basename(name)), dtype, row_shape,
                   upload_to=storage.join(data_dir, name))


def read(data_dir: str, part: dict, fields: Sequence[str]) -> dict[str, np.ndarray]:
  """{field: [n, S]} of one part (a manifest's entry): memmaps of a local folder, arrays read
  from a URL."""
  out = {}
  for field in fields:
    p = storage.join(data_dir, part["files"][field])
    if storage.local_dir(data_dir):
      out[field] = np.load(os.fspath(p), mmap_mode="r")
    else:
      with p.open("rb") as f:
        out[field] = np.load(f)
  return out
