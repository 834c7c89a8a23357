"""Tests of the corpus sources beyond text files: Parquet, TFDS (built here, offline), HF datasets."""

import sys

import numpy as np
import pytest

from mlmjax.data import corpora
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import sources


def test_parquet_files(tmp_path, data_config, make_documents):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top  (the test extra has it)
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  docs = make_documents(5)
  pq.write_table(pa.table({"body": docs[:3] + ["  ", docs[3]], "n": [1, 2, 3, 4, 5]}),
                 tmp_path / "a.parquet")
  config = data_config(source="files", paths=str(tmp_path / "a.parquet"), text_field="body")
  assert corpora.load_documents(config) == docs[:4]  # the blank row holds no document
  config.text_field = "text"
  with pytest.raises(sources.CorpusError, match=r"no column 'text' \(columns: \['body', 'n'\]"):
    corpora.load_documents(config)
  config.text_field = "n"
  with pytest.raises(sources.CorpusError, match="column 'n' is int64, not a string"):
    corpora.load_documents(config)
  pq.write_table(pa.table({"text": ["fine", None]}), tmp_path / "b.parquet")
  with pytest.raises(sources.CorpusError, match=r"b.parquet: row 1 has no 'text' \(null\)"):
    corpora.load_documents(data_config(source="files", paths=str(tmp_path / "b.parquet")))
  (tmp_path / "c.parquet").write_bytes(b"PAR1 not really")
  with pytest.raises(sources.CorpusError, match="not a readable Parquet file"):
    corpora.load_documents(data_config(source="files", paths=str(tmp_path / "c.parquet")))


# ------------------------------------------------------------------------------------ TFDS


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, make_documents):
  """A tiny TFDS dataset in ArrayRecord, built with a TFDS builder, offline, without TF."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  docs = make_documents(40, seed=5)

  class TinyCorpus(tfds.core.GeneratorBasedBuilder):
    """Generated documents with a `text` and a `title` feature."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"text": tfds.features.Text(), "title": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(docs[:36]),
              "validation": self._generate_examples(docs[36:])}

    def _generate_examples(self, texts):
      for i, text in enumerate(texts):
        yield i, {"text": text, "title": f"doc {i}"}

  data_dir = tmp_path_factory.mktemp("tfds")
  TinyCorpus(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return str(data_dir), docs


def test_tfds_source_reads_by_random_access(tfds_dir, data_config):
  data_dir, docs = tfds_dir
  config = data_config(source="tfds", tfds_name="tiny_corpus", tfds_data_dir=data_dir)
  corpus = corpora.load_documents(config)
  assert isinstance(corpus, sources.IndexedCorpus) and len(corpus) == 36
  # TFDS stores examples in its own shuffled order; the documents are all there, once.
  assert sorted(corpus) == sorted(docs[:36])
  assert corpus[3] == list(corpus)[3] and corpus[2:5] == list(corpus)[2:5]
  assert "tensorflow" not in sys.modules  # random access over ArrayRecord needs no TF
  train, validation = corpora.load_splits(config)
  assert len(train) == 36 - round(0.1 * 36) and len(validation) == round(0.1 * 36)
  assert sorted(list(train) + list(validation)) == sorted(docs[:36])
  config.tfds_validation_split = "validation"
  train, validation = corpora.load_splits(config)
  assert len(train) == 36 and sorted(validation) == sorted(docs[36:])


def test_tfds_prepare_and_errors(tfds_dir, data_config, tmp_path):
  data_dir, docs = tfds_dir
  config = data_config(source="tfds", tfds_name="tiny_corpus", tfds_data_dir=data_dir,
                       tfds_validation_split="validation", vocab_size=150)
  manifest = prepare_lib.prepare(config, str(tmp_path))
  assert manifest["splits"]["train"]["documents"] == 36
  assert manifest["source_fingerprint"]["name"] == "tiny_corpus/1.0.0"
  assert prepare_lib.prepare(config, str(tmp_path)) == manifest  # no-op
  cases = [
      (data_config(source="tfds"), "needs data.tfds_name"),
      (data_config(source="tfds", tfds_name="missing_set", tfds_data_dir=data_dir),
       "Cannot open TFDS 'missing_set'"),
      (data_config(source="tfds", tfds_name="tiny_corpus", tfds_data_dir=data_dir,
                   tfds_split="test"), "Cannot open TFDS 'tiny_corpus' split 'test'"),
      (data_config(source="tfds", tfds_name="tiny_corpus", tfds_data_dir=data_dir,
                   text_field="body"), r"no feature 'body' \(features: \['text', 'title'\]"),
  ]
  for config, message in cases:
    with pytest.raises(sources.CorpusError, match=message):
      corpora.load_documents(config)


# ------------------------------------------------------------------------ Hugging Face datasets


def test_hf_datasets_from_disk(tmp_path, data_config, make_documents, write_jsonl):
  import datasets  # pylint: disable=g-import-not-at-top
  docs = make_documents(12, seed=7)
  datasets.DatasetDict({
      "train": datasets.Dataset.from_dict({"content": docs[:10], "id": list(range(10))}),
      "test": datasets.Dataset.from_dict({"content": docs[10:], "id": [10, 11]}),
  }).save_to_disk(str(tmp_path / "saved"))
  config = data_config(source="hf", hf_path=str(tmp_path / "saved"), text_field="content")
  corpus = corpora.load_documents(config)
  assert list(corpus) == docs[:10] and corpus[4:6] == docs[4:6]
  config.hf_split = "test"
  assert list(corpora.load_documents(config)) == docs[10:]
  # A folder of data files goes through datasets.load_dataset.
  (tmp_path / "files").mkdir()
  write_jsonl(tmp_path / "files" / "part.jsonl", docs)
  files = data_config(source="hf", hf_path=str(tmp_path / "files"))
  assert list(corpora.load_documents(files)) == docs
  cases = [
      (data_config(source="hf", hf_path=str(tmp_path / "nowhere")), "does not exist"),
      (data_config(source="hf", hf_path=str(tmp_path / "saved"), text_field="content",
                   hf_split="dev"), r"no split 'dev' \(splits: \['train', 'test'\]\)"),
      (data_config(source="hf", hf_path=str(tmp_path / "saved")), "no column 'text'"),
  ]
  for config, message in cases:
    with pytest.raises(sources.CorpusError, match=message):
      corpora.load_documents(config)


def test_lazy_split_matches_the_list_split(make_documents):
  docs = make_documents(50)
  lazy = sources.IndexedCorpus("test", lambda rows: [docs[r] for r in rows], np.arange(50))
  eager = corpora.split_documents(docs, 0.2, seed=4)
  views = corpora.split_documents(lazy, 0.2, seed=4)
  assert [list(v) for v in views] == list(eager)
  assert corpora.documents_hash(views[0]) == corpora.documents_hash(eager[0])
