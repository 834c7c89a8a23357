"""The corpus: the documents `data.source` names, their fingerprint and hash, the validation split.

The readers of each source are in `sources.py`; here they become one corpus (a `Sequence[str]`,
one string per document, in a fixed order), described by a fingerprint of its inputs (read no
text) and a hash of its documents, and split into (train, validation) by whole documents.
"""

import hashlib
import os
import sys
from collections.abc import Sequence

import ml_collections
import numpy as np

from mlmjax.data import sources


SOURCES = ("embedded", "files", "tfds", "hf")


def _unknown_source(source: str) -> sources.CorpusError:
  return sources.CorpusError(
      f"Unknown data.source {source!r}; use 'embedded' (Python's own documentation), 'files' "
      "(with data.paths), 'tfds' (with data.tfds_name) or 'hf' (with data.hf_path).")


def load_documents(data_config: ml_collections.ConfigDict) -> Sequence[str]:
  """The documents named by `data_config.source`, in a fixed order (see `sources`)."""
  source = data_config.source
  if source == "embedded":
    docs = sources.embedded_documents()
  elif source == "files":
    docs = []
    for path in sources.resolve_paths(data_config.paths):
      docs += sources.read_file(path, data_config.text_field)
  elif source == "tfds":
    docs = sources.tfds_corpus(data_config, data_config.tfds_split)
  elif source == "hf":
    docs = sources.hf_corpus(data_config)
  else:
    raise _unknown_source(source)
  if not len(docs):  # pylint: disable=g-explicit-length-test
    raise sources.CorpusError(f"The corpus ({source}) is empty; point the data config at text.")
  return docs


def _tree_stats(path: str) -> list[list]:
  """[path, size, mtime] of every file under `path` (or of `path`), sorted."""
  if os.path.isfile(path):
    files = [path]
  else:
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
  return [[os.path.abspath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files]


def source_fingerprint(data_config: ml_collections.ConfigDict) -> dict:
  """A cheap description of the corpus' inputs: it changes when they do (no text is read)."""
  source = data_config.source
  if source == "embedded":
    return {"source": "embedded", "version": sources.EMBEDDED_VERSION, "python": sys.version}
  if source == "files":
    paths = sources.resolve_paths(data_config.paths)
    return {"source": "files", "files": sum((_tree_stats(p) for p in paths), [])}
  if source == "tfds":
    split = data_config.tfds_split
    info = sources.tfds_source(data_config, split).dataset_info
    return {"source": "tfds", "name": info.full_name, "files": _tree_stats(str(info.data_dir))}
  if source == "hf":
    sources.hf_dataset(data_config)  # fails early, with the message, on a bad path
    return {"source": "hf", "files": _tree_stats(data_config.hf_path)}
  raise _unknown_source(source)


def documents_hash(docs: Sequence[str]) -> str:
  """sha256 over the documents and their boundaries (lazy corpora are read in chunks)."""
  digest = hashlib.sha256()
  for chunk in sources.iter_chunks(docs, 4096):
    for doc in chunk:
      data = doc.encode("utf-8")
      digest.update(len(data).to_bytes(8, "little"))
      digest.update(data)
  return digest.hexdigest()


def _take(docs: Sequence[str], positions: np.ndarray) -> Sequence[str]:
  if isinstance(docs, sources.IndexedCorpus):
    return docs.take(positions)
  return [docs[i] for i in positions]


def split_documents(docs: Sequence[str], validation_fraction: float,
                    seed: int) -> tuple[Sequence[str], Sequence[str]]:
  """Holds out `round(fraction * n)` documents (at least one) chosen by `seed`.

  Both splits keep the corpus order. Splitting whole documents keeps text of one document out
  of the other split. Lists give lists; a lazy corpus gives lazy views (nothing is read).
  """
  if len(docs) < 2:
    raise sources.CorpusError(
        f"The corpus has {len(docs)} document(s); at least 2 are needed to hold one out for "
        "validation. Add text, or separate documents by blank lines.")
  if not 0.0 <= validation_fraction < 1.0:
    raise sources.CorpusError(
        f"data.validation_fraction={validation_fraction} must be in [0, 1).")
  num_validation = min(max(1, round(validation_fraction * len(docs))), len(docs) - 1)
  order = np.random.default_rng(seed).permutation(len(docs))
  held_out = np.zeros(len(docs), bool)
  held_out[order[:num_validation]] = True
  return _take(docs, np.flatnonzero(~held_out)), _take(docs, np.flatnonzero(held_out))


def load_splits(data_config: ml_collections.ConfigDict
                ) -> tuple[Sequence[str], Sequence[str]]:
  """The configured corpus split into (train, validation) documents.

  A TFDS dataset with its own held-out split (`data.tfds_validation_split`, e.g. C4's
  "validation") uses it; every other source holds out `data.validation_fraction`.
  """
  if data_config.source == "tfds" and data_config.tfds_validation_split:
    validation = sources.tfds_corpus(data_config, data_config.tfds_validation_split)
    if not len(validation):  # pylint: disable=g-explicit-length-test
      raise sources.CorpusError(f"TFDS split {data_config.tfds_validation_split!r} is empty.")
    return load_documents(data_config), validation
  # data.split_seed is optional: the split stays the same across runs that change config.seed.
  return split_documents(load_documents(data_config), data_config.validation_fraction,
                         data_config.split_seed)
