"""One process's shards prepared: each one read, tokenized, annotated, packed and written.

A shard's documents go, split by split, in chunks to the tokenizing workers (workers.py), come
back in order, are packed into rows (packing.py) and written to the shard's part files
(parts.py) while the workers go on; then the shard's record says what it holds and from which
inputs. A shard whose record matches the inputs and whose files are whole is not prepared
again, so a preparation that was killed goes on from the shards it had finished.
"""

import collections
import concurrent.futures
import dataclasses
from collections.abc import Iterator

import numpy as np

from mlmjax import storage
from mlmjax.data import annotate
from mlmjax.data import corpora
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import packing
from mlmjax.data import parts
from mlmjax.data import sources
from mlmjax.data import stats as stats_lib
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.data import workers


@dataclasses.dataclass(frozen=True)
class Spec:
  """What preparation makes of every shard, the same in every process."""
  seq_len: int
  packing: str  # a `packing.MODES` name
  wanted: tuple[str, ...]  # every annotation asked for
  job: workers.Job  # what the tokenizing workers make
  token_tables: dict[str, np.ndarray]  # `token_tables.from_tokenizer(tok)`
  workers: int  # tokenizing processes
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
    self.stats = stats_lib.TokenStats(len(spec.token_tables["word_start"]), self.roles["pad"])

  def _split(self, split: str) -> dict:
    if split not in self.splits:
      spec, roles = self.spec, self.roles
      files = parts.part_files(split, self.shard.index, spec.row_fields)
      self.splits[split] = {
          "packer": packing.Packer(spec.seq_len, spec.packing, roles["cls"], roles["sep"],
                                   roles["pad"], spec.job.annotations),
          "files": files,
          "writers": {key: parts.writer(self.data_dir, name, self.staging,
                                        packing.FIELD_DTYPES[key], (spec.seq_len,))
                      for key, name in files.items()},
          "counts": collections.Counter()}
    return self.splits[split]

  def _write(self, split: str, rows: dict[str, np.ndarray]) -> None:
    entry = self.splits[split]
    if annotate.POS in self.spec.wanted:
      rows[annotate.POS] = annotate.row_pos_classes(rows, self.spec.token_tables)
    for key, writer in entry["writers"].items():
      writer.append(rows[key])
    entry["counts"]["padding"] += int((rows["segment_ids"] == 0).sum())
    if split == "train":
      self.stats.add_rows(rows["input_ids"])

  def add(self, split: str, chunk: annotate.EncodedChunk) -> None:
    entry = self._split(split)
    # A document of only control characters or whitespace encodes to no token; it has nothing
    # to learn from, so it is left out and counted.
    chunk, empty = annotate.without_empty_documents(chunk)
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
    storage.save_npz(
        storage.join(self.data_dir, parts.record_name(self.shard.index, ".stats.npz")),
        frequency=self.stats.frequency, document_frequency=self.stats.document_frequency,
        documents=self.stats.documents)
    storage.write_json(storage.join(self.data_dir, parts.record_name(self.shard.index)), record)


def _chunks(data_config, shard: sources.Shard) -> Iterator[tuple[str, list[str]]]:
  """(split, up to CHUNK_DOCS documents) of a shard, each split's documents in corpus order."""
  buffers = {split: [] for split in manifest_lib.SPLITS}
  for split, text in corpora.documents_by_split(data_config, shard):
    buffers[split].append(text)
    if len(buffers[split]) == workers.CHUNK_DOCS:
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


def read_record(data_dir: str, shard: int) -> dict | None:
  """Shard `shard`'s record, or None when it has none (not prepared, or not yet)."""
  return storage.read_json(storage.join(data_dir, parts.record_name(shard)))


def read_records(data_dir: str, count: int) -> list[dict]:
  """Every shard's record, read in parallel (an object store answers each in ~10 ms)."""
  with concurrent.futures.ThreadPoolExecutor(32) as pool:
    records = list(pool.map(lambda k: read_record(data_dir, k), range(count)))
  missing = [k for k, r in enumerate(records) if r is None]
  if missing:
    raise RuntimeError(f"Shards {missing[:10]} of {data_dir} have no record after every "
                       "process finished; a process failed to write them. Prepare again.")
  return records


def prepare_shards(data_config, tok, shards: list[sources.Shard], spec: Spec,
                   data_dir: str) -> int:
  """Prepares `shards` (this process's) that have no up-to-date record; returns how many."""
  records = {s.index: read_record(data_dir, s.index) for s in shards}
  names = [n for r in records.values() if r for e in r["splits"].values()
           for n in e["files"].values()]
  sizes = manifest_lib.file_sizes(data_dir, names)
  todo = [s for s in shards if not _intact(records[s.index], spec, sizes)]
  if not todo:
    return 0
  staging = parts.staging_dir(data_dir)
  chunks = (((s.index, split), texts) for s in todo for split, texts in _chunks(data_config, s))
  at, writer = 0, _ShardWriter(todo[0], tok, spec, data_dir, staging)
  try:
    for (index, split), chunk in workers.tokenize_chunks(tok, chunks, spec.job, spec.workers):
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
