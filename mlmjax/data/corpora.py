"""The corpus: the documents `data.source` names, their fingerprint and hash, the validation split.

The readers of each source are in `sources.py` (`list_shards`, `read_shard`: lazy, sharded);
here they become one corpus: described by a fingerprint of its inputs (reads no text), split
into (train, validation) by whole documents, sampled for the tokenizer, hashed.

The split is decided for each document by itself (`is_validation`: a keyed hash of its text),
so that every host splits the documents of its own shards with no global count or permutation,
memory does not grow with the corpus, copies of one document always land in the same split (no
train/validation leakage), and neither the order of the files nor the sharding changes it.
"""

import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator

import ml_collections

from mlmjax import storage
from mlmjax.data import sources


SOURCES = ("embedded", "files", "tfds", "hf")
# data.tokenizer_sample_bytes when a config has none.
TOKENIZER_SAMPLE_BYTES = 100_000_000


def is_validation(text: str, seed: int, fraction: float) -> bool:
  """Whether the document `text` is held out for validation at `fraction` with `seed`.

  It is iff h / 2**64 < fraction, h the BLAKE2b hash of its UTF-8 text with an 8-byte digest
  and the key str(seed) (UTF-8), read as a big-endian unsigned integer: about `fraction` of the
  documents, a different set for each seed, the same answer for equal texts.
  """
  if fraction <= 0.0:
    return False
  digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8,
                           key=str(seed).encode("utf-8")).digest()
  return int.from_bytes(digest, "big") / 2**64 < fraction


def _check_fraction(validation_fraction: float) -> None:
  if not 0.0 <= validation_fraction < 1.0:
    raise sources.CorpusError(
        f"data.validation_fraction={validation_fraction} must be in [0, 1).")


def check_split_sizes(num_train: int, num_validation: int, validation_fraction: float) -> None:
  """A CorpusError naming data.validation_fraction when either split of a hash split is empty."""
  total = num_train + num_validation
  if not num_validation:
    raise sources.CorpusError(
        f"The validation split is empty: none of the {total} document(s) is held out at "
        f"data.validation_fraction={validation_fraction}; raise it or add documents.")
  if not num_train:
    raise sources.CorpusError(
        f"The training split is empty: all {total} document(s) are held out at "
        f"data.validation_fraction={validation_fraction}; lower it or add documents.")


def documents_by_split(data_config: ml_collections.ConfigDict, shard: sources.Shard,
                       fraction: float = 1.0) -> Iterator[tuple[str, str]]:
  """(split, text) of each document of `shard` (see `sources.read_shard` for `fraction`).

  A shard with a fixed split (a TFDS validation split) puts every document there; otherwise
  `is_validation` with data.validation_fraction and data.split_seed decides.
  """
  documents = sources.read_shard(data_config, shard, fraction)
  if shard.split is not None:
    return ((shard.split, text) for text in documents)
  held_out, seed = data_config.validation_fraction, data_config.split_seed
  _check_fraction(held_out)
  return (("validation" if is_validation(text, seed, held_out) else "train", text)
          for text in documents)


def split_documents(docs: Iterable[str], validation_fraction: float,
                    seed: int) -> tuple[list[str], list[str]]:
  """(train, validation) of `docs` by `is_validation`, each in the corpus order.

  Splitting whole documents keeps text of one document out of the other split. A split that
  comes out empty is an error (too few documents, or a fraction too small or too large).
  """
  _check_fraction(validation_fraction)
  train, validation = [], []
  for doc in docs:
    (validation if is_validation(doc, seed, validation_fraction) else train).append(doc)
  check_split_sizes(len(train), len(validation), validation_fraction)
  return train, validation


def _empty(data_config: ml_collections.ConfigDict) -> sources.CorpusError:
  return sources.CorpusError(f"The corpus ({data_config.source}) is empty; point the data "
                             "config at text.")


def load_documents(data_config: ml_collections.ConfigDict) -> list[str]:
  """Every document of the corpus (a TFDS validation split's last), eagerly: for small
  corpora, tests and demos; preparation reads shard by shard instead."""
  docs = [doc for shard in sources.list_shards(data_config)
          for doc in sources.read_shard(data_config, shard)]
  if not docs:
    raise _empty(data_config)
  return docs


def load_splits(data_config: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
  """The corpus split into (train, validation) documents, eagerly (see `load_documents`).

  A TFDS dataset with its own held-out split (`data.tfds_validation_split`, e.g. C4's
  "validation") uses it; every other source holds out documents by `is_validation`, with
  `data.validation_fraction` and `data.split_seed` (not config.seed: the split stays the same
  across runs that change it).
  """
  splits = {"train": [], "validation": []}
  for shard in sources.list_shards(data_config):
    for split, text in documents_by_split(data_config, shard):
      splits[split].append(text)
  train, validation = splits["train"], splits["validation"]
  if not train and not validation:
    raise _empty(data_config)
  if data_config.source == "tfds" and data_config.tfds_validation_split:
    if not train:
      raise sources.CorpusError(f"TFDS split {data_config.tfds_split!r} is empty.")
  else:
    check_split_sizes(len(train), len(validation), data_config.validation_fraction)
  return train, validation


def tokenizer_sample(data_config: ml_collections.ConfigDict) -> Callable[[], Iterator[str]]:
  """A function giving, at each call, a fresh iterator over the tokenizer's training text.

  The training documents (as `documents_by_split` splits them) that start in the first share
  of every shard, the share making about `data.tokenizer_sample_bytes` of text
  (`sources.text_bytes` estimates the corpus' size): an evenly spread sample of bounded size.
  The embedded corpus and corpora smaller than that are read whole.
  """
  shards = [s for s in sources.list_shards(data_config) if s.split != "validation"]
  budget = data_config.get("tokenizer_sample_bytes", TOKENIZER_SAMPLE_BYTES)
  if budget <= 0:
    raise sources.CorpusError(f"data.tokenizer_sample_bytes={budget} must be positive.")
  total = sources.text_bytes(data_config, shards)
  fraction = min(1.0, budget / total) if total else 1.0

  def documents() -> Iterator[str]:
    for shard in shards:
      for split, text in documents_by_split(data_config, shard, fraction):
        if split == "train":
          yield text

  return documents


def _tree_stats(root: str) -> list[list]:
  """[path, size, mtime] of every file under `root` (or of `root`), sorted; local or a URL."""
  return [list(entry) for entry in storage.list_files(root)]


def source_fingerprint(data_config: ml_collections.ConfigDict) -> dict:
  """A cheap description of the corpus' inputs: it changes when they do (no text is read)."""
  source = data_config.source
  if source == "embedded":
    return {"source": "embedded", "version": sources.EMBEDDED_VERSION, "python": sys.version}
  if source == "files":
    paths = sources.resolve_paths(data_config.paths)
    return {"source": "files",
            "files": [[os.fspath(storage.path(p)), *storage.stat(p)] for p in paths]}
  if source == "tfds":
    info = sources.tfds_source(data_config, data_config.tfds_split).dataset_info
    return {"source": "tfds", "name": info.full_name, "files": _tree_stats(str(info.data_dir))}
  if source == "hf":
    sources.hf_dataset(data_config)  # fails early, with the message, on a bad path
    return {"source": "hf", "files": _tree_stats(data_config.hf_path)}
  raise sources.unknown_source(source)


def documents_hash(docs: Iterable[str]) -> str:
  """sha256 over the documents and their boundaries, read as they come."""
  digest = hashlib.sha256()
  for doc in docs:
    data = doc.encode("utf-8")
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)
  return digest.hexdigest()
