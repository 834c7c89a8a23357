"""Text sources: readers of the embedded corpus, .txt/.jsonl/.parquet files, TFDS and HF datasets.

`data.source` picks one (`corpora.load_documents` reads it):
  "embedded"  Python's own documentation (no download);
  "files"     `data.paths`: comma-separated globs of .txt (documents separated by blank lines),
              .jsonl (`data.text_field` of each row) or .parquet (column `data.text_field`);
  "tfds"      a prepared TensorFlow Datasets dataset, `data.tfds_name` in `data.tfds_data_dir`,
              read by random access (`tfds.data_source`, ArrayRecord): no TensorFlow needed;
  "hf"        a Hugging Face `datasets` dataset on disk at `data.hf_path`.

A corpus is a `Sequence[str]`, one string per document, in a deterministic order: a list for
embedded and files, a lazy view (`IndexedCorpus`) for tfds and hf, which are read in chunks and
never held in memory whole. Every input a user can get wrong raises `CorpusError` with a message
that names the file (and line or row) and the fix; nothing is dropped silently.
"""

import codecs
import functools
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

from absl import logging
import ml_collections
import numpy as np

# Bump when the embedded corpus' content rules change: it is part of the data fingerprint.
EMBEDDED_VERSION = 1
# Documents shorter than this (after cleaning) are one-liners such as "Return self==value."
# that add [SEP]s but little language.
MIN_EMBEDDED_CHARS = 64
# Importing the standard library takes well under a second; this only catches a hung import.
EMBEDDED_TIMEOUT_S = 120


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


def _read_text(path: str) -> str:
  with open(path, "rb") as f:
    raw = f.read()
  raw = raw.removeprefix(codecs.BOM_UTF8)  # editors on Windows start UTF-8 files with one
  if b"\0" in raw:  # no text file holds NUL; UTF-16 and binary files do
    raise CorpusError(f"{path} looks binary (it contains NUL bytes); data.paths must match "
                      "only UTF-8 .txt, .jsonl or .parquet files.")
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise CorpusError(f"{path}:{line}: invalid UTF-8 at byte {e.start}; re-encode the file as "
                      "UTF-8 (e.g. `iconv -f latin1 -t utf-8`).") from e


def read_txt(path: str) -> list[str]:
  """Documents of a .txt file: blocks of text separated by one or more blank lines."""
  docs, block = [], []
  # Split on "\n" only: str.splitlines also breaks at form feeds and U+2028, which are text.
  for line in clean_text(_read_text(path)).split("\n") + [""]:
    if line.strip():
      block.append(line)
    elif block:
      docs.append(clean_text("\n".join(block)))
      block = []
  return docs


def read_jsonl(path: str, text_field: str) -> list[str]:
  """Documents of a .jsonl file: the `text_field` string of each JSON object, one per line."""
  docs = []
  # Split on "\n" only: JSON strings may hold a raw U+2028, which str.splitlines breaks at.
  for number, line in enumerate(_read_text(path).split("\n"), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise CorpusError(f"{path}:{number}: not valid JSON ({e.msg}); each line of a .jsonl "
                        "file must be one JSON object.") from e
    if not isinstance(row, dict) or text_field not in row:
      raise CorpusError(f"{path}:{number}: no field {text_field!r} in this row; set "
                        "data.text_field to the field that holds the text.")
    if not isinstance(row[text_field], str):
      raise CorpusError(f"{path}:{number}: field {text_field!r} is "
                        f"{type(row[text_field]).__name__}, not a string.")
    # A row whose text is empty holds no document; skipping it loses nothing.
    if text := clean_text(row[text_field]):
      docs.append(text)
  return docs


def resolve_paths(paths: str) -> list[str]:
  """Expands comma-separated globs into a sorted, de-duplicated list of files."""
  patterns = [p.strip() for p in paths.split(",") if p.strip()]
  if not patterns:
    raise CorpusError("data.source='files' needs data.paths: comma-separated globs of .txt "
                      "or .jsonl files, e.g. --config.data.paths='corpus/*.txt'.")
  files = []
  for pattern in patterns:
    matched = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                     if os.path.isfile(p))
    if not matched:
      raise CorpusError(f"data.paths: {pattern!r} matches no file; check the path (relative "
                        f"paths are relative to {os.getcwd()}).")
    files += [f for f in matched if f not in files]
  return files


def read_parquet(path: str, text_field: str) -> list[str]:
  """Documents of a .parquet file: the string column `text_field`, one document per row."""
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CorpusError(f"{path}: reading .parquet files needs pyarrow; pip install "
                      "'mlmjax[parquet]' (or pyarrow).") from e
  try:
    schema = pq.read_schema(path)
  except Exception as e:  # pyarrow raises ArrowInvalid and OSError subclasses on a bad file
    raise CorpusError(f"{path} is not a readable Parquet file: {e}") from e
  if text_field not in schema.names:
    raise CorpusError(f"{path}: no column {text_field!r} (columns: {schema.names}); set "
                      "data.text_field to the column that holds the text.")
  column = pq.read_table(path, columns=[text_field]).column(text_field)
  if not (column.type == "string" or column.type == "large_string"):
    raise CorpusError(f"{path}: column {text_field!r} is {column.type}, not a string.")
  docs = []
  for number, text in enumerate(column.to_pylist()):
    if text is None:
      raise CorpusError(f"{path}: row {number} has no {text_field!r} (null); fill or drop "
                        "the row.")
    if text := clean_text(text):  # as in .jsonl, an empty text holds no document
      docs.append(text)
  return docs


_READERS = {".txt": lambda path, field: read_txt(path), ".jsonl": read_jsonl,
            ".parquet": read_parquet}


def read_file(path: str, text_field: str) -> list[str]:
  """Documents of one .txt, .jsonl or .parquet file; a file with no document is an error."""
  reader = _READERS.get(os.path.splitext(path)[1])
  if reader is None:
    raise CorpusError(f"{path}: unsupported file type; data.paths must match only .txt "
                      "(documents separated by blank lines), .jsonl or .parquet files.")
  docs = reader(path, text_field)
  if not docs:
    raise CorpusError(f"{path} holds no document (it is empty or blank); remove it from "
                      "data.paths or fill it.")
  return docs


# ---------------------------------------------------------------------------- indexed sources


class IndexedCorpus(Sequence):
  """A lazy, random-access corpus: document i is `read([indices[i]])[0]`, read in chunks.

  `read(rows) -> list[str]` returns the cleaned texts of the source's rows `rows` (int64 [n]);
  `take` makes a view on a subset (a split) without reading anything.
  """

  def __init__(self, name: str, read: Callable[[np.ndarray], list[str]],
               indices: np.ndarray):
    self.name = name
    self._read = read
    self.indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, item):
    if isinstance(item, slice):
      return self._read(self.indices[item])
    return self._read(self.indices[[item]])[0]

  def __iter__(self) -> Iterator[str]:
    for chunk in iter_chunks(self, 1024):
      yield from chunk

  def take(self, positions: np.ndarray) -> "IndexedCorpus":
    """The documents at `positions` of this corpus, as a view."""
    return IndexedCorpus(self.name, self._read, self.indices[np.asarray(positions, np.int64)])


def iter_chunks(docs: Sequence[str], size: int) -> Iterator[list[str]]:
  """The documents in order, `size` at a time (lazy corpora read one chunk per step)."""
  for start in range(0, len(docs), size):
    yield list(docs[start:start + size])


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


def tfds_corpus(data_config: ml_collections.ConfigDict, split: str) -> IndexedCorpus:
  """A TFDS split as a lazy corpus (random access over ArrayRecord, no TensorFlow)."""
  source = tfds_source(data_config, split)
  field, label = data_config.text_field, f"TFDS {data_config.tfds_name}[{split}]"

  def read(rows: np.ndarray) -> list[str]:
    examples = source.__getitems__([int(r) for r in rows])
    return [_decode(ex[field], f"{label} row {r}") for r, ex in zip(rows, examples)]

  return IndexedCorpus(label, read, np.arange(len(source)))


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


def hf_corpus(data_config: ml_collections.ConfigDict) -> IndexedCorpus:
  """A Hugging Face dataset on disk as a lazy corpus."""
  dataset = hf_dataset(data_config)
  field, label = data_config.text_field, f"{data_config.hf_path}"

  def read(rows: np.ndarray) -> list[str]:
    texts = dataset[[int(r) for r in rows]][field]
    return [_decode(t, f"{label} row {r}") for r, t in zip(rows, texts)]

  return IndexedCorpus(label, read, np.arange(len(dataset)))
