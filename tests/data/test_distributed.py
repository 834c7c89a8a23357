"""Two real JAX processes (jax.distributed on CPU, loopback) share each epoch of the loader."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import split_arrays
from mlmjax.data import corpora
from mlmjax.data import prepare as prepare_lib

BATCH = 8
ROWS = 72  # one row per training document (per_document packing, short documents)

# Each process: join the runtime, read two epochs of its batches, and check that an iterator
# restored from a JSON-serialised state continues exactly where a saved one went on.
_CHILD = r"""
import json, sys
import jax
import numpy as np
from mlmjax.data import pipeline

port, pid, data_dir, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=60)
assert (jax.process_index(), jax.process_count()) == (pid, 2)
batches = [b["input_ids"] for b in pipeline.make_loader(data_dir, "train", 8, seed=3,
                                                         num_epochs=2)]
loader = pipeline.make_loader(data_dir, "train", 8, seed=3)
for _ in range(5):
  next(loader)
state = json.dumps(loader.get_state())
expected = [next(loader)["input_ids"] for _ in range(7)]
restored = pipeline.make_loader(data_dir, "train", 8, seed=3)
restored.set_state(json.loads(state))
resumed = [next(restored)["input_ids"] for _ in range(7)]
np.savez(out, batches=np.stack(batches), expected=np.stack(expected),
         resumed=np.stack(resumed))
jax.distributed.shutdown()
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, make_documents, write_txt, data_config):
  work = tmp_path_factory.mktemp("dist")
  # ROWS training documents and two held out (each document's hash decides its split).
  docs = make_documents(3 * ROWS, seed=11, max_words=8)
  held_out = [corpora.is_validation(d, 0, 0.05) for d in docs]
  docs = ([d for d, v in zip(docs, held_out) if not v][:ROWS]
          + [d for d, v in zip(docs, held_out) if v][:2])
  config = data_config(source="files", paths=write_txt(work / "c.txt", docs), seq_len=32,
                       validation_fraction=0.05, split_seed=0, packing="per_document",
                       vocab_size=150)
  manifest = prepare_lib.prepare(config, str(work))
  assert manifest["splits"]["train"]["rows"] == ROWS  # one row per document
  return str(work / "data")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_read_each_epoch_exactly_once_and_resume(data_dir, tmp_path):
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(port), str(i), data_dir,
                             str(tmp_path / f"p{i}.npz")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT) for i in (0, 1)]
  for p in procs:
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out.decode()[-3000:]
  results = [np.load(tmp_path / f"p{i}.npz") for i in (0, 1)]
  all_rows = split_arrays(data_dir, "train")["input_ids"]
  assert len({r.tobytes() for r in all_rows}) == ROWS  # rows are distinguishable
  per_epoch = ROWS // BATCH
  for r in results:
    assert r["batches"].shape == (2 * per_epoch, BATCH // 2, 32)
  epochs = []
  for e in range(2):
    seen = np.concatenate([r["batches"][e * per_epoch:(e + 1) * per_epoch].reshape(-1, 32)
                           for r in results])
    # Together the two processes read every row of the epoch exactly once.
    assert sorted(x.tobytes() for x in seen) == sorted(x.tobytes() for x in all_rows)
    epochs.append(seen)
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled
  for r in results:
    np.testing.assert_array_equal(r["resumed"], r["expected"])
  # Process p's rows of each global batch are its p-th contiguous half of the one-process batch.
  from mlmjax.data import pipeline  # pylint: disable=g-import-not-at-top
  single = [b["input_ids"] for b in pipeline.make_loader(
      data_dir, "train", BATCH, seed=3, num_epochs=2, process_index=0, process_count=1)]
  for k, whole in enumerate(single):
    np.testing.assert_array_equal(results[0]["batches"][k], whole[: BATCH // 2])
    np.testing.assert_array_equal(results[1]["batches"][k], whole[BATCH // 2:])
