"""Host-side data: text sources, tokenizers, annotations, packing to disk, the grain loader.

  sources, corpora       readers of every source; the corpus as a whole and its split
  tokenizer              train or load WordPiece / SentencePiece / byte-level BPE
  annotate, rules, spacy_annotator   entities, phrases, POS classes, aligned to tokens
  token_tables           per-id tables of a vocabulary that the annotations read
  workers                the tokenizing worker processes (no JAX)
  packing                documents -> fixed-length rows
  prepare                mlmjax-prepare: the stages, in order, and the manifest
  shards, parts          one process's shards; the .npy part files they write
  pmi, pmi_pass          PMI n-gram vocabulary; its pass over the prepared parts
  stats, manifest        token statistics and VocabTables; manifest.json
  new_texts              new text as rows, annotated as the prepared data was
  pipeline               the grain loader
  labelled               word-labelled sentences for the probes
  stdlib_docs            a script, run in a child process: the embedded corpus's documents

Submodules load on first use: the tokenizing workers import only what tokenizing needs (not
JAX or grain), and `import mlmjax.data` stays cheap.
"""

import importlib

# Every module but stdlib_docs (a script, never imported).
_SUBMODULES = ("annotate", "corpora", "labelled", "manifest", "new_texts", "packing", "parts",
               "pipeline", "pmi", "pmi_pass", "prepare", "rules", "shards", "sources",
               "spacy_annotator", "stats", "token_tables", "tokenizer", "workers")


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"mlmjax.data.{name}")
  if name == "vocab_tables":
    return importlib.import_module("mlmjax.data.stats").vocab_tables
  raise AttributeError(f"module 'mlmjax.data' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted([*globals(), *_SUBMODULES, "vocab_tables"])
