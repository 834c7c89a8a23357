"""Preparation in shards: by several processes, resumed shard by shard, into a bucket."""

import logging
import os
import tempfile
import threading

import numpy as np
import pytest

import gcs_fixture
from helpers import split_arrays
from mlmjax import storage
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import pipeline
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import shards

ALL = ("entity_ids", "phrase_ids", "pos_class", "ngram_ids")


@pytest.fixture
def sharded_config(tmp_path, data_config, make_documents, write_txt):
  """Four files of ~60 documents in shards of ~2 kB: about a dozen shards."""
  (tmp_path / "corpus").mkdir()
  paths = [write_txt(tmp_path / "corpus" / f"{i}.txt", make_documents(60, seed=i))
           for i in range(4)]
  config = data_config(source="files", paths=str(tmp_path / "corpus" / "*.txt"),
                       annotations=ALL, spacy_pipeline="", num_workers=1, shard_bytes=2000)
  config.pmi = {"min_count": 3, "vocab_size": 100}
  assert len(paths) == 4
  return config


def in_processes(config, workdir: str, count: int) -> list[dict]:
  """`prepare` as `count` processes (threads here) meeting at real barriers."""
  barrier = threading.Barrier(count, timeout=120)
  results, errors = [None] * count, []

  def run(index):
    try:
      results[index] = prepare_lib.prepare(config, workdir, process_index=index,
                                           process_count=count,
                                           sync=lambda name: barrier.wait())
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
      barrier.abort()

  threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if errors:
    raise errors[0]
  return results


def same_rows(a_dir, b_dir):
  for split in manifest_lib.SPLITS:
    a, b = split_arrays(a_dir, split), split_arrays(b_dir, split)
    assert a.keys() == b.keys()
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=f"{split} {name}")


def test_three_processes_prepare_what_one_does(tmp_path, sharded_config):
  one = prepare_lib.prepare(sharded_config, str(tmp_path / "one"))
  assert one["shards"]["count"] >= 6 and one["shards"]["processes"] == 1
  three = in_processes(sharded_config, str(tmp_path / "three"), 3)
  assert all(m == three[0] for m in three)  # every process returns the same manifest
  assert three[0]["shards"]["processes"] == 3
  for key in ("splits", "pmi", "tokenizer", "schema", "source_fingerprint"):
    assert three[0][key] == one[key], key
  same_rows(tmp_path / "one" / "data", tmp_path / "three" / "data")
  # A rerun, with any number of processes, is a no-op.
  assert in_processes(sharded_config, str(tmp_path / "three"), 2)[1] == three[0]


def test_a_killed_preparation_goes_on_from_its_finished_shards(tmp_path, sharded_config,
                                                               monkeypatch, caplog):
  caplog.set_level(logging.INFO)
  finish = shards._ShardWriter.finish
  done = []

  def dies_after_three(self):
    if len(done) == 3:
      raise KeyboardInterrupt("killed")
    finish(self)
    done.append(self.shard.index)

  with monkeypatch.context() as m:
    m.setattr(shards._ShardWriter, "finish", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
      prepare_lib.prepare(sharded_config, str(tmp_path / "w"))
  assert manifest_lib.read(str(tmp_path / "w" / "data")) is None  # incomplete: no manifest
  manifest = prepare_lib.prepare(sharded_config, str(tmp_path / "w"))
  count = manifest["shards"]["count"]
  assert f"prepared {count - 3} of its {count} shards" in caplog.text
  prepare_lib.prepare(sharded_config, str(tmp_path / "fresh"))
  same_rows(tmp_path / "w" / "data", tmp_path / "fresh" / "data")


def test_prepare_into_a_bucket_equals_a_local_folder(gcs, tmp_path, sharded_config,
                                                     monkeypatch):
  (tmp_path / "tmp").mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # TMPDIR, as read once
  monkeypatch.chdir(tmp_path)
  url = f"gs://{gcs_fixture.BUCKET}/prepared"
  in_bucket = in_processes(sharded_config, url, 2)[0]
  local = prepare_lib.prepare(sharded_config, str(tmp_path / "local"))
  assert in_bucket["splits"] == local["splits"] and in_bucket["pmi"] == local["pmi"]
  assert "data/manifest.json" in gcs_fixture.files(url)
  assert not list(tmp_path.glob("gs*"))
  # Staging files left the local disk once uploaded.
  assert list((tmp_path / "tmp").rglob(storage.STAGING))
  assert not [p for p in (tmp_path / "tmp").rglob("*.npy") if storage.STAGING in str(p)]
  # The loader reads the bucket's rows through a local copy of just the parts it needs; the
  # copies of an earlier preparation (another key) are deleted.
  stale = storage.local_cache(f"{url}/data", "0123456789abcdef")
  open(os.path.join(stale, "parts_train-00000.input_ids.npy"), "wb").close()
  for processes in (1, 2):
    for index in range(processes):
      a = next(pipeline.make_loader(f"{url}/data", "train", 8, seed=1, shuffle_shards=2,
                                    process_index=index, process_count=processes))
      b = next(pipeline.make_loader(str(tmp_path / "local" / "data"), "train", 8, seed=1,
                                    shuffle_shards=2, process_index=index,
                                    process_count=processes))
      for name in a:
        np.testing.assert_array_equal(a[name], b[name])
  assert not os.path.exists(stale)
  copies = os.listdir(storage.local_cache(f"{url}/data", in_bucket["shards"]["key"][:16]))
  assert copies and all(c.startswith("parts_train-") for c in copies)
  assert prepare_lib.prepare(sharded_config, url) == in_bucket  # a no-op on the bucket too


def test_a_part_cut_short_is_named_and_prepared_again(tmp_path, sharded_config, caplog):
  caplog.set_level(logging.INFO)
  workdir = tmp_path / "w"
  manifest = prepare_lib.prepare(sharded_config, str(workdir))
  part = manifest["splits"]["train"]["parts"][1]
  damaged = workdir / "data" / part["files"]["input_ids"]
  size = damaged.stat().st_size
  os.truncate(damaged, size - 500)  # a full disk, an interrupted copy
  with pytest.raises(ValueError, match=f"{damaged} has {size - 500:,} bytes, the manifest "
                                       f"says {size:,} .*run mlmjax-prepare"):
    pipeline.PackedRows(str(workdir / "data"), "train")
  again = prepare_lib.prepare(sharded_config, str(workdir))
  assert f"{part['files']['input_ids']} has {size - 500:,} bytes, not {size:,}" in caplog.text
  assert f"prepared 1 of its {manifest['shards']['count']} shards" in caplog.text  # that one
  assert again["splits"] == manifest["splits"] and damaged.stat().st_size == size
  prepare_lib.prepare(sharded_config, str(tmp_path / "fresh"))
  same_rows(workdir / "data", tmp_path / "fresh" / "data")
