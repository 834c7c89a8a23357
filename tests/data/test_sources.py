"""Tests of the corpus sources beyond local text files: Parquet, TFDS (built here, offline), HF
datasets, and files on a bucket (a real GCS emulator)."""

import os
import sys

import pytest

from mlmjax import storage
from mlmjax.data import corpora
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import sources


def _documents(config) -> list[str]:
  return [doc for shard in sources.list_shards(config) for doc in sources.read_shard(config, shard)]


def test_parquet_files(tmp_path, data_config, make_documents):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top  (the test extra has it)
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  docs = make_documents(5)
  pq.write_table(pa.table({"body": docs[:3] + ["  ", docs[3]], "n": [1, 2, 3, 4, 5]}),
                 tmp_path / "a.parquet")
  config = data_config(source="files", paths=str(tmp_path / "a.parquet"), text_field="body")
  assert corpora.load_documents(config) == docs[:4]  # the blank row holds no document
  assert sources.list_shards(config) == [
      sources.Shard(0, (sources.Piece(str(tmp_path / "a.parquet"), 0, 1),))]  # 1 row group
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
  pq.write_table(pa.table({"text": ["", " "]}), tmp_path / "d.parquet")
  with pytest.raises(sources.CorpusError, match="d.parquet holds no document"):
    corpora.load_documents(data_config(source="files", paths=str(tmp_path / "d.parquet")))


def test_parquet_row_groups_in_pieces(tmp_path, data_config, make_documents):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  docs = make_documents(1000, seed=8)
  texts = docs[:500] + [""] + docs[500:]  # an empty text holds no document
  path = str(tmp_path / "big.parquet")
  pq.write_table(pa.table({"text": texts, "id": list(range(1001))}), path, row_group_size=100)
  meta = pq.ParquetFile(path).metadata
  assert meta.num_row_groups == 11
  text_size = sum(meta.row_group(i).column(0).total_uncompressed_size for i in range(11))
  config = data_config(source="files", paths=path, shard_bytes=3 * text_size // 11)
  shards = sources.list_shards(config)
  pieces = [p for s in shards for p in s.pieces]
  # Row-group ranges of about shard_bytes, in order, covering the file once.
  assert len(shards) == len(pieces) > 3
  assert pieces[0].start == 0 and pieces[-1].stop == 11
  assert all(a.stop == b.start and a.stop > a.start for a, b in zip(pieces, pieces[1:]))
  assert _documents(config) == docs
  assert sources.text_bytes(config, shards) == text_size
  config.shard_bytes = 1  # one row group a shard
  assert len(sources.list_shards(config)) == 11 and _documents(config) == docs
  # A fraction reads the first rows of each piece.
  shards = sources.list_shards(config)
  half = [d for s in shards for d in sources.read_shard(config, s, 0.25)]
  assert half == [d for g in range(11) for d in texts[100 * g:100 * g + 25] if d]
  # A null in a later row group names its row in the file.
  pq.write_table(pa.table({"text": texts[:-1] + [None]}), path, row_group_size=100)
  with pytest.raises(sources.CorpusError, match=r"big.parquet: row 1000 has no 'text'"):
    corpora.load_documents(config)


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


def test_tfds_source_reads_by_random_access(tfds_dir, data_config, monkeypatch):
  data_dir, docs = tfds_dir
  config = data_config(source="tfds", tfds_name="tiny_corpus", tfds_data_dir=data_dir)
  corpus = corpora.load_documents(config)
  # TFDS stores examples in its own shuffled order; the documents are all there, once.
  assert len(corpus) == 36 and sorted(corpus) == sorted(docs[:36])
  assert "tensorflow" not in sys.modules  # random access over ArrayRecord needs no TF
  assert sources.list_shards(config) == [sources.Shard(0, (sources.Piece("tfds:train", 0, 36),))]
  train, validation = corpora.load_splits(config)
  assert validation == [d for d in corpus if corpora.is_validation(d, 0, 0.1)]
  assert train == [d for d in corpus if d not in validation] and validation
  # Shards of INDEXED_SHARD_DOCS rows; the dataset's own validation split after the training.
  monkeypatch.setattr(sources, "INDEXED_SHARD_DOCS", 10)
  config.tfds_validation_split = "validation"
  shards = sources.list_shards(config)
  assert [(s.index, s.split) + tuple(s.pieces) for s in shards] == [
      (0, "train", sources.Piece("tfds:train", 0, 10)),
      (1, "train", sources.Piece("tfds:train", 10, 20)),
      (2, "train", sources.Piece("tfds:train", 20, 30)),
      (3, "train", sources.Piece("tfds:train", 30, 36)),
      (4, "validation", sources.Piece("tfds:validation", 0, 4))]
  train, validation = corpora.load_splits(config)
  assert train == corpus and sorted(validation) == sorted(docs[36:])
  assert [s for s, _ in corpora.documents_by_split(config, shards[4])] == ["validation"] * 4
  # A fraction reads the first rows of each shard; the tokenizer never sees validation.
  assert [d for s in shards[:4] for d in sources.read_shard(config, s, 0.5)] == [
      corpus[i] for i in [*range(5), *range(10, 15), *range(20, 25), *range(30, 33)]]
  assert list(corpora.tokenizer_sample(config)()) == corpus
  # The corpus' size is estimated from its first documents.
  size = sum(len(d.encode()) for d in corpus)
  assert sources.text_bytes(config, shards[:4]) == size
  config.tokenizer_sample_bytes = size // 2
  assert 12 <= len(list(corpora.tokenizer_sample(config)())) <= 22


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


def test_hf_datasets_from_disk(tmp_path, data_config, make_documents, write_jsonl,
                               monkeypatch):
  import datasets  # pylint: disable=g-import-not-at-top
  docs = make_documents(12, seed=7)
  datasets.DatasetDict({
      "train": datasets.Dataset.from_dict({"content": docs[:10], "id": list(range(10))}),
      "test": datasets.Dataset.from_dict({"content": docs[10:], "id": [10, 11]}),
  }).save_to_disk(str(tmp_path / "saved"))
  config = data_config(source="hf", hf_path=str(tmp_path / "saved"), text_field="content")
  assert corpora.load_documents(config) == docs[:10]
  monkeypatch.setattr(sources, "INDEXED_SHARD_DOCS", 4)
  shards = sources.list_shards(config)
  assert [s.pieces for s in shards] == [(sources.Piece("hf", 0, 4),), (sources.Piece("hf", 4, 8),),
                                        (sources.Piece("hf", 8, 10),)]
  assert list(sources.read_shard(config, shards[1])) == docs[4:8]
  assert list(sources.read_shard(config, shards[1], 0.5)) == docs[4:6]
  config.hf_split = "test"
  assert corpora.load_documents(config) == docs[10:]
  fingerprint = corpora.source_fingerprint(config)
  assert fingerprint["source"] == "hf" and fingerprint == corpora.source_fingerprint(config)
  assert any(f[0].endswith("dataset_dict.json") for f in fingerprint["files"])
  # A folder of data files goes through datasets.load_dataset.
  (tmp_path / "files").mkdir()
  write_jsonl(tmp_path / "files" / "part.jsonl", docs)
  files = data_config(source="hf", hf_path=str(tmp_path / "files"))
  assert corpora.load_documents(files) == docs
  cases = [
      (data_config(source="hf", hf_path=str(tmp_path / "nowhere")), "does not exist"),
      (data_config(source="hf", hf_path=str(tmp_path / "saved"), text_field="content",
                   hf_split="dev"), r"no split 'dev' \(splits: \['train', 'test'\]\)"),
      (data_config(source="hf", hf_path=str(tmp_path / "saved")), "no column 'text'"),
  ]
  for config, message in cases:
    with pytest.raises(sources.CorpusError, match=message):
      corpora.load_documents(config)


# ---------------------------------------------------------------------- files on a bucket


def test_files_on_a_bucket(gcs, tmp_path, data_config, write_txt, write_jsonl, make_documents):
  """gs:// globs are listed, stat-ed and read in byte ranges as local files are."""
  del gcs
  import gcsfs  # pylint: disable=g-import-not-at-top
  fs = gcsfs.GCSFileSystem()
  (tmp_path / "corpus" / "sub").mkdir(parents=True)
  local_txt = write_txt(tmp_path / "corpus" / "a.txt", make_documents(60, seed=12))
  local_jsonl = write_jsonl(tmp_path / "corpus" / "sub" / "b.jsonl", make_documents(40, seed=13))
  with open(local_txt, "rb") as f:
    fs.pipe("mlmjax-test/corpus/a.txt", f.read().replace(b"\n", b"\r\n"))  # CRLF, same docs
  with open(local_jsonl, "rb") as f:
    fs.pipe("mlmjax-test/corpus/sub/b.jsonl", f.read())
  local = data_config(source="files", paths=f"{local_txt},{tmp_path}/corpus/**/*.jsonl")
  remote = data_config(source="files",
                       paths="gs://mlmjax-test/corpus/*.txt,gs://mlmjax-test/corpus/**/*.jsonl")
  assert sources.resolve_paths(remote.paths) == ["gs://mlmjax-test/corpus/a.txt",
                                                 "gs://mlmjax-test/corpus/sub/b.jsonl"]
  want = _documents(local)
  assert len(want) == 100 and _documents(remote) == want
  # Ranged reads of the objects.
  remote.shard_bytes = local.shard_bytes = 2000
  shards = sources.list_shards(remote)
  assert len(shards) > 4 and all(p.path.startswith("gs://") for s in shards for p in s.pieces)
  assert [t for s in shards for t in corpora.documents_by_split(remote, s)] == [
      t for s in sources.list_shards(local) for t in corpora.documents_by_split(local, s)]
  fingerprint = corpora.source_fingerprint(remote)
  assert [f[:2] for f in fingerprint["files"]] == [
      ["gs://mlmjax-test/corpus/a.txt", fs.size("mlmjax-test/corpus/a.txt")],
      ["gs://mlmjax-test/corpus/sub/b.jsonl", os.path.getsize(local_jsonl)]]
  assert corpora.source_fingerprint(remote) == fingerprint
  fs.pipe("mlmjax-test/corpus/a.txt", b"Another document.\n")
  fs.invalidate_cache()
  assert corpora.source_fingerprint(remote) != fingerprint
  assert storage.glob("gs://mlmjax-test/nothing/*.txt") == []
  with pytest.raises(sources.CorpusError, match="matches no file; check the bucket"):
    sources.resolve_paths("gs://mlmjax-test/nothing/*.txt")


def test_tfds_on_a_bucket(gcs, tfds_dir, data_config, tmp_path):
  """A TFDS dataset in a bucket (configs/tpu_pod.py's data.tfds_data_dir) reads, fingerprints
  and prepares as the same dataset on a local disk; ArrayRecord reaches the emulator through
  google-cloud-cpp's own variable, CLOUD_STORAGE_EMULATOR_ENDPOINT."""
  assert gcs["CLOUD_STORAGE_EMULATOR_ENDPOINT"]
  import gcsfs  # pylint: disable=g-import-not-at-top
  data_dir, _ = tfds_dir
  gcsfs.GCSFileSystem().put(data_dir, "mlmjax-test/tfds_copy", recursive=True)
  settings = dict(source="tfds", tfds_name="tiny_corpus", tfds_validation_split="validation",
                  vocab_size=150)
  local = data_config(tfds_data_dir=data_dir, **settings)
  remote = data_config(tfds_data_dir="gs://mlmjax-test/tfds_copy", **settings)
  assert corpora.load_splits(remote) == corpora.load_splits(local)
  fingerprint = corpora.source_fingerprint(remote)
  names = [f[0] for f in fingerprint["files"]]
  assert names and all(n.startswith("gs://mlmjax-test/tfds_copy/tiny_corpus/1.0.0/")
                       for n in names), names
  assert any(n.endswith("dataset_info.json") for n in names)
  assert corpora.source_fingerprint(remote) == fingerprint
  manifest = prepare_lib.prepare(remote, str(tmp_path / "run"))
  assert manifest["splits"]["train"]["documents"] == 36
  assert manifest["splits"]["validation"]["documents"] == 4
