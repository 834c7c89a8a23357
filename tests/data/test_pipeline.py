"""Tests of mlmjax.data.pipeline: determinism, epochs, resuming, process shards, eval batches."""

import itertools
import json
import pickle

import grain
import numpy as np
import pytest

from helpers import split_arrays
from mlmjax.data import corpora
from mlmjax.data import pipeline
from mlmjax.data import prepare as prepare_lib

BATCH = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, make_documents, write_txt, data_config):
  """Prepared data over generated documents: ~60 train rows of 16 tokens, 2 validation rows."""
  workdir = tmp_path_factory.mktemp("work")
  path = write_txt(workdir / "corpus.txt", make_documents(80, max_words=12))
  config = data_config(source="files", paths=path, seq_len=16, vocab_size=150,
                       validation_fraction=0.03)
  prepare_lib.prepare(config, str(workdir))
  return str(workdir / "data")


def _take(iterator, n):
  return [b["input_ids"].copy() for b in itertools.islice(iterator, n)]


def _rows(data_dir, split="train"):
  return split_arrays(data_dir, split)["input_ids"]


def test_batches_have_the_contract_shapes(data_dir):
  batch = next(pipeline.make_loader(data_dir, "train", BATCH, seed=0))
  assert set(batch) == {"input_ids", "segment_ids"}
  for value in batch.values():
    assert type(value) is np.ndarray and value.dtype == np.int32 and value.shape == (BATCH, 16)


def test_loader_is_deterministic(data_dir):
  first = _take(pipeline.make_loader(data_dir, "train", BATCH, seed=0), 12)
  again = _take(pipeline.make_loader(data_dir, "train", BATCH, seed=0), 12)
  other = _take(pipeline.make_loader(data_dir, "train", BATCH, seed=1), 12)
  np.testing.assert_array_equal(np.stack(first), np.stack(again))
  assert not np.array_equal(np.stack(first), np.stack(other))


def _row_keys(array):
  return [r.tobytes() for r in array]


def test_each_epoch_is_a_new_permutation(data_dir):
  rows = _rows(data_dir)
  n = len(rows)
  loader = pipeline.make_loader(data_dir, "train", 1, seed=0, num_epochs=2)
  seen = np.concatenate(_take(loader, 2 * n + 1))  # one more than there is
  assert len(seen) == 2 * n
  epoch1, epoch2 = seen[:n], seen[n:]
  assert sorted(_row_keys(epoch1)) == sorted(_row_keys(rows)) == sorted(_row_keys(epoch2))
  assert not np.array_equal(epoch1, epoch2)
  assert not np.array_equal(epoch1, rows)  # shuffled


def test_finite_epochs_yield_whole_global_batches(data_dir):
  n = len(_rows(data_dir))
  batches = _take(pipeline.make_loader(data_dir, "train", BATCH, seed=0, num_epochs=3), 10**6)
  assert len(batches) == 3 * n // BATCH
  ordered = np.concatenate(_take(pipeline.make_loader(
      data_dir, "train", BATCH, seed=0, shuffle=False, num_epochs=1), 10**6))
  np.testing.assert_array_equal(ordered, _rows(data_dir)[:n // BATCH * BATCH])


def test_restored_iterator_continues_the_exact_sequence(data_dir):
  loader = pipeline.make_loader(data_dir, "train", BATCH, seed=5)
  _take(loader, 9)  # past the end of the first epoch (~60 rows)
  state = json.loads(json.dumps(loader.get_state()))  # what a checkpoint stores
  expected = _take(loader, 6)
  restored = pipeline.make_loader(data_dir, "train", BATCH, seed=5)
  restored.set_state(state)
  np.testing.assert_array_equal(np.stack(_take(restored, 6)), np.stack(expected))


def test_processes_split_each_global_batch(data_dir):
  whole = _take(pipeline.make_loader(data_dir, "train", BATCH, seed=2), 10)
  parts = [_take(pipeline.make_loader(data_dir, "train", BATCH, seed=2, process_index=p,
                                      process_count=2), 10) for p in (0, 1)]
  for k in range(10):
    assert parts[0][k].shape == (BATCH // 2, 16)
    # contiguous blocks, in process order: how make_array_from_process_local_data assembles them
    np.testing.assert_array_equal(parts[0][k], whole[k][: BATCH // 2])
    np.testing.assert_array_equal(parts[1][k], whole[k][BATCH // 2:])
  with pytest.raises(ValueError, match="multiple of the number of processes"):
    pipeline.make_loader(data_dir, "train", 7, seed=0, process_index=0, process_count=2)


def test_loader_errors(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="No prepared data"):
    pipeline.make_loader(str(tmp_path), "train", BATCH, seed=0)
  with pytest.raises(ValueError, match="Unknown split 'test'"):
    pipeline.make_loader(data_dir, "test", BATCH, seed=0)
  with pytest.raises(ValueError, match="fewer than one batch"):
    pipeline.make_loader(data_dir, "validation", 64, seed=0, num_epochs=1)


def test_source_pickles_for_worker_processes(data_dir):
  source = pipeline.PackedRows(data_dir, "train")
  copy = pickle.loads(pickle.dumps(source))
  assert len(pickle.dumps(source)) < 2000  # paths, not the arrays
  np.testing.assert_array_equal(copy.take([3, 1])["input_ids"], source.take([3, 1])["input_ids"])
  np.testing.assert_array_equal(source.take([3, 1])["input_ids"], _rows(data_dir)[[3, 1]])


def test_eval_batches_are_fixed_and_padded(data_dir):
  validation = _rows(data_dir, "validation")
  n = len(validation)
  assert 0 < n < 8  # so that two batches of 4 need padding
  batches = pipeline.eval_batches(data_dir, "validation", 4, num_batches=2)
  again = pipeline.eval_batches(data_dir, "validation", 4, num_batches=2)
  assert len(batches) == 2
  stacked = np.concatenate([b["input_ids"] for b in batches])
  np.testing.assert_array_equal(stacked, np.concatenate([b["input_ids"] for b in again]))
  np.testing.assert_array_equal(stacked[:n], validation)
  assert (stacked[n:] == 0).all()  # [PAD] rows
  assert (np.concatenate([b["segment_ids"] for b in batches])[n:] == 0).all()
  # None covers the split; processes take their share of each batch.
  assert len(pipeline.eval_batches(data_dir, "train", 4, None)) == -(-len(_rows(data_dir)) // 4)
  half = pipeline.eval_batches(data_dir, "train", 4, 3, process_index=1, process_count=2)
  np.testing.assert_array_equal(half[2]["input_ids"], _rows(data_dir)[8:12][2:])


def test_annotations_travel_with_their_rows(tmp_path, make_documents, write_txt, data_config):
  path = write_txt(tmp_path / "c.txt", make_documents(60, max_words=12))
  config = data_config(source="files", paths=path, seq_len=16, vocab_size=150,
                       annotations=("entity_ids", "phrase_ids", "pos_class", "ngram_ids"),
                       spacy_pipeline="", pmi={"min_count": 2})
  prepare_lib.prepare(config, str(tmp_path))
  data_dir = str(tmp_path / "data")
  files = split_arrays(data_dir, "train")
  assert set(files) == {"input_ids", "segment_ids", "entity_ids", "phrase_ids", "pos_class",
                        "ngram_ids"}
  index = {r.tobytes(): i for i, r in enumerate(files["input_ids"])}
  for batch in itertools.islice(pipeline.make_loader(data_dir, "train", 4, seed=1), 5):
    assert set(batch) == set(files) and batch["pos_class"].dtype == np.int8
    rows = [index[r.tobytes()] for r in batch["input_ids"]]
    for key, array in files.items():
      np.testing.assert_array_equal(batch[key], array[rows])
  padded = pipeline.eval_batches(data_dir, "validation", 64, 1)[0]
  n = len(_rows(data_dir, "validation"))
  for key in ("segment_ids", "entity_ids", "phrase_ids", "pos_class", "ngram_ids"):
    assert (padded[key][n:] == 0).all() and padded[key].shape == (64, 16)


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory, make_documents, write_txt, data_config):
  """A training split of a handful of rows, fewer than one batch."""
  workdir = tmp_path_factory.mktemp("tiny_split")
  docs = make_documents(40, max_words=6, seed=3)
  held_out = [corpora.is_validation(d, 0, 0.3) for d in docs]  # 5 to train, 2 held out
  docs = ([d for d, v in zip(docs, held_out) if not v][:5]
          + [d for d, v in zip(docs, held_out) if v][:2])
  path = write_txt(workdir / "corpus.txt", docs)
  config = data_config(source="files", paths=path, seq_len=16, vocab_size=120,
                       packing="per_document", validation_fraction=0.3, split_seed=0)
  manifest = prepare_lib.prepare(config, str(workdir))
  rows = manifest["splits"]["train"]["rows"]
  assert 2 <= rows < 8
  return str(workdir / "data"), rows


@pytest.mark.parametrize("batch", [4, 8, 24])
def test_a_split_smaller_than_a_batch_gives_whole_epochs_every_time(tiny_split, batch):
  """Each batch spans several epochs: every epoch is still a permutation of the rows, and the
  sequence is the same on every run, whatever grain's reading threads do (they once shared a
  cache that evicted an epoch another thread still needed: a KeyError, 1 run in 3)."""
  data_dir, rows = tiny_split
  index = {r.tobytes(): i for i, r in enumerate(_rows(data_dir))}
  assert len(index) == rows  # rows are distinguishable
  options = grain.ReadOptions(num_threads=4, prefetch_buffer_size=16)

  def sequence():
    loader = pipeline.make_loader(data_dir, "train", batch, seed=5, read_options=options)
    return [index[r.tobytes()] for b in itertools.islice(loader, 40) for r in b["input_ids"]]

  first = sequence()
  epochs = [first[i:i + rows] for i in range(0, len(first) - rows + 1, rows)]
  assert all(sorted(e) == list(range(rows)) for e in epochs)
  assert len({tuple(e) for e in epochs}) > 1  # reshuffled
  for _ in range(3):
    assert sequence() == first
