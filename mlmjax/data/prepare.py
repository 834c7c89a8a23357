"""Tokenize, annotate and pack a corpus into fixed-length rows on disk, with a manifest.

    mlmjax-prepare --config=configs/quickstart.py --workdir=DIR

writes DIR/data/:
  manifest.json                  what is there and how it was made (read it first)
  {split}.npy                    input_ids   int32 [N, S]   split: train, validation
  {split}_segment_ids.npy        segment_ids int32 [N, S]   document of each position in a row
  {split}_{annotation}.npy       per `data.annotations`: entity_ids int32, phrase_ids int32,
                                 pos_class int8, ngram_ids int32, all [N, S], the same rows
                                 as input_ids
  token_stats.npz                frequency / document frequency per token id (stats.py)
  pmi_vocab.npz, pmi_vocab.json  the PMI n-gram vocabulary, when ngram_ids is asked for

Storage: one .npy file per split and field, written by appending rows and read back as a
read-only memmap. The loader's global shuffle needs random access to single rows, which a
memmap gives at the cost of a page-cache read, with no index or decoding, and the processes of
a host share one copy of the pages. Each JAX process reads only its rows of every batch, so the
files need not be split per host; a single file per field also keeps annotations optional and
separately replaceable. ArrayRecord would add per-record compression and framing that rows of
fixed size do not need.

Work: documents are read in chunks (lazy sources are never held whole), tokenized and
annotated in `data.num_workers` processes (encode.py; 0: every core; results come back in
order, so the output does not depend on the number of workers), and packed in this process
(packing.py) while the workers go on. Re-running with the same data config, corpus, tokenizer,
annotator and annotation schema is a no-op.
"""

import collections
import dataclasses
import os
import time
from collections.abc import Sequence

from absl import logging
import ml_collections
import numpy as np
import tokenizers

from mlmjax.data import annotate
from mlmjax.data import corpora
from mlmjax.data import encode
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import packing
from mlmjax.data import pmi
from mlmjax.data import sources
from mlmjax.data import stats as stats_lib
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.masking import tables

def array_files(split: str, fields: Sequence[str] = ()) -> dict[str, str]:
  """The file names of a split's arrays, by batch key."""
  files = {"input_ids": f"{split}.npy", "segment_ids": f"{split}_segment_ids.npy"}
  files.update({f: f"{split}_{f}.npy" for f in fields})
  return files


def tokenize(tok: tokenizers.Tokenizer, docs: Sequence[str]) -> list[np.ndarray]:
  """Token ids of each document, without special tokens: int32 [len(doc)] each."""
  ids = []
  for start in range(0, len(docs), encode.CHUNK_DOCS):
    encodings = tok.encode_batch(list(docs[start:start + encode.CHUNK_DOCS]),
                                 add_special_tokens=False)
    ids += [np.asarray(e.ids, np.int32) for e in encodings]
  return ids


# ------------------------------------------------------------------------------ .npy writing


class NpyWriter:
  """Appends rows to a .npy file; `close` writes the final shape and renames it into place.

  The header is written first for a huge placeholder shape and later rewritten for the real
  one, padded to the same length, so rows stream to disk without knowing their number. Until
  `close`, the file has a temporary name: a crash never leaves a truncated array.
  """

  _HEADER_BYTES = 128  # magic (6) + version (2) + length (2) + the padded dict, as numpy pads

  def __init__(self, path: str, dtype: np.dtype, row_shape: tuple[int, ...]):
    self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
    self.rows = 0
    self._file = open(path + ".tmp", "wb")
    self._file.write(self._header(10**15))

  def _header(self, rows: int) -> bytes:
    header = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                   "shape": (rows, *self.row_shape)})
    size = self._HEADER_BYTES - 10
    if len(header) + 1 > size:
      raise ValueError(f"Row shape {self.row_shape} too large for a .npy header.")
    header = header.ljust(size - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + size.to_bytes(2, "little") + header.encode("latin1")

  def append(self, rows: np.ndarray) -> None:
    if rows.shape[1:] != self.row_shape:
      raise ValueError(f"rows of shape {rows.shape[1:]}, expected {self.row_shape}")
    self._file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
    self.rows += rows.shape[0]

  def close(self) -> tuple[int, ...]:
    self._file.seek(0)
    self._file.write(self._header(self.rows))
    self._file.close()
    os.replace(self.path + ".tmp", self.path)
    return (self.rows, *self.row_shape)


# -------------------------------------------------------------------------------- a split


def _drop_empty(chunk: annotate.EncodedChunk) -> tuple[annotate.EncodedChunk, int]:
  keep = chunk.lengths > 0
  return (annotate.EncodedChunk(chunk.ids, chunk.lengths[keep], chunk.sentence_start,
                                chunk.fields), int((~keep).sum()))


def _add_pos_classes(rows: dict[str, np.ndarray], wanted: Sequence[str],
                     token_classes: dict[str, np.ndarray]) -> None:
  """pos_class of packed rows, when wanted: the annotator's, shared by each word's tokens, or
  the vocabulary fallback when the annotator found none on the text."""
  if annotate.POS not in wanted:
    return
  rows[annotate.POS] = (
      annotate.share_word_class(rows[annotate.POS], rows["input_ids"], token_classes)
      if annotate.POS in rows else annotate.vocab_pos_classes(rows["input_ids"], token_classes))


def _prepare_split(tok, docs, split: str, data_dir: str, spec: dict,
                   stats: stats_lib.TokenStats | None) -> dict:
  """Tokenizes, annotates, packs and writes one split; returns its manifest entry."""
  roles = tokenizer_lib.special_roles(tok)
  text_fields = spec["job"]["wanted"]
  seq_len = spec["seq_len"]
  packer = packing.Packer(seq_len, spec["packing"], roles["cls"], roles["sep"], roles["pad"],
                          text_fields)
  row_fields = [f for f in spec["wanted"] if f in annotate.TEXT_ANNOTATIONS]
  files = array_files(split, row_fields)
  writers = {key: NpyWriter(os.path.join(data_dir, name), packing.FIELD_DTYPES[key],
                            (seq_len,)) for key, name in files.items()}
  counts = collections.Counter()

  def write(rows: dict[str, np.ndarray]) -> None:
    _add_pos_classes(rows, spec["wanted"], spec["tables"])
    for key, writer in writers.items():
      writer.append(rows[key])
    counts["padding"] += int((rows["segment_ids"] == 0).sum())
    if stats is not None:
      stats.add_rows(rows["input_ids"])

  for chunk in encode.encode_chunks(tok, docs, spec["job"], spec["workers"]):
    # A document of only control characters or whitespace encodes to no token; it has nothing
    # to learn from, so it is left out and counted.
    chunk, empty = _drop_empty(chunk)
    counts["documents_without_tokens"] += empty
    counts["documents"] += len(chunk.lengths)
    counts["tokens"] += len(chunk.ids)
    if stats is not None:
      stats.add_documents(chunk.ids, chunk.lengths)
    write(packer.add(chunk))
  write(packer.finish())
  shapes = {key: writer.close() for key, writer in writers.items()}
  if not counts["tokens"]:
    raise sources.CorpusError(f"The {split} split tokenizes to no token at all; check the "
                              "corpus and the tokenizer.")
  if packer.units_split:
    unit = "sentences" if spec["packing"] == "full_sentences" else "documents"
    logging.warning("%s: %d %s longer than a row (%d tokens) continue across rows.", split,
                    packer.units_split, unit, seq_len - 1)
  return {
      "documents": counts["documents"],
      "documents_without_tokens": counts["documents_without_tokens"],
      "tokens": counts["tokens"],  # [CLS]/[SEP]/[PAD] not counted
      "rows": shapes["input_ids"][0],
      "padding": counts["padding"],
      "units_split": packer.units_split,  # sentences/documents longer than a row, continued
      "shape": list(shapes["input_ids"]),
      "dtype": {key: np.dtype(packing.FIELD_DTYPES[key]).name for key in files},
      "files": files,
  }


def _add_ngrams(tok, data_dir: str, manifest_splits: dict, pmi_config: pmi.PmiConfig,
                tables: dict[str, np.ndarray]) -> dict:
  """Builds the PMI vocabulary on the training rows and writes ngram_ids for every split."""
  word_start, barrier = tables["word_start"], tables["barrier"]

  def arrays(split):
    files = manifest_splits[split]["files"]
    return {k: np.load(os.path.join(data_dir, files[k]), mmap_mode="r")
            for k in ("input_ids", "segment_ids")}

  built = pmi.build_vocab(arrays("train"), word_start, barrier, pmi_config,
                          decode=lambda ids: tok.decode(ids))
  entry = {**pmi.save_vocab(built, data_dir), "config": dataclasses.asdict(pmi_config)}
  for split, info in manifest_splits.items():
    name = array_files(split, [annotate.NGRAM])[annotate.NGRAM]
    writer = NpyWriter(os.path.join(data_dir, name), np.int32, (info["shape"][1],))
    covered = 0
    for block in pmi.match_rows(arrays(split), word_start, barrier, built["vocab"]):
      writer.append(block)
      covered += int((block > 0).sum())
    writer.close()
    info["files"][annotate.NGRAM] = name
    info["dtype"][annotate.NGRAM] = "int32"
    info["ngram_tokens"] = covered  # tokens inside a matched n-gram
  return entry


def token_tables(tok: tokenizers.Tokenizer) -> dict[str, np.ndarray]:
  """Per-id tables the annotators read: specials, word starts, function words."""
  vocab = tok.get_vocab()
  tokens = [None] * (max(vocab.values()) + 1)
  for t, i in vocab.items():
    tokens[i] = t
  special = np.zeros(len(tokens), bool)
  special[list(tokenizer_lib.special_roles(tok).values())] = True
  # Words as the masking library groups them (its convention, detected from the vocabulary).
  convention = tables.detect_convention(t for t in tokens if t is not None)
  word_start = tables.word_starts(tokens, convention) | special
  return annotate.token_classes(tokens, special, tables.DEFAULT_FUNCTION_WORDS, convention,
                                word_start)


# ------------------------------------------------------------------------------ manifest


def _encode_job(wanted: Sequence[str], annotator: str, mode: str) -> dict:
  """What the tokenizing workers (encode.Encoder) are to make.

  Entities, phrases and spaCy's POS classes are found on the text, there; the vocabulary POS
  fallback and PMI n-grams on the packed rows, in this process.
  """
  spacy = annotator.startswith("spacy:")
  text_fields = tuple(a for a in wanted if a in (annotate.ENTITY, annotate.PHRASE)
                      or (a == annotate.POS and spacy))
  return {"wanted": text_fields, "annotator": annotator, "sentences": mode == "full_sentences",
          "function_words": tuple(sorted(tables.DEFAULT_FUNCTION_WORDS))}


def prepare(data_config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Makes workdir/data (see the module docstring) and returns its manifest.

  A no-op (returns the manifest) when the data there was prepared from the same data config,
  the same corpus files, the same tokenizer and the same annotator; otherwise prepares again
  and logs why. With a shared workdir, run it from one process (e.g. `mlmjax-prepare`, or
  process 0 followed by a barrier): concurrent writers would race on the same files.
  """
  if data_config.seq_len < 3:
    raise ValueError(f"data.seq_len={data_config.seq_len} must be at least 3 ([CLS] x [SEP]).")
  if data_config.packing not in packing.MODES:
    raise ValueError(f"Unknown data.packing {data_config.packing!r}; use one of "
                     f"{list(packing.MODES)}.")
  manifest_lib.wanted_annotations(data_config)  # refuses an unknown name before any work
  data_dir = os.path.join(workdir, manifest_lib.DATA_DIR)
  manifest = manifest_lib.read(data_dir)
  reasons = manifest_lib.stale_reasons(manifest, data_config, workdir)
  if not reasons:
    logging.info("Prepared data in %s is up to date.", data_dir)
    return manifest
  logging.info("Preparing data in %s: %s.", data_dir, "; ".join(reasons))
  return _prepare_afresh(data_config, workdir, data_dir)


def _prepare_afresh(data_config: ml_collections.ConfigDict, workdir: str,
                    data_dir: str) -> dict:
  """The tokenizer, every split's arrays, the statistics and n-grams, then the manifest."""
  mode = data_config.packing
  wanted = manifest_lib.wanted_annotations(data_config)
  pmi_config = pmi.PmiConfig.from_config(data_config.pmi)
  start = time.perf_counter()
  fingerprint = corpora.source_fingerprint(data_config)
  annotator = manifest_lib.annotator(data_config)
  train, validation = corpora.load_splits(data_config)
  tok = tokenizer_lib.get_tokenizer(data_config, workdir, documents=train)
  tokenizer_seconds = time.perf_counter() - start
  os.makedirs(data_dir, exist_ok=True)
  manifest_path = os.path.join(data_dir, manifest_lib.MANIFEST)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # arrays are about to change: never pair them with an old manifest

  tables = token_tables(tok)
  spec = {"seq_len": data_config.seq_len, "packing": mode,
          "workers": encode.num_workers(data_config), "wanted": wanted, "tables": tables,
          "job": _encode_job(wanted, annotator, mode)}
  roles = tokenizer_lib.special_roles(tok)
  stats = stats_lib.TokenStats(len(tables["word_start"]), roles["pad"])
  splits = {}
  for split, split_docs in zip(manifest_lib.SPLITS, (train, validation)):
    splits[split] = _prepare_split(tok, split_docs, split, data_dir, spec,
                                   stats if split == "train" else None)
  tok_hash = tokenizer_lib.tokenizer_hash(tok)
  stats_file = stats.save(data_dir, tok_hash)
  pmi_entry = (_add_ngrams(tok, data_dir, splits, pmi_config, tables)
               if annotate.NGRAM in wanted else None)
  seconds = time.perf_counter() - start
  tokens = sum(s["tokens"] for s in splits.values())
  manifest = {
      "format_version": manifest_lib.FORMAT_VERSION,
      "data_dir": os.path.abspath(data_dir),
      "data_config": manifest_lib.config_record(data_config),
      "source_fingerprint": fingerprint,
      "tokenizer": {"sha256": tok_hash,
                    "vocab_size": tok.get_vocab_size(),
                    "special_ids": tokenizer_lib.special_ids(tok),
                    "roles": roles},
      "seq_len": data_config.seq_len,
      "packing": mode,
      "annotations": list(wanted),
      "annotator": annotator,
      "schema": manifest_lib.schema(wanted, annotator),
      "token_stats": stats_file,
      "pmi": pmi_entry,
      "splits": splits,
      "timing": {"seconds": round(seconds, 3), "tokenizer_seconds": round(tokenizer_seconds, 3),
                 "workers": spec["workers"],
                 "tokens_per_second": round(tokens / max(seconds - tokenizer_seconds, 1e-9))},
  }
  manifest_lib.write(manifest_path, manifest)  # last: the arrays are complete
  logging.info("Prepared %s in %.1fs.", ", ".join(
      f"{s}: {m['documents']} docs, {m['tokens']} tokens, {m['rows']} rows"
      for s, m in splits.items()), seconds)
  return manifest


def encode_texts(tok: tokenizers.Tokenizer, texts: Sequence[str],
                 manifest: dict) -> dict[str, np.ndarray]:
  """New texts as the prepared data's rows: one text a row, every annotation made as here.

  Args:
    tok: the tokenizer the data was prepared with.
    texts: N texts, each to fit one row.
    manifest: the prepared data's manifest (`prepare` or `manifest.read`).
  Returns:
    {"input_ids", "segment_ids", annotation: [N, S]}, S the longest text's tokens + 2, each
    row "[CLS] text [SEP]" then padding, with the manifest's annotations: the same annotator
    (rules or spaCy pipeline), the vocabulary POS fallback, the PMI n-gram vocabulary.
  """
  wanted = tuple(manifest["annotations"])
  job = _encode_job(wanted, manifest["annotator"], "per_document")
  chunk, _ = _drop_empty(encode.Encoder(tok.to_str(), job)(list(texts)))
  if len(chunk.lengths) != len(texts):
    raise ValueError("a text encodes to no token at all; give text with words in it")
  roles = tokenizer_lib.special_roles(tok)
  packer = packing.Packer(int(chunk.lengths.max()) + 2, "per_document", roles["cls"],
                          roles["sep"], roles["pad"], job["wanted"])
  parts = [packer.add(chunk), packer.finish()]
  rows = {k: np.concatenate([p[k] for p in parts if k in p]) for k in parts[0]}
  token_classes = token_tables(tok)
  _add_pos_classes(rows, wanted, token_classes)
  if annotate.NGRAM in wanted:
    rows[annotate.NGRAM] = pmi.match(rows["input_ids"], rows["segment_ids"],
                                     token_classes["word_start"], token_classes["barrier"],
                                     pmi.load_vocab(manifest["data_dir"]))
  return rows

