"""Host-side data: text sources, tokenizers, annotations, packing to disk, the grain loader.

Submodules load on first use: the worker processes of `prepare` import only what tokenizing
needs (not JAX or grain), and `import mlmjax.data` stays cheap.
"""

import importlib

_SUBMODULES = ("annotate", "corpora", "packing", "pipeline", "pmi", "prepare", "rules",
               "sources", "spacy_annotator", "stats", "tokenizer")


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"mlmjax.data.{name}")
  if name == "vocab_tables":
    return importlib.import_module("mlmjax.data.stats").vocab_tables
  raise AttributeError(f"module 'mlmjax.data' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted([*globals(), *_SUBMODULES, "vocab_tables"])
