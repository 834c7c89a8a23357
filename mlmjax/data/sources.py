"""Text sources, read lazily in shards: the embedded corpus, .txt/.jsonl/.parquet files, TFDS, HF.

`data.source` picks one:
  "embedded"  Python's own documentation (no download);
  "files"     `data.paths`: comma-separated globs, local or on a bucket (gs://b/corpus/*.txt), of
              .txt (documents separated by blank lines), .jsonl (`data.text_field` of each row)
              or .parquet (column `data.text_field`);
  "tfds"      a prepared TensorFlow Datasets dataset, `data.tfds_name` in `data.tfds_data_dir`,
              read by random access (`tfds.data_source`, ArrayRecord): no TensorFlow needed;
  "hf"        a Hugging Face `datasets` dataset on disk at `data.hf_path`.

A corpus is a list of `Shard`s (`list_shards`: cheap, it lists and stats files and reads no
text), each a few `Piece`s: whole small files, byte ranges of a large .txt or .jsonl file,
row-group ranges of a large .parquet file, row ranges of a TFDS or HF dataset. `read_shard`
yields a shard's cleaned documents lazily, in a fixed order, holding a bounded amount of text
(whole lines, one row group, 1024 rows), so that a corpus larger than memory is read in bounded
memory, and its shards by several hosts in parallel.

A document belongs to the piece in which its first byte lies (for .txt, the first byte of its
first line): the reader of a byte range skips a document that began before it (Hadoop-style;
reading back to the previous line to know whether one did) and reads past its end to finish
its last one, so cutting a file anywhere gives the documents of reading it whole, each once.

Every input a user can get wrong raises `CorpusError` with a message that names the file (and
line, byte or row) and the fix; nothing is dropped silently.
"""

import codecs
import contextlib
import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from absl import logging
import ml_collections

from mlmjax import storage

# Bump when the embedded corpus' content rules change: it is part of the data fingerprint.
EMBEDDED_VERSION = 1
# Documents shorter than this (after cleaning) are one-liners such as "Return self==value."
# that add [SEP]s but little language.
MIN_EMBEDDED_CHARS = 64
# Importing the standard library takes well under a second; this only catches a hung import.
EMBEDDED_TIMEOUT_S = 120
# data.shard_bytes when a config has none: input bytes per shard.
SHARD_BYTES = 64 << 20
# Rows per shard of a TFDS or HF dataset.
INDEXED_SHARD_DOCS = 65536
# Rows read at a time from Parquet, TFDS and HF.
READ_ROWS = 1024
# Bytes read at a time from a .txt or .jsonl file (the reader holds about this, plus a line).
READ_BYTES = 1 << 18
# A piece whose first bytes hold a NUL is binary (or UTF-16): said before any decoding error.
SNIFF_BYTES = 8192
FILE_TYPES = (".txt", ".jsonl", ".parquet")


class CorpusError(ValueError):
  """A corpus cannot be read as configured; the message says why and how to fix it."""


def clean_text(text: str) -> str:
  """Normalises newlines, strips trailing spaces per line and the text's outer whitespace."""
  lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
  return "\n".join(line.rstrip() for line in lines).strip()


def _stdlib_docstrings() -> list[str]:
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stdlib_docs.py")
  with tempfile.TemporaryDirectory(prefix="mlmjax_stdlib_docs_") as tmp:
    out = os.path.join(tmp, "docs.json")
    # -I -S: no site-packages, no PYTHON* variables, so only the Python build decides the
    # result; cwd=tmp so that a module writing files on import writes them there.
    cmd = [sys.executable, "-I", "-S", script, out]
    try:
      proc = subprocess.run(cmd, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=EMBEDDED_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
      raise CorpusError(
          f"Collecting the standard library's docstrings took over {EMBEDDED_TIMEOUT_S}s "
          "(an import hung). Use data.source='files' with your own text instead.") from e
    except OSError as e:  # an embedded interpreter may have no usable sys.executable
      raise CorpusError(f"Cannot start {sys.executable!r} to collect the standard library's "
                        "docstrings; use data.source='files' instead.") from e
    if proc.returncode != 0 or not os.path.exists(out):
      stderr = proc.stderr.decode("utf-8", "replace")[-2000:]
      raise CorpusError(
          f"Collecting the standard library's docstrings failed ({' '.join(cmd)}):\n{stderr}\n"
          "Use data.source='files' with your own text instead.")
    with open(out, encoding="utf-8") as f:
      return json.load(f)["documents"]


@functools.cache
def _embedded_documents() -> tuple[str, ...]:
  start = time.perf_counter()
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  texts = [topics.topics[name] for name in sorted(topics.topics)]
  texts += _stdlib_docstrings()
  docs, seen = [], set()
  for text in map(clean_text, texts):
    if len(text) >= MIN_EMBEDDED_CHARS and text not in seen:
      seen.add(text)
      docs.append(text)
  logging.info("Embedded corpus: %d documents, %d characters in %.2fs.", len(docs),
               sum(map(len, docs)), time.perf_counter() - start)
  return tuple(docs)


def embedded_documents() -> list[str]:
  """Python's own English documentation: pydoc topics, then standard-library docstrings.

  Needs no download. Deterministic for a given Python build (the set of importable modules,
  e.g. whether `curses` or `sqlite3` are compiled in, changes it); cached per process.
  """
  return list(_embedded_documents())


def unknown_source(source: str) -> CorpusError:
  return CorpusError(
      f"Unknown data.source {source!r}; use 'embedded' (Python's own documentation), 'files' "
      "(with data.paths), 'tfds' (with data.tfds_name) or 'hf' (with data.hf_path).")


# ---------------------------------------------------------------------------- shards


@dataclasses.dataclass(frozen=True)
class Piece:
  """A contiguous part of one input, read in one go by `read_shard`."""
  path: str  # a file (local path or URL); "embedded"; "tfds:<split>" or "hf" for indexed sources
  start: int  # first byte (.txt, .jsonl), first row group (.parquet) or first row (tfds, hf)
  stop: int  # one past the last


@dataclasses.dataclass(frozen=True)
class Shard:
  """Consecutive pieces of the corpus, about `data.shard_bytes` of input: one host's unit."""
  index: int  # 0..len-1, in corpus order
  pieces: tuple[Piece, ...]  # read in this order
  # "train"/"validation" when every document of it belongs there (a TFDS dataset's own
  # validation split), else None (each document's hash decides, see corpora.is_validation).
  split: str | None = None


def list_shards(data_config: ml_collections.ConfigDict) -> list[Shard]:
  """The corpus as shards, in a fixed order. Cheap: lists and stats files, reads no text.

  Files (sorted as `resolve_paths` gives them) are packed into shards of about
  `data.shard_bytes` bytes of input; a larger file is cut into byte ranges (.txt, .jsonl) or
  row-group ranges (.parquet). TFDS and HF datasets give shards of `INDEXED_SHARD_DOCS` rows
  (a TFDS validation split's after the training ones); the embedded corpus is one shard.
  """
  source = data_config.source
  if source == "embedded":
    return [Shard(0, (Piece("embedded", 0, len(_embedded_documents())),))]
  if source == "files":
    shard_bytes = data_config.get("shard_bytes", SHARD_BYTES)
    if shard_bytes <= 0:
      raise CorpusError(f"data.shard_bytes={shard_bytes} must be positive.")
    items = [item for path in resolve_paths(data_config.paths)
             for item in _file_pieces(path, data_config.text_field, shard_bytes)]
    return _pack(items, shard_bytes)
  if source == "tfds":
    held_out = data_config.tfds_validation_split
    splits = [(data_config.tfds_split, "train" if held_out else None)]
    if held_out:
      splits.append((held_out, "validation"))
    shards = []
    for split, assigned in splits:
      rows = len(tfds_source(data_config, split))
      if not rows and assigned == "validation":
        raise CorpusError(f"TFDS split {split!r} is empty.")
      shards += [Shard(len(shards) + i, (piece,), assigned)
                 for i, piece in enumerate(_row_pieces(f"tfds:{split}", rows))]
    return shards
  if source == "hf":
    rows = len(hf_dataset(data_config))
    return [Shard(i, (piece,)) for i, piece in enumerate(_row_pieces("hf", rows))]
  raise unknown_source(source)


def read_shard(data_config: ml_collections.ConfigDict, shard: Shard,
               fraction: float = 1.0) -> Iterator[str]:
  """The cleaned documents of `shard`, lazily, in order; at most a few lines or rows in memory.

  `fraction` < 1 reads only the documents that start in the first `fraction` of each piece
  (of its bytes; of its rows for Parquet, TFDS, HF and the embedded corpus), at least one
  byte or row: a cheap sample spread evenly over the corpus.
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction={fraction} must be in (0, 1].")
  for piece in shard.pieces:
    yield from _read_piece(data_config, piece, fraction)


def text_bytes(data_config: ml_collections.ConfigDict, shards) -> int:
  """About how many bytes of text `shards` hold, reading next to none of it.

  Files: their pieces' bytes (Parquet: the text column's uncompressed size); the embedded
  corpus: its UTF-8 size; TFDS and HF: the mean size of the first `READ_ROWS` documents of each
  split times its rows.
  """
  total, rows, parquet_sizes = 0, {}, {}
  for piece in (piece for shard in shards for piece in shard.pieces):
    if piece.path == "embedded":
      total += sum(len(d.encode("utf-8"))
                   for d in _embedded_documents()[piece.start:piece.stop])
    elif piece.path == "hf" or piece.path.startswith("tfds:"):
      first, count = rows.get(piece.path, (piece, 0))
      rows[piece.path] = (first, count + piece.stop - piece.start)
    elif _file_type(piece.path) == ".parquet":
      if piece.path not in parquet_sizes:
        with _open_parquet(piece.path, data_config.text_field) as parquet:
          parquet_sizes[piece.path] = _parquet_sizes(parquet, data_config.text_field)
      total += sum(parquet_sizes[piece.path][piece.start:piece.stop])
    else:
      total += piece.stop - piece.start
  for first, count in rows.values():
    head = Piece(first.path, first.start, first.start + min(count, READ_ROWS))
    sizes = [len(d.encode("utf-8")) for d in _read_piece(data_config, head, 1.0)]
    total += round(sum(sizes) / max(len(sizes), 1) * count)
  return total


def _row_pieces(path: str, rows: int) -> list[Piece]:
  return [Piece(path, start, min(start + INDEXED_SHARD_DOCS, rows))
          for start in range(0, rows, INDEXED_SHARD_DOCS)]


def _pack(items: list[tuple[Piece, int]], shard_bytes: int) -> list[Shard]:
  """Consecutive (piece, bytes) into shards of at most `shard_bytes` (or one piece)."""
  shards, pieces, total = [], [], 0
  for piece, size in items:
    if pieces and total + size > shard_bytes:
      shards.append(Shard(len(shards), tuple(pieces)))
      pieces, total = [], 0
    pieces.append(piece)
    total += size
  if pieces:
    shards.append(Shard(len(shards), tuple(pieces)))
  return shards


def _file_type(path: str) -> str:
  kind = os.path.splitext(path)[1]
  if kind not in FILE_TYPES:
    raise CorpusError(f"{path}: unsupported file type; data.paths must match only .txt "
                      "(documents separated by blank lines), .jsonl or .parquet files.")
  return kind


def _no_document(path: str) -> CorpusError:
  return CorpusError(f"{path} holds no document (it is empty or blank); remove it from "
                     "data.paths or fill it.")


def _file_pieces(path: str, text_field: str, shard_bytes: int) -> list[tuple[Piece, int]]:
  """One file as (piece, bytes of input): whole, or cut when larger than `shard_bytes`."""
  kind = _file_type(path)
  size, _ = storage.stat(path)
  if not size:
    raise _no_document(path)
  if kind != ".parquet":
    n = -(-size // shard_bytes)
    bounds = [size * i // n for i in range(n + 1)]
    return [(Piece(path, a, b), b - a) for a, b in zip(bounds, bounds[1:])]
  with _open_parquet(path, text_field) as parquet:
    sizes = _parquet_sizes(parquet, text_field)
  pieces, first, total = [], 0, 0
  for i, group_size in enumerate(sizes):
    if i > first and total + group_size > shard_bytes:
      pieces.append((Piece(path, first, i), total))
      first, total = i, 0
    total += group_size
  return pieces + [(Piece(path, first, len(sizes)), total)]


def resolve_paths(paths: str) -> list[str]:
  """Expands comma-separated globs (local or URLs) into a sorted, de-duplicated list of files."""
  patterns = [p.strip() for p in paths.split(",") if p.strip()]
  if not patterns:
    raise CorpusError("data.source='files' needs data.paths: comma-separated globs of .txt "
                      "or .jsonl files, e.g. --config.data.paths='corpus/*.txt'.")
  files, seen = [], set()
  for pattern in patterns:
    try:
      matched = storage.glob(pattern)
    except storage.StorageError as e:
      raise CorpusError(f"data.paths: {e}") from e
    if not matched:
      hint = ("check the bucket and the path" if storage.is_url(pattern) else
              f"check the path (relative paths are relative to {os.getcwd()})")
      raise CorpusError(f"data.paths: {pattern!r} matches no file; {hint}.")
    for path in matched:
      key = os.fspath(storage.path(path))  # one file named two ways is read once
      if key not in seen:
        seen.add(key)
        files.append(path)
  return files


def _read_piece(data_config: ml_collections.ConfigDict, piece: Piece,
                fraction: float) -> Iterator[str]:
  path, start, stop = piece.path, piece.start, piece.stop
  limit = stop if fraction >= 1.0 else start + math.ceil(fraction * (stop - start))
  if path == "embedded":
    yield from _embedded_documents()[start:limit]
  elif path.startswith("tfds:"):
    yield from _read_tfds(data_config, path.removeprefix("tfds:"), start, limit)
  elif path == "hf":
    yield from _read_hf(data_config, start, limit)
  else:
    kind = _file_type(path)
    if kind == ".txt":
      yield from _read_txt(path, start, limit)
    elif kind == ".jsonl":
      yield from _read_jsonl(path, start, limit, data_config.text_field)
    else:
      yield from _read_parquet(path, start, stop, fraction, data_config.text_field)


# ------------------------------------------------------------------------- .txt and .jsonl


def _binary(path: str) -> CorpusError:
  # No text file holds NUL; UTF-16 and binary files do.
  return CorpusError(f"{path} looks binary (it contains NUL bytes); data.paths must match "
                     "only UTF-8 .txt, .jsonl or .parquet files.")


def _sniff(f, path: str, start: int) -> None:
  """A binary file is said to be one, not reported for its first invalid UTF-8 byte."""
  f.seek(start)
  if b"\0" in f.read(SNIFF_BYTES):
    raise _binary(path)


def _lines(f, offset: int) -> Iterator[tuple[int, bytes]]:
  """(offset, bytes) of each line of `f` from byte `offset` on, split at b"\\n" (dropped).

  Reads `READ_BYTES` at a time: holds one block and the line under way.
  """
  f.seek(offset)
  parts = []
  while block := f.read(READ_BYTES):
    lines = block.split(b"\n")
    if parts:
      parts.append(lines[0])
      if len(lines) == 1:
        continue
      lines[0] = b"".join(parts)
      parts = []
    tail = lines.pop()
    for line in lines:
      yield offset, line
      offset += len(line) + 1
    if tail:
      parts = [tail]
  if parts:
    yield offset, b"".join(parts)


def _txt_lines(f, offset: int) -> Iterator[tuple[int, int, bytes]]:
  """(line number, offset, bytes) of each line, ended by "\\n", "\\r\\n" or a lone "\\r".

  The line number counts "\\n"-ended lines from `offset`, as an editor does.
  """
  for number, (start, line) in enumerate(_lines(f, offset), start=1):
    line = line.removesuffix(b"\r")
    if b"\r" not in line:
      yield number, start, line
      continue
    for part in line.split(b"\r"):
      yield number, start, part
      start += len(part) + 1


def _decode_line(raw: bytes, path: str, offset: int, number: int) -> str:
  """`raw` (at byte `offset`; `number`: its line, 0 if unknown) as text."""
  if b"\0" in raw:
    raise _binary(path)
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    where = f"{path}:{number}" if number else path
    raise CorpusError(f"{where}: invalid UTF-8 at byte {offset + e.start}; re-encode the file "
                      "as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).") from e


def _ends_blank_line(f, line_start: int) -> bool:
  """Whether the line before the one that starts at byte `line_start` > 0 holds only spaces.

  Reads backwards from there to that line's start, in growing windows.
  """
  n = min(2, line_start)
  f.seek(line_start - n)
  end = line_start - (2 if f.read(n) == b"\r\n" else 1)  # where that line's text ends
  size = 4096
  while True:
    low = max(end - size, 0)
    f.seek(low)
    window = f.read(end - low)
    cut = max(window.rfind(b"\n"), window.rfind(b"\r"))
    if cut >= 0 or low == 0:
      text = window[cut + 1:] if cut >= 0 else window.removeprefix(codecs.BOM_UTF8)
      return not text.decode("utf-8", "replace").strip()
    # The whole window lies in that line: text in it settles the question.
    skip = 0
    while skip < len(window) and 0x80 <= window[skip] < 0xC0:  # the end of a cut character
      skip += 1
    if window[skip:].decode("utf-8", "replace").strip():
      return False
    size *= 2


def _read_txt(path: str, start: int, limit: int) -> Iterator[str]:
  """The documents of a .txt file that start in bytes [start, limit): blank-line separated.

  Exactly what cleaning the whole text gives (`clean_text`: "\\r\\n" and a lone "\\r" end a
  line, trailing spaces go, a UTF-8 byte-order mark is not text), then blocks of non-blank
  lines. A document under way at `start` belongs to the piece before; the last one is read to
  its end, past `limit`.
  """
  with storage.path(path).open("rb") as f:
    _sniff(f, path, start)
    lines = _txt_lines(f, max(start - 1, 0))
    if start:
      next(lines, None)  # the line under way at `start - 1`: a piece before reads it
    # Between documents, in one of this piece, in one that began before, or not known yet.
    state = "between" if start == 0 else "unknown"
    block, found = [], False
    for number, offset, raw in lines:
      if offset >= limit and state != "in":
        return  # no document starts in this piece any more
      if offset == 0 and raw.startswith(codecs.BOM_UTF8):  # editors on Windows write one
        raw, offset = raw[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
      # Split on "\n" only: str.splitlines also breaks at form feeds and U+2028, which are text.
      line = _decode_line(raw, path, offset, number if start == 0 else 0).rstrip()
      if not line:
        if block:
          yield "\n".join(block).lstrip()
          block, found = [], True
        state = "between"
        continue
      if state == "unknown":  # the first line here: does it continue a document from before?
        resume = f.tell()
        state = "between" if _ends_blank_line(f, offset) else "before"
        f.seek(resume)
      if state == "between":
        state = "in"
      if state == "in":
        block.append(line)
    if block:
      yield "\n".join(block).lstrip()
      found = True
  if start == 0 and not found:  # read to the end: the whole file holds none
    raise _no_document(path)


def _read_jsonl(path: str, start: int, limit: int, text_field: str) -> Iterator[str]:
  """The `text_field` strings of the .jsonl rows (one JSON object a line) starting in
  [start, limit); a row with an empty text holds no document."""
  with storage.path(path).open("rb") as f:
    _sniff(f, path, start)
    lines = enumerate(_lines(f, max(start - 1, 0)), start=1)
    if start:
      next(lines, None)  # the row under way at `start - 1`: a piece before reads it
    found = False
    for number, (offset, raw) in lines:
      if offset >= limit:
        return
      if offset == 0 and raw.startswith(codecs.BOM_UTF8):
        raw, offset = raw[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
      # Split on "\n" only: JSON strings may hold a raw U+2028, which str.splitlines breaks at.
      line = _decode_line(raw, path, offset, number if start == 0 else 0)
      if not line.strip():
        continue
      where = f"{path}:{number}" if start == 0 else f"{path} at byte {offset}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise CorpusError(f"{where}: not valid JSON ({e.msg}); each line of a .jsonl file "
                          "must be one JSON object.") from e
      if not isinstance(row, dict) or text_field not in row:
        raise CorpusError(f"{where}: no field {text_field!r} in this row; set "
                          "data.text_field to the field that holds the text.")
      if not isinstance(row[text_field], str):
        raise CorpusError(f"{where}: field {text_field!r} is "
                          f"{type(row[text_field]).__name__}, not a string.")
      if text := clean_text(row[text_field]):
        found = True
        yield text
  if start == 0 and not found:
    raise _no_document(path)


# ---------------------------------------------------------------------------------- .parquet


@contextlib.contextmanager
def _open_parquet(path: str, text_field: str):
  """The ParquetFile at `path` (its footer read), checked to hold the string `text_field`."""
  try:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CorpusError(f"{path}: reading .parquet files needs pyarrow; pip install "
                      "'mlmjax[parquet]' (or pyarrow).") from e
  with storage.path(path).open("rb") as f:
    try:
      parquet = pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises ArrowInvalid and OSError subclasses on a bad file
      raise CorpusError(f"{path} is not a readable Parquet file: {e}") from e
    schema = parquet.schema_arrow
    if text_field not in schema.names:
      raise CorpusError(f"{path}: no column {text_field!r} (columns: {schema.names}); set "
                        "data.text_field to the column that holds the text.")
    kind = schema.field(text_field).type
    values = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not (pa.types.is_string(values) or pa.types.is_large_string(values)):
      raise CorpusError(f"{path}: column {text_field!r} is {kind}, not a string.")
    yield parquet


def _parquet_sizes(parquet, text_field: str) -> list[int]:
  """Bytes of text of each row group: its text column's uncompressed size."""
  meta, sizes = parquet.metadata, []
  for i in range(meta.num_row_groups):
    group = meta.row_group(i)
    columns = [group.column(j) for j in range(group.num_columns)
               if group.column(j).path_in_schema.split(".")[0] == text_field]
    sizes.append(sum(c.total_uncompressed_size for c in columns) if columns
                 else group.total_byte_size)
  return sizes


def _read_parquet(path: str, start: int, stop: int, fraction: float,
                  text_field: str) -> Iterator[str]:
  """The documents of row groups [start, stop) (the first `fraction` of their rows), one per
  row, `READ_ROWS` rows at a time; a null is an error, an empty text holds no document."""
  with _open_parquet(path, text_field) as parquet:
    meta = parquet.metadata
    first = sum(meta.row_group(i).num_rows for i in range(start))
    rows = sum(meta.row_group(i).num_rows for i in range(start, stop))
    wanted = rows if fraction >= 1.0 else math.ceil(fraction * rows)
    row, found = first, False
    batches = (parquet.iter_batches(batch_size=READ_ROWS, row_groups=list(range(start, stop)),
                                    columns=[text_field], use_threads=False)
               if wanted else ())
    for batch in batches:
      for text in batch.column(0).to_pylist()[:first + wanted - row]:
        if text is None:
          raise CorpusError(f"{path}: row {row} has no {text_field!r} (null); fill or drop "
                            "the row.")
        row += 1
        if text := clean_text(text):  # as in .jsonl, an empty text holds no document
          found = True
          yield text
      if row >= first + wanted:
        break
    whole = start == 0 and stop == meta.num_row_groups and row - first == rows
  if whole and not found:
    raise _no_document(path)


# ---------------------------------------------------------------------------- indexed sources


def _decode(value, where: str) -> str:
  if isinstance(value, bytes):
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise CorpusError(f"{where}: invalid UTF-8 at byte {e.start}.") from e
  if not isinstance(value, str):
    raise CorpusError(f"{where}: the text is {type(value).__name__}, not a string; set "
                      "data.text_field to a text feature.")
  return clean_text(value)


def open_tfds(name: str, split: str, data_dir: str):
  """A TFDS split prepared in `data_dir` ("" = TFDS's default) as a random-access source,
  offline: never downloads or builds."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CorpusError("Reading TFDS datasets needs tensorflow-datasets (TensorFlow is not "
                      "needed): pip install 'mlmjax[tfds]'.") from e
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # DatasetNotFoundError, unknown split (ValueError), unreadable files
    first_line = str(e).strip().split("\n")[0]
    raise CorpusError(
        f"Cannot open TFDS {name!r} split {split!r} in data.tfds_data_dir={data_dir!r}: "
        f"{first_line} Prepare it first (tfds build, with file_format=array_record) and point "
        "data.tfds_data_dir at the folder that holds it.") from e


def tfds_source(data_config: ml_collections.ConfigDict, split: str):
  """The TFDS data source of `split`, checked to hold `data.text_field`."""
  name = data_config.tfds_name
  if not name:
    raise CorpusError("data.source='tfds' needs data.tfds_name, e.g. 'wikipedia/20230601.en'.")
  source = open_tfds(name, split, data_config.tfds_data_dir)
  features = list(source.dataset_info.features.keys())
  if data_config.text_field not in features:
    raise CorpusError(f"TFDS {name!r} has no feature {data_config.text_field!r} (features: "
                      f"{features}); set data.text_field.")
  return source


def hf_dataset(data_config: ml_collections.ConfigDict):
  """The Hugging Face dataset's `data.hf_split`, reduced to the `data.text_field` column."""
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CorpusError("data.source='hf' needs the Hugging Face datasets library: pip install "
                      "'mlmjax[datasets]'.") from e
  path, split = data_config.hf_path, data_config.hf_split
  if not path or not os.path.exists(path):
    raise CorpusError(f"data.hf_path={path!r} does not exist; give a folder written by "
                      "Dataset.save_to_disk, or a folder of data files.")
  try:
    saved = any(os.path.exists(os.path.join(path, f))
                for f in ("dataset_dict.json", "state.json"))
    dataset = (datasets.load_from_disk(path) if saved
               else datasets.load_dataset(path, split=split))
  except Exception as e:  # datasets raises many types for an unreadable folder
    raise CorpusError(f"Cannot load a Hugging Face dataset from {path}: {e}") from e
  if isinstance(dataset, datasets.DatasetDict):
    if split not in dataset:
      raise CorpusError(f"{path} has no split {split!r} (splits: {list(dataset)}); set "
                        "data.hf_split.")
    dataset = dataset[split]
  if data_config.text_field not in dataset.column_names:
    raise CorpusError(f"{path} has no column {data_config.text_field!r} (columns: "
                      f"{dataset.column_names}); set data.text_field.")
  return dataset.select_columns([data_config.text_field])


def _read_tfds(data_config: ml_collections.ConfigDict, split: str, start: int,
               stop: int) -> Iterator[str]:
  """Rows [start, stop) of a TFDS split, `READ_ROWS` at a time (random access, no TF)."""
  source = tfds_source(data_config, split)
  field, label = data_config.text_field, f"TFDS {data_config.tfds_name}[{split}]"
  for low in range(start, stop, READ_ROWS):
    rows = list(range(low, min(low + READ_ROWS, stop)))
    for row, example in zip(rows, source.__getitems__(rows)):
      yield _decode(example[field], f"{label} row {row}")


def _read_hf(data_config: ml_collections.ConfigDict, start: int, stop: int) -> Iterator[str]:
  """Rows [start, stop) of the Hugging Face dataset, `READ_ROWS` at a time."""
  dataset = hf_dataset(data_config)
  field, label = data_config.text_field, data_config.hf_path
  for low in range(start, stop, READ_ROWS):
    high = min(low + READ_ROWS, stop)
    for row, text in zip(range(low, high), dataset[low:high][field]):
      yield _decode(text, f"{label} row {row}")
