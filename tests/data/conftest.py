"""Shared fixtures for the data tests: a data config factory and tiny generated corpora."""

import json

from mlmjax import config as mlmjax_config
import numpy as np
import pytest

_WORDS = (
    "the a model token text masked language learns predicts hidden words from context every "
    "step batch sequence document packing row shard process seed epoch loader vocabulary "
    "piece encoder attention layer python function returns value string list dictionary "
    "iterator generator exception module class method argument keyword default"
).split()


def _make_documents(num_docs: int, seed: int = 0, max_words: int = 40) -> list[str]:
  """Deterministic English-like documents of 3 to max_words words."""
  rng = np.random.default_rng(seed)
  docs = []
  for _ in range(num_docs):
    words = rng.choice(_WORDS, size=int(rng.integers(3, max_words + 1)))
    docs.append(" ".join(words).capitalize() + ".")
  return docs


def _write_txt(path, docs: list[str]) -> str:
  path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
  return str(path)


def _write_jsonl(path, docs: list[str], field: str = "text") -> str:
  path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)),
                  encoding="utf-8")
  return str(path)


def _data_config(**overrides):
  """The config.data block of the defaults (mlmjax/config.py), with test-sized overrides."""
  config = mlmjax_config.default_config().data
  config.update(dict(validation_fraction=0.1, seq_len=32, vocab_size=200), **overrides)
  return config


# The helpers reach the tests as fixtures (test modules never import conftest); session scope
# lets module-scoped fixtures use them too.
@pytest.fixture(scope="session")
def make_documents():
  return _make_documents


@pytest.fixture(scope="session")
def write_txt():
  return _write_txt


@pytest.fixture(scope="session")
def write_jsonl():
  return _write_jsonl


@pytest.fixture(scope="session")
def data_config():
  return _data_config


@pytest.fixture
def files_config(tmp_path):
  """A data config over a .txt and a .jsonl file of generated documents."""
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  _write_txt(corpus / "a.txt", _make_documents(30, seed=1))
  _write_jsonl(corpus / "b.jsonl", _make_documents(30, seed=2))
  return _data_config(source="files", paths=f"{corpus}/*.txt,{corpus}/*.jsonl")
