"""Text sources: the embedded corpus (Python's own documentation) and local .txt/.jsonl files.

A corpus is a `list[str]`, one string per document, in a deterministic order. Every input a user
can get wrong raises `CorpusError` with a message that names the file (and line) and the fix;
nothing is dropped silently.
"""

import codecs
import functools
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

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
# Bytes read from the start of a file to recognise binary content.
_SNIFF_BYTES = 8192


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
  if b"\0" in raw[:_SNIFF_BYTES]:
    raise CorpusError(f"{path} looks binary (it contains NUL bytes); data.paths must match "
                      "only UTF-8 .txt or .jsonl text files.")
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


def read_file(path: str, text_field: str) -> list[str]:
  """Documents of one .txt or .jsonl file; a file with no document is an error."""
  if path.endswith(".txt"):
    docs = read_txt(path)
  elif path.endswith(".jsonl"):
    docs = read_jsonl(path, text_field)
  else:
    raise CorpusError(f"{path}: unsupported file type; data.paths must match only .txt "
                      "(documents separated by blank lines) or .jsonl files.")
  if not docs:
    raise CorpusError(f"{path} holds no document (it is empty or blank); remove it from "
                      "data.paths or fill it.")
  return docs


def load_documents(data_config: ml_collections.ConfigDict) -> list[str]:
  """The documents named by `data_config.source` ("embedded" or "files"), in a fixed order."""
  if data_config.source == "embedded":
    docs = embedded_documents()
  elif data_config.source == "files":
    docs = []
    for path in resolve_paths(data_config.paths):
      docs += read_file(path, data_config.text_field)
  else:
    raise CorpusError(f"Unknown data.source {data_config.source!r}; use 'embedded' (Python's "
                      "own documentation) or 'files' (with data.paths).")
  if not docs:
    raise CorpusError("The corpus is empty; point data.paths at files with text.")
  return docs


def source_fingerprint(data_config: ml_collections.ConfigDict) -> dict:
  """A cheap description of the corpus' inputs: it changes when they do (no text is read)."""
  if data_config.source == "embedded":
    return {"source": "embedded", "version": EMBEDDED_VERSION, "python": sys.version}
  if data_config.source == "files":
    stats = [(os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns)
             for p in resolve_paths(data_config.paths)]
    return {"source": "files", "files": [list(s) for s in stats]}
  raise CorpusError(f"Unknown data.source {data_config.source!r}; use 'embedded' or 'files'.")


def documents_hash(docs: Sequence[str]) -> str:
  """sha256 over the documents and their boundaries."""
  digest = hashlib.sha256()
  for doc in docs:
    data = doc.encode("utf-8")
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)
  return digest.hexdigest()


def split_documents(docs: Sequence[str], validation_fraction: float,
                    seed: int) -> tuple[list[str], list[str]]:
  """Holds out `round(fraction * n)` documents (at least one) chosen by `seed`.

  Both splits keep the corpus order. Splitting whole documents keeps text of one document out
  of the other split.
  """
  if len(docs) < 2:
    raise CorpusError(f"The corpus has {len(docs)} document(s); at least 2 are needed to hold "
                      "one out for validation. Add text, or separate documents by blank lines.")
  if not 0.0 <= validation_fraction < 1.0:
    raise CorpusError(f"data.validation_fraction={validation_fraction} must be in [0, 1).")
  num_validation = min(max(1, round(validation_fraction * len(docs))), len(docs) - 1)
  order = np.random.default_rng(seed).permutation(len(docs))
  held_out = np.zeros(len(docs), bool)
  held_out[order[:num_validation]] = True
  train = [d for d, h in zip(docs, held_out) if not h]
  validation = [d for d, h in zip(docs, held_out) if h]
  return train, validation
