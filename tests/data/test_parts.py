"""The part files: the streaming .npy writer."""

import numpy as np

from mlmjax.data import parts


def test_npy_writer_streams_rows(tmp_path):
  writer = parts.NpyWriter(str(tmp_path / "a.npy"), np.int8, (3,))
  assert not (tmp_path / "a.npy").exists()
  for n in (2, 0, 5):
    writer.append(np.full((n, 3), n, np.int8))
  assert writer.close() == (7, 3)
  array = np.load(tmp_path / "a.npy")
  assert array.dtype == np.int8 and array[:, 0].tolist() == [2, 2, 5, 5, 5, 5, 5]
