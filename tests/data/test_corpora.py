"""Tests of mlmjax.data.sources and corpora: the embedded corpus, files, their errors, the split."""

import inspect
import json
import sys

from pydoc_data import topics
import pytest

from mlmjax.data import corpora, sources


@pytest.fixture(scope="module")
def embedded():
  return sources.embedded_documents()


def test_embedded_corpus_is_substantial_and_clean(embedded):
  assert len(embedded) > 2000
  assert sum(map(len, embedded)) > 1_000_000
  assert len(set(embedded)) == len(embedded)
  assert min(map(len, embedded)) >= sources.MIN_EMBEDDED_CHARS
  assert all(d == sources.clean_text(d) for d in embedded)
  # Both parts are there: a pydoc topic and a standard-library docstring.
  assert sources.clean_text(topics.topics["if"]) in embedded
  assert inspect.cleandoc(json.dumps.__doc__) in embedded


def test_embedded_corpus_is_deterministic(embedded):
  sources._embedded_documents.cache_clear()
  # A fresh child process, with its own random hash seed, collects the docstrings again.
  assert sources.embedded_documents() == embedded


def test_embedded_corpus_imports_nothing_here(embedded):
  del embedded
  # The standard library is imported in a child process; this one stays clean.
  assert "antigravity" not in sys.modules
  assert "imaplib" not in sys.modules


def test_txt_and_jsonl_files(tmp_path, data_config):
  (tmp_path / "sub").mkdir()
  txt = tmp_path / "sub" / "notes.txt"
  txt.write_bytes(b"\xef\xbb\xbf  First doc,\r\nline two.  \r\n\r\n \t \n\n\nSecond doc.\n\n")
  rows = [{"text": "Alpha\u2028beta"}, {"text": "   "}, {"text": "Gamma", "other": 1}]
  jsonl = tmp_path / "rows.jsonl"
  jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n",
                   encoding="utf-8")
  # A UTF-8 byte-order mark is not text. Two globs match notes.txt; it is read once.
  config = data_config(source="files",
                       paths=f"{tmp_path}/**/*.txt, {jsonl}, {tmp_path}/sub/notes.txt")
  docs = corpora.load_documents(config)
  assert docs == ["First doc,\nline two.", "Second doc.", "Alpha\u2028beta", "Gamma"]


def test_jsonl_text_field(tmp_path, data_config, write_jsonl):
  path = write_jsonl(tmp_path / "c.jsonl", ["one two", "three"], field="body")
  assert corpora.load_documents(
      data_config(source="files", paths=path, text_field="body")) == ["one two", "three"]


@pytest.mark.parametrize("content, message", [
    (b"", "holds no document"),
    (b" \n\n\t\n", "holds no document"),
    (b"text\0\x01\x02 more", "looks binary"),
    (b"good line\nbad \xff byte\n", "bad.txt:2: invalid UTF-8"),
])
def test_bad_txt_files(tmp_path, data_config, content, message):
  path = tmp_path / "bad.txt"
  path.write_bytes(content)
  with pytest.raises(sources.CorpusError, match=message):
    corpora.load_documents(data_config(source="files", paths=str(path)))


@pytest.mark.parametrize("lines, message", [
    (['{"text": "fine"}', '{"text": "broken'], r"bad.jsonl:2: not valid JSON"),
    (['{"text": "fine"}', '', '{"body": "x"}'], r"bad.jsonl:3: no field 'text'"),
    (['["text"]'], r"bad.jsonl:1: no field 'text'"),
    (['{"text": 3}'], r"bad.jsonl:1: field 'text' is int"),
])
def test_bad_jsonl_files(tmp_path, data_config, lines, message):
  path = tmp_path / "bad.jsonl"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  with pytest.raises(sources.CorpusError, match=message):
    corpora.load_documents(data_config(source="files", paths=str(path)))


def test_bad_sources(tmp_path, data_config, write_txt):
  good = write_txt(tmp_path / "good.txt", ["a doc", "another"])
  (tmp_path / "data.csv").write_text("a,b\n")
  cases = [
      (data_config(source="web"), "Unknown data.source 'web'"),
      (data_config(source="files", paths=""), "needs data.paths"),
      (data_config(source="files", paths=f"{good},{tmp_path}/missing*.txt"),
       "missing\\*.txt' matches no file"),
      (data_config(source="files", paths=f"{tmp_path}/*.csv"), "unsupported file type"),
  ]
  for config, message in cases:
    with pytest.raises(sources.CorpusError, match=message):
      corpora.load_documents(config)
  assert issubclass(sources.CorpusError, ValueError)


def test_split_is_deterministic_and_complete(make_documents):
  docs = make_documents(100)
  train, validation = corpora.split_documents(docs, 0.1, seed=3)
  assert (train, validation) == corpora.split_documents(docs, 0.1, seed=3)
  assert len(validation) == 10 and len(train) == 90
  assert sorted(train + validation) == sorted(docs)
  assert validation == [d for d in docs if d in validation]  # corpus order kept
  assert corpora.split_documents(docs, 0.1, seed=4)[1] != validation


def test_split_edge_cases():
  assert corpora.split_documents(["a", "b"], 0.0, seed=0)[1] in (["a"], ["b"])
  assert len(corpora.split_documents(["a", "b", "c"], 0.9, seed=0)[0]) == 1
  with pytest.raises(sources.CorpusError, match="at least 2"):
    corpora.split_documents(["only one"], 0.5, seed=0)
  with pytest.raises(sources.CorpusError, match="validation_fraction"):
    corpora.split_documents(["a", "b"], 1.0, seed=0)
