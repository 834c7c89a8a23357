"""Tokenize and pack a corpus into fixed-length rows on disk: workdir/data/*.npy + manifest.json.

Packing (concatenate, then split; RoBERTa's FULL-SENTENCES without sentence boundaries): each
split's documents, in order, become one token stream `doc1 [SEP] doc2 [SEP] ...`, cut into
pieces of `seq_len - 1` tokens; each row is `[CLS]` followed by one piece. So a row holds
several documents, a document longer than the room left continues at the start of the next
row, and only the split's last row is padded ([PAD] at the end). Nothing is truncated.

`segment_ids[r, t]` is k when position t holds (a piece of) the k-th document of row r, counted
from 1; [CLS] belongs to the first and each [SEP] to the document it ends; padding is 0.
"""

import json
import os
import time
from collections.abc import Callable, Sequence

from absl import logging
import ml_collections
import numpy as np
import tokenizers

from mlmjax.data import corpora
from mlmjax.data import tokenizer as tokenizer_lib

FORMAT_VERSION = 1
DATA_DIR = "data"  # under the workdir
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
# Documents tokenized per encode_batch call: big enough for the Rust thread pool to use every
# core, small enough that the Encoding objects (much larger than the ids) stay few.
_ENCODE_CHUNK = 2048


def array_files(split: str) -> dict[str, str]:
  """The file names of a split's arrays, by batch key."""
  return {"input_ids": f"{split}.npy", "segment_ids": f"{split}_segment_ids.npy"}


def tokenize(tok: tokenizers.Tokenizer, docs: Sequence[str]) -> list[np.ndarray]:
  """Token ids of each document, without special tokens: int32 [len(doc)] each."""
  ids = []
  for start in range(0, len(docs), _ENCODE_CHUNK):
    encodings = tok.encode_batch(docs[start:start + _ENCODE_CHUNK], add_special_tokens=False)
    ids += [np.asarray(e.ids, np.int32) for e in encodings]
  return ids


def _in_memory(key: str, shape: tuple[int, int]) -> np.ndarray:
  del key
  return np.empty(shape, np.int32)


def pack(doc_ids: Sequence[np.ndarray], seq_len: int, cls_id: int, sep_id: int, pad_id: int,
         allocate: Callable[[str, tuple[int, int]], np.ndarray] = _in_memory
         ) -> tuple[np.ndarray, np.ndarray]:
  """Packs documents into rows (see the module docstring).

  Args:
    doc_ids: token ids of each document, without special tokens; none may be empty.
    seq_len: S, tokens per row including [CLS].
    cls_id, sep_id, pad_id: the special tokens' ids.
    allocate: `allocate(key, shape)` returns the int32 output array for "input_ids" or
      "segment_ids", e.g. a memmap to fill on disk.
  Returns:
    input_ids int32 [N, S] and segment_ids int32 [N, S], N = ceil(stream length / (S - 1)).
  """
  width = seq_len - 1
  lengths = np.fromiter((len(d) + 1 for d in doc_ids), np.int64, len(doc_ids))  # + [SEP]
  ends = np.cumsum(lengths)
  num_rows = -(-int(ends[-1]) // width)
  # Built in place in arrays of the final size: a corpus' token stream can be large.
  stream = np.full(num_rows * width, pad_id, np.int32)
  stream[ends - 1] = sep_id
  for ids, end in zip(doc_ids, ends):
    stream[end - 1 - len(ids):end - 1] = ids
  doc_index = np.full(num_rows * width, -1, np.int32)
  doc_index[:ends[-1]] = np.repeat(np.arange(len(doc_ids), dtype=np.int32), lengths)
  doc_index = doc_index.reshape(num_rows, width)

  input_ids = allocate("input_ids", (num_rows, seq_len))
  input_ids[:, 0] = cls_id
  input_ids[:, 1:] = stream.reshape(num_rows, width)
  segment_ids = allocate("segment_ids", (num_rows, seq_len))
  segment_ids[:, 0] = 1
  # Documents in the stream are consecutive integers, so the k-th document of a row is its
  # index minus the index of the row's first one, plus 1.
  segment_ids[:, 1:] = np.where(doc_index >= 0, doc_index - doc_index[:, :1] + 1, 0)
  return input_ids, segment_ids


def _prepare_split(tok, docs, data_config, out_dir, split) -> dict:
  """Tokenizes, packs and writes one split; returns its manifest entry."""
  specials = tokenizer_lib.special_ids(tok)
  doc_ids = tokenize(tok, docs)
  # A document of only control characters or whitespace encodes to no token; it has nothing to
  # learn from, so it is left out and counted.
  empty = sum(len(d) == 0 for d in doc_ids)
  doc_ids = [d for d in doc_ids if len(d)]
  if not doc_ids:
    raise corpora.CorpusError(f"The {split} split tokenizes to no token at all; check the "
                              "corpus and the tokenizer.")
  files = array_files(split)
  paths = {key: os.path.join(out_dir, name) for key, name in files.items()}

  # The rows are packed straight into .npy memmaps (np.lib.format.open_memmap): the [N, S]
  # arrays never need to fit in RAM, since the OS writes pages back as they fill. The files are
  # plain .npy (shape and dtype in the header), which the loader maps read-only: it reads
  # random rows without loading a split, and the processes of a host share one copy in the
  # page cache. Temporary names, renamed when complete, so a crash leaves no truncated array.
  def allocate(key, shape):
    return np.lib.format.open_memmap(paths[key] + ".tmp", mode="w+", dtype=np.int32,
                                     shape=shape)

  input_ids, segment_ids = pack(doc_ids, data_config.seq_len, specials[tokenizer_lib.CLS],
                                specials[tokenizer_lib.SEP], specials[tokenizer_lib.PAD],
                                allocate)
  entry = {
      "documents": len(doc_ids),
      "documents_without_tokens": int(empty),
      "tokens": int(sum(len(d) for d in doc_ids)),  # [CLS]/[SEP]/[PAD] not counted
      "rows": int(input_ids.shape[0]),
      "padding": int((segment_ids == 0).sum()),
      "shape": list(input_ids.shape),
      "dtype": {"input_ids": str(input_ids.dtype), "segment_ids": str(segment_ids.dtype)},
      "files": files,
  }
  for array in (input_ids, segment_ids):
    array.flush()
  del input_ids, segment_ids
  for path in paths.values():
    os.replace(path + ".tmp", path)
  return entry


def _config_record(data_config: ml_collections.ConfigDict) -> dict:
  # Through JSON so that tuples and lists compare equal to what a manifest holds.
  return json.loads(json.dumps(data_config.to_dict(), sort_keys=True))


def read_manifest(data_dir: str) -> dict | None:
  """The manifest in `data_dir` (workdir/data), or None if there is none."""
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _stale_reasons(manifest, data_config, workdir) -> list[str]:
  """Why the prepared data in `workdir` does not match the config ([] if it does)."""
  if manifest is None:
    return ["no prepared data"]
  if manifest.get("format_version") != FORMAT_VERSION:
    return [f"format version {manifest.get('format_version')} != {FORMAT_VERSION}"]
  reasons = []
  old, new = manifest["data_config"], _config_record(data_config)
  reasons += [f"data.{k} changed" for k in sorted(set(old) | set(new))
              if old.get(k) != new.get(k)]
  if manifest["source_fingerprint"] != corpora.source_fingerprint(data_config):
    reasons.append("the corpus files changed")
  tok = tokenizer_lib.existing_tokenizer(data_config, workdir)
  if tok is None or tokenizer_lib.tokenizer_hash(tok) != manifest["tokenizer"]["sha256"]:
    reasons.append("the tokenizer changed")
  data_dir = os.path.join(workdir, DATA_DIR)
  for split in SPLITS:
    for name in manifest["splits"][split]["files"].values():
      if not os.path.exists(os.path.join(data_dir, name)):
        reasons.append(f"{name} is missing")
  return reasons


def prepare(data_config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Makes workdir/data/{train,validation}{,_segment_ids}.npy and manifest.json; returns it.

  A no-op (returns the manifest) when the data there was prepared from the same data config,
  the same corpus files and the same tokenizer; otherwise prepares again and logs why. With a
  shared workdir, run it from one process (e.g. `mlmjax-prepare`, or process 0 followed by a
  barrier): concurrent writers would race on the same files.
  """
  if data_config.seq_len < 3:
    raise ValueError(f"data.seq_len={data_config.seq_len} must be at least 3 ([CLS] x [SEP]).")
  data_dir = os.path.join(workdir, DATA_DIR)
  manifest = read_manifest(data_dir)
  reasons = _stale_reasons(manifest, data_config, workdir)
  if not reasons:
    logging.info("Prepared data in %s is up to date.", data_dir)
    return manifest
  logging.info("Preparing data in %s: %s.", data_dir, "; ".join(reasons))

  start = time.perf_counter()
  fingerprint = corpora.source_fingerprint(data_config)
  train, validation = corpora.load_splits(data_config)
  tok = tokenizer_lib.get_tokenizer(data_config, workdir, documents=train)
  os.makedirs(data_dir, exist_ok=True)
  manifest_path = os.path.join(data_dir, MANIFEST)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # arrays are about to change: never pair them with an old manifest
  splits = {split: _prepare_split(tok, split_docs, data_config, data_dir, split)
            for split, split_docs in zip(SPLITS, (train, validation))}
  manifest = {
      "format_version": FORMAT_VERSION,
      "data_config": _config_record(data_config),
      "source_fingerprint": fingerprint,
      "tokenizer": {"sha256": tokenizer_lib.tokenizer_hash(tok),
                    "vocab_size": tok.get_vocab_size(),
                    "special_ids": tokenizer_lib.special_ids(tok)},
      "seq_len": data_config.seq_len,
      "packing": "concatenate-then-split; rows [CLS] piece, [SEP] after each document",
      "splits": splits,
  }
  tmp = manifest_path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)
  os.replace(tmp, manifest_path)  # written last: its presence means the arrays are complete
  logging.info("Prepared %s in %.1fs.", ", ".join(
      f"{s}: {m['documents']} docs, {m['tokens']} tokens, {m['rows']} rows"
      for s, m in splits.items()), time.perf_counter() - start)
  return manifest
