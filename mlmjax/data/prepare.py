"""Tokenize, annotate and pack a corpus into fixed-length rows, in shards, with a manifest.

    mlmjax-prepare --config=configs/quickstart.py --workdir=DIR      # DIR may be gs://bucket/x

writes DIR/data/:
  manifest.json                    what is there and how it was made (read it first)
  parts/{split}-{k:05d}.{field}.npy  shard k's rows of a split: input_ids, segment_ids and each
                                   of `data.annotations` (entity_ids, phrase_ids, pos_class,
                                   ngram_ids), all [n_k, S]; a split's rows are its parts in
                                   shard order
  parts/{k:05d}.json, .stats.npz   shard k's record: its counts, its token statistics
  token_stats.npz                  frequency / document frequency per token id (stats.py)
  pmi_vocab.npz, pmi_vocab.json    the PMI n-gram vocabulary, when ngram_ids is asked for

Shards: the corpus is cut into shards of about `data.shard_bytes` of input (sources.py), fixed
by the corpus and the config alone. With P processes (the hosts of a cluster), process p
prepares shards p, p + P, ... with its own tokenizing workers, so the hosts of a pod prepare in
parallel and the result does not depend on P; rows never cross a shard. Each process reads its
shards lazily and writes each part locally, then uploads it when the workdir is a bucket, so
memory and local disk hold one shard at a time whatever the corpus size. Process 0 trains the
tokenizer first (on a bounded sample, tokenizer.py) and, once every shard is written, merges
the shards' statistics, builds the PMI vocabulary and writes the manifest, last: its presence
means the data is complete. A shard whose record matches the inputs is not prepared again, so
a preparation that was killed goes on from the shards it had finished.

Storage: .npy files, read back as memmaps (local workdir) or copied range by range to each
host's local disk (bucket workdir; pipeline.py). Rows of fixed size need no framing, index or
decoding; one file per field keeps annotations optional.

Work within a process: chunks of documents are tokenized and annotated in `data.num_workers`
processes (encode.py; 0: every core; results come back in order, so the output does not depend
on the number of workers), and packed here (packing.py) while the workers go on. Re-running
with the same data config, corpus, tokenizer, annotator and annotation schema is a no-op.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence

from absl import logging
import ml_collections
import numpy as np
import tokenizers

from mlmjax import storage
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

PARTS = "parts"  # under workdir/data
Sync = Callable[[str], None]  # a barrier across the processes, by name


def part_files(split: str, shard: int, fields: Sequence[str]) -> dict[str, str]:
  """The files of shard `shard`'s rows of `split`, by batch key (relative to workdir/data)."""
  return {f: f"{PARTS}/{split}-{shard:05d}.{f}.npy" for f in ("input_ids", "segment_ids",
                                                                *fields)}


def _record_name(shard: int, suffix: str = ".json") -> str:
  return f"{PARTS}/{shard:05d}{suffix}"


# ------------------------------------------------------------------------------ .npy writing


class NpyWriter:
  """Appends rows to a .npy file; `close` writes the final shape and renames it into place.

  The header is written first for a huge placeholder shape and later rewritten for the real
  one, padded to the same length, so rows stream to disk without knowing their number. Until
  `close`, the file has a temporary name: a crash never leaves a truncated array.
  """

  # magic (6) + version (2) + length (2) + the dict, padded as numpy pads it
  _HEADER_BYTES = manifest_lib.NPY_HEADER_BYTES

  def __init__(self, path: str, dtype: np.dtype, row_shape: tuple[int, ...], upload_to=None):
    self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
    self.upload_to = upload_to  # a URL: the file goes there on `close`, and leaves this disk
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

  def abort(self) -> None:
    """Closes and deletes the unfinished file (a failed preparation leaves nothing behind)."""
    self._file.close()
    if os.path.exists(self.path + ".tmp"):
      os.remove(self.path + ".tmp")

  def close(self) -> tuple[int, ...]:
    self._file.seek(0)
    self._file.write(self._header(self.rows))
    self._file.close()
    os.replace(self.path + ".tmp", self.path)
    if self.upload_to is not None:
      storage.upload(self.path, self.upload_to)
      os.remove(self.path)
    return (self.rows, *self.row_shape)



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



def _writer(data_dir: str, name: str, staging: str | None, dtype, row_shape) -> "NpyWriter":
  """A writer of data_dir/name: in place for a local folder, staged and uploaded for a URL."""
  if staging is None:
    target = os.path.join(data_dir, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return NpyWriter(target, dtype, row_shape)
  return NpyWriter(os.path.join(staging, os.path.basename(name)), dtype, row_shape,
                   upload_to=storage.join(data_dir, name))


# ------------------------------------------------------------------------------ the shards


@dataclasses.dataclass(frozen=True)
class Spec:
  """What preparation makes, the same in every process."""
  seq_len: int
  packing: str
  wanted: tuple[str, ...]  # every annotation asked for
  job: dict  # what the tokenizing workers make (`_encode_job`)
  token_classes: dict  # `token_tables(tok)`
  workers: int
  key: str  # hash of the inputs: a shard record with another key is stale

  @property
  def row_fields(self) -> list[str]:
    """The annotations made with the rows (PMI n-grams come after, from the training rows)."""
    return [f for f in self.wanted if f in annotate.TEXT_ANNOTATIONS]


class _ShardWriter:
  """One shard's rows of each split, packed and written as they come; `finish` records it."""

  def __init__(self, shard: sources.Shard, tok, spec: Spec, data_dir: str,
               staging: str | None):
    self.shard, self.spec, self.data_dir, self.staging = shard, spec, data_dir, staging
    self.roles = tokenizer_lib.special_roles(tok)
    self.splits = {}
    self.stats = stats_lib.TokenStats(len(spec.token_classes["word_start"]), self.roles["pad"])

  def _split(self, split: str) -> dict:
    if split not in self.splits:
      spec, roles = self.spec, self.roles
      files = part_files(split, self.shard.index, spec.row_fields)
      self.splits[split] = {
          "packer": packing.Packer(spec.seq_len, spec.packing, roles["cls"], roles["sep"],
                                   roles["pad"], spec.job["wanted"]),
          "files": files,
          "writers": {key: _writer(self.data_dir, name, self.staging,
                                   packing.FIELD_DTYPES[key], (spec.seq_len,))
                      for key, name in files.items()},
          "counts": collections.Counter()}
    return self.splits[split]

  def _write(self, split: str, rows: dict[str, np.ndarray]) -> None:
    entry = self.splits[split]
    _add_pos_classes(rows, self.spec.wanted, self.spec.token_classes)
    for key, writer in entry["writers"].items():
      writer.append(rows[key])
    entry["counts"]["padding"] += int((rows["segment_ids"] == 0).sum())
    if split == "train":
      self.stats.add_rows(rows["input_ids"])

  def add(self, split: str, chunk: annotate.EncodedChunk) -> None:
    entry = self._split(split)
    # A document of only control characters or whitespace encodes to no token; it has nothing
    # to learn from, so it is left out and counted.
    chunk, empty = _drop_empty(chunk)
    counts = entry["counts"]
    counts["documents_without_tokens"] += empty
    counts["documents"] += len(chunk.lengths)
    counts["tokens"] += len(chunk.ids)
    if split == "train":
      self.stats.add_documents(chunk.ids, chunk.lengths)
    self._write(split, entry["packer"].add(chunk))

  def abort(self) -> None:
    """Deletes the shard's unfinished files."""
    for entry in self.splits.values():
      for writer in entry["writers"].values():
        writer.abort()

  def finish(self) -> None:
    """Closes (and uploads) the shard's files, then writes its record and statistics."""
    record = {"key": self.spec.key, "shard": self.shard.index, "splits": {}}
    for split, entry in self.splits.items():
      self._write(split, entry["packer"].finish())
      rows = [w.close()[0] for w in entry["writers"].values()][0]
      record["splits"][split] = {
          **{k: int(entry["counts"][k]) for k in ("documents", "documents_without_tokens",
                                                  "tokens", "padding")},
          "rows": rows, "units_split": entry["packer"].units_split, "files": entry["files"]}
    storage.save_npz(storage.join(self.data_dir, _record_name(self.shard.index, ".stats.npz")),
                     frequency=self.stats.frequency,
                     document_frequency=self.stats.document_frequency,
                     documents=self.stats.documents)
    storage.write_json(storage.join(self.data_dir, _record_name(self.shard.index)), record)


def _chunks(data_config, shard: sources.Shard) -> Iterator[tuple[str, list[str]]]:
  """(split, up to CHUNK_DOCS documents) of a shard, each split's documents in corpus order."""
  buffers = {split: [] for split in manifest_lib.SPLITS}
  for split, text in corpora.documents_by_split(data_config, shard):
    buffers[split].append(text)
    if len(buffers[split]) == encode.CHUNK_DOCS:
      yield split, buffers[split]
      buffers[split] = []
  for split, texts in buffers.items():
    if texts:
      yield split, texts


def _intact(record: dict | None, spec: Spec, sizes: dict[str, int | None]) -> bool:
  """Whether a shard's record says it was made from these inputs, and its files are whole."""
  if record is None or record.get("key") != spec.key:
    return False
  return all(sizes.get(name) == manifest_lib.npy_bytes(
      entry["rows"], spec.seq_len, np.dtype(packing.FIELD_DTYPES[field]).name)
             for entry in record["splits"].values() for field, name in entry["files"].items())


def _read_record(data_dir: str, shard: int) -> dict | None:
  return storage.read_json(storage.join(data_dir, _record_name(shard)))


def _prepare_shards(data_config, tok, shards: list[sources.Shard], spec: Spec,
                    data_dir: str) -> int:
  """Prepares `shards` (this process's) that have no up-to-date record; returns how many."""
  records = {s.index: _read_record(data_dir, s.index) for s in shards}
  names = [n for r in records.values() if r for e in r["splits"].values()
           for n in e["files"].values()]
  sizes = manifest_lib.file_sizes(data_dir, names)
  todo = [s for s in shards if not _intact(records[s.index], spec, sizes)]
  if not todo:
    return 0
  staging = None if storage.local_dir(data_dir) else storage.staging_dir(data_dir)
  chunks = (((s.index, split), texts) for s in todo for split, texts in _chunks(data_config, s))
  at, writer = 0, _ShardWriter(todo[0], tok, spec, data_dir, staging)
  try:
    for (index, split), chunk in encode.encode_chunks(tok, chunks, spec.job, spec.workers):
      while todo[at].index != index:  # the shards before it are complete (or empty)
        writer.finish()
        at += 1
        writer = _ShardWriter(todo[at], tok, spec, data_dir, staging)
      writer.add(split, chunk)
    writer.finish()
    for shard in todo[at + 1:]:  # shards that held no document
      writer = _ShardWriter(shard, tok, spec, data_dir, staging)
      writer.finish()
  except BaseException as e:
    writer.abort()
    if storage.is_no_space(e):
      where = staging or data_dir
      free = storage.free_bytes(where)
      raise storage.NoSpaceError(
          f"The disk of {where} filled up while shard {todo[at].index} was prepared"
          + (f" ({storage.megabytes(free)} free)" if free is not None else "")
          + f". Free some space (or move --workdir to a larger disk) and run the same command "
          f"again: the {at} shard(s) finished are kept.") from e
    raise
  return len(todo)


# ------------------------------------------------------------------- merging (process 0)


def _read_records(data_dir: str, count: int) -> list[dict]:
  """Every shard's record, read in parallel (an object store answers each in ~10 ms)."""
  with concurrent.futures.ThreadPoolExecutor(32) as pool:
    records = list(pool.map(lambda k: _read_record(data_dir, k), range(count)))
  missing = [k for k, r in enumerate(records) if r is None]
  if missing:
    raise RuntimeError(f"Shards {missing[:10]} of {data_dir} have no record after every "
                       "process finished; a process failed to write them. Prepare again.")
  return records


def _merge_splits(records: list[dict], seq_len: int) -> dict:
  """The manifest's splits: totals, and the parts in shard order (empty ones left out)."""
  splits = {}
  for split in manifest_lib.SPLITS:
    entries = [(r["shard"], r["splits"][split]) for r in records if split in r["splits"]]
    totals = {k: sum(e[k] for _, e in entries) for k in (
        "documents", "documents_without_tokens", "tokens", "rows", "padding", "units_split")}
    if not totals["tokens"]:
      raise sources.CorpusError(
          f"The {split} split has no token at all ({totals['documents']} documents); "
          + ("raise data.validation_fraction or add documents." if split == "validation"
             else "check the corpus, data.validation_fraction and the tokenizer."))
    parts = [{"shard": k, "rows": e["rows"], "files": e["files"]} for k, e in entries
             if e["rows"]]
    any_files = parts[0]["files"]
    splits[split] = {**totals, "shape": [totals["rows"], seq_len],
                     "dtype": {key: np.dtype(packing.FIELD_DTYPES[key]).name
                               for key in any_files},
                     "parts": parts}
  return splits


def _merge_stats(data_dir: str, records: list[dict], vocab_size: int, pad_id: int,
                 tok_hash: str) -> str:
  stats = stats_lib.TokenStats(vocab_size, pad_id)
  for r in records:
    part = storage.load_npz(storage.join(data_dir, _record_name(r["shard"], ".stats.npz")))
    stats.frequency += part["frequency"]
    stats.document_frequency += part["document_frequency"]
    stats.documents += int(part["documents"])
  return stats.save(data_dir, tok_hash)


def _ngram_files(splits: dict) -> None:
  """Adds each part's ngram_ids file to the manifest's splits."""
  for split, info in splits.items():
    info["dtype"][annotate.NGRAM] = "int32"
    for part in info["parts"]:
      part["files"][annotate.NGRAM] = part_files(split, part["shard"], [annotate.NGRAM])[
          annotate.NGRAM]


def _match_ngrams(data_dir: str, splits: dict, mine: set[int], spec: Spec,
                  vocab: dict, staging: str | None) -> None:
  """ngram_ids of this process's parts, from the PMI vocabulary, beside their rows."""
  word_start, barrier = spec.token_classes["word_start"], spec.token_classes["barrier"]
  for split, info in splits.items():
    for part in info["parts"]:
      if part["shard"] not in mine:
        continue
      rows = _part_arrays(data_dir, part, ("input_ids", "segment_ids"))
      name = part["files"][annotate.NGRAM]
      writer = _writer(data_dir, name, staging, np.int32, (spec.seq_len,))
      covered = np.zeros(pmi.MAX_N + 1, np.int64)  # tokens inside an n-gram of n words
      for block, words in pmi.match_rows(rows, word_start, barrier, vocab):
        writer.append(block)
        covered += np.bincount(words.reshape(-1), minlength=len(covered))
      writer.close()
      storage.write_json(storage.join(data_dir, f"{name}.json"),
                         {"covered": int(covered[2:].sum()),
                          "covered_by_n": {str(n): int(covered[n])
                                           for n in range(2, pmi.MAX_N + 1)}})


def _part_arrays(data_dir: str, part: dict, fields: Sequence[str]) -> dict:
  """{field: [n, S]} of one part: memmaps of a local folder, arrays read from a URL."""
  out = {}
  for field in fields:
    p = storage.join(data_dir, part["files"][field])
    if storage.local_dir(data_dir):
      out[field] = np.load(os.fspath(p), mmap_mode="r")
    else:
      with p.open("rb") as f:
        out[field] = np.load(f)
  return out


class _SplitArray:
  """One field of a split's rows across its parts, as `pmi.build_vocab` reads it: `.shape`, and
  rows by sorted index arrays (parts are read one at a time, the last one kept)."""

  def __init__(self, data_dir: str, parts: list[dict], field: str, seq_len: int):
    self.data_dir, self.parts, self.field = data_dir, parts, field
    self.bounds = np.cumsum([0] + [p["rows"] for p in parts])
    self.shape = (int(self.bounds[-1]), seq_len)
    self._loaded = (None, None)

  def _part(self, i: int) -> np.ndarray:
    if self._loaded[0] != i:
      self._loaded = (i, _part_arrays(self.data_dir, self.parts[i], [self.field])[self.field])
    return self._loaded[1]

  def __getitem__(self, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    which = np.searchsorted(self.bounds, rows, side="right") - 1
    return np.concatenate([self._part(i)[rows[which == i] - self.bounds[i]]
                           for i in np.unique(which).tolist()])


def _add_ngrams(tok, data_dir: str, splits: dict, spec: Spec, pmi_config: pmi.PmiConfig) -> dict:
  """Builds the PMI vocabulary on the training rows and saves it (process 0)."""
  word_start, barrier = spec.token_classes["word_start"], spec.token_classes["barrier"]
  train = splits["train"]["parts"]
  arrays = {f: _SplitArray(data_dir, train, f, spec.seq_len) for f in ("input_ids",
                                                                       "segment_ids")}
  built = pmi.build_vocab(arrays, word_start, barrier, pmi_config,
                          decode=lambda ids: tok.decode(ids))
  return {**pmi.save_vocab(built, data_dir), "config": dataclasses.asdict(pmi_config)}


def _record_ngram_coverage(data_dir: str, splits: dict, pmi_entry: dict) -> None:
  """Tokens inside a matched n-gram per split (`ngram_tokens`), and per n-gram length the share
  of the training tokens covered (`pmi_entry["lengths"][n]["token_share"]`), logged."""
  by_n = {}
  for split, info in splits.items():
    counts = [storage.read_json(storage.join(data_dir, f"{p['files'][annotate.NGRAM]}.json"))
              for p in info["parts"]]
    info["ngram_tokens"] = sum(c["covered"] for c in counts)
    if split == "train":
      by_n = {n: sum(c["covered_by_n"][n] for c in counts) for n in pmi_entry["lengths"]}
  train_tokens = max(splits["train"]["tokens"], 1)
  for n, stats in pmi_entry["lengths"].items():
    stats["token_share"] = round(by_n.get(n, 0) / train_tokens, 5)
    logging.info("PMI %s-grams: %d kept of %d slots (%d seen more than min_count times, %d "
                 "above min_pmi); they cover %.1f%% of the training tokens.", n, stats["kept"],
                 stats["slots"], stats["candidates"], stats["above_min_pmi"],
                 100 * stats["token_share"])


# ------------------------------------------------------------------------------ manifest


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


def _no_sync(name: str) -> None:
  del name


def prepare(data_config: ml_collections.ConfigDict, workdir: str, *, process_index: int = 0,
            process_count: int = 1, sync: Sync = _no_sync) -> dict:
  """Makes workdir/data (see the module docstring) and returns its manifest.

  A no-op (returns the manifest) when the data there was prepared from the same data config,
  the same corpus files, the same tokenizer and the same annotator; otherwise prepares again
  and logs why. With several processes, every one of them calls it with its index, the count
  and `sync`, a barrier across them (the trainer passes JAX's): each prepares its shards.
  """
  if data_config.seq_len < 3:
    raise ValueError(f"data.seq_len={data_config.seq_len} must be at least 3 ([CLS] x [SEP]).")
  if data_config.packing not in packing.MODES:
    raise ValueError(f"Unknown data.packing {data_config.packing!r}; use one of "
                     f"{list(packing.MODES)}.")
  manifest_lib.wanted_annotations(data_config)  # refuses an unknown name before any work
  data_dir = os.fspath(storage.join(workdir, manifest_lib.DATA_DIR))
  manifest = manifest_lib.read(data_dir)
  reasons = manifest_lib.stale_reasons(manifest, data_config, workdir)
  sync("mlmjax: prepared data checked")  # every process decided before anything changes
  if not reasons:
    logging.info("Prepared data in %s is up to date.", data_dir)
    return manifest
  logging.info("Preparing data in %s: %s.", data_dir, "; ".join(reasons))
  return _prepare_afresh(data_config, workdir, data_dir, process_index, process_count, sync)


def _inputs_key(data_config, fingerprint: dict, tok_hash: str, annotator: str) -> str:
  """A hash of everything a shard's rows depend on."""
  wanted = manifest_lib.wanted_annotations(data_config)
  inputs = {"format": manifest_lib.FORMAT_VERSION,
            "config": manifest_lib.config_record(data_config), "corpus": fingerprint,
            "tokenizer": tok_hash, "annotator": annotator,
            "schema": manifest_lib.schema(wanted, annotator)}
  return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _prepare_afresh(data_config, workdir: str, data_dir: str, process_index: int,
                    process_count: int, sync: Sync) -> dict:
  """The tokenizer (process 0), every process's shards, then statistics, n-grams, manifest."""
  mode = data_config.packing
  wanted = manifest_lib.wanted_annotations(data_config)
  start = time.perf_counter()
  main = process_index == 0
  fingerprint = corpora.source_fingerprint(data_config)
  annotator = manifest_lib.annotator(data_config)
  shards = sources.list_shards(data_config)
  if main:
    manifest_path = storage.join(data_dir, manifest_lib.MANIFEST)
    if manifest_path.exists():
      manifest_path.unlink()  # the arrays are about to change: never pair them with an old one
    tokenizer_lib.get_tokenizer(data_config, workdir,
                                documents=corpora.tokenizer_sample(data_config))
  sync("mlmjax: tokenizer ready")
  tok = tokenizer_lib.get_tokenizer(data_config, workdir)  # the one process 0 made
  tok_hash = tokenizer_lib.tokenizer_hash(tok)
  tokenizer_seconds = time.perf_counter() - start

  spec = Spec(seq_len=data_config.seq_len, packing=mode, wanted=wanted,
              job=_encode_job(wanted, annotator, mode), token_classes=token_tables(tok),
              workers=encode.num_workers(data_config),
              key=_inputs_key(data_config, fingerprint, tok_hash, annotator))
  mine = [s for s in shards if s.index % process_count == process_index]
  prepared = _prepare_shards(data_config, tok, mine, spec, data_dir)
  logging.info("Process %d prepared %d of its %d shards (%d in all; the rest were up to date).",
               process_index, prepared, len(mine), len(shards))
  sync("mlmjax: shards prepared")

  records = _read_records(data_dir, len(shards))
  splits = _merge_splits(records, data_config.seq_len)
  roles = tokenizer_lib.special_roles(tok)
  pmi_entry = None
  if annotate.NGRAM in wanted:
    _ngram_files(splits)
    if main:
      pmi_entry = _add_ngrams(tok, data_dir, splits, spec,
                              pmi.PmiConfig.from_config(data_config.pmi))
    sync("mlmjax: n-gram vocabulary ready")
    staging = None if storage.local_dir(data_dir) else storage.staging_dir(data_dir)
    _match_ngrams(data_dir, splits, {s.index for s in mine}, spec, pmi.load_vocab(data_dir),
                  staging)
    sync("mlmjax: n-grams matched")
  if main:
    stats_file = _merge_stats(data_dir, records, len(spec.token_classes["word_start"]),
                              roles["pad"], tok_hash)
    if pmi_entry is not None:
      _record_ngram_coverage(data_dir, splits, pmi_entry)
    seconds = time.perf_counter() - start
    tokens = sum(s["tokens"] for s in splits.values())
    for split, info in splits.items():
      if info["units_split"]:
        unit = "sentences" if mode == "full_sentences" else "documents"
        logging.warning("%s: %d %s longer than a row (%d tokens) continue across rows.", split,
                        info["units_split"], unit, data_config.seq_len - 1)
    manifest = {
        "format_version": manifest_lib.FORMAT_VERSION,
        "data_dir": data_dir,
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
        "shards": {"count": len(shards), "shard_bytes": data_config.shard_bytes,
                   "processes": process_count, "workers_per_process": spec.workers,
                   "key": spec.key},
        "splits": splits,
        "timing": {"seconds": round(seconds, 3),
                   "tokenizer_seconds": round(tokenizer_seconds, 3),
                   "tokens_per_second": round(tokens / max(seconds - tokenizer_seconds, 1e-9))},
    }
    manifest_lib.write(storage.join(data_dir, manifest_lib.MANIFEST), manifest)  # last
    logging.info("Prepared %s in %.1fs.", ", ".join(
        f"{s}: {m['documents']} docs, {m['tokens']} tokens, {m['rows']} rows"
        for s, m in splits.items()), seconds)
  sync("mlmjax: manifest written")
  return manifest_lib.read(data_dir)


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

