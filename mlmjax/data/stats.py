"""Token statistics of the prepared training split, and the masking library's VocabTables.

`prepare` counts, for every token id, how often it occurs in the training rows (`frequency`:
[PAD] excluded, [CLS]/[SEP] included, as the rows hold them) and in how many training documents
it occurs (`document_frequency`), and writes them to `token_stats.npz` beside the rows. The
inverse document frequency is the smoothed `idf = log((1 + D) / (1 + df))` over D documents:
0 for a token in every document, largest for a token in none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tokenizers

from mlmjax import storage
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.masking import tables

STATS_FILE = "token_stats.npz"


class TokenStats:
  """Accumulates frequency and document frequency over chunks of the training split."""

  def __init__(self, vocab_size: int, pad_id: int):
    self.vocab_size, self.pad_id = vocab_size, pad_id
    self.frequency = np.zeros(vocab_size, np.int64)
    self.document_frequency = np.zeros(vocab_size, np.int64)
    self.documents = 0

  def add_documents(self, ids: np.ndarray, lengths: np.ndarray) -> None:
    """Documents end to end: ids int32 [T], lengths int64 [D]."""
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    pairs = np.unique(doc * self.vocab_size + ids)  # each (document, token) once
    self.document_frequency += np.bincount(pairs % self.vocab_size, minlength=self.vocab_size)
    self.documents += len(lengths)

  def add_rows(self, input_ids: np.ndarray) -> None:
    """Packed rows int32 [n, S]."""
    counts = np.bincount(input_ids.reshape(-1), minlength=self.vocab_size)
    counts[self.pad_id] = 0
    self.frequency += counts

  def save(self, data_dir: str, tokenizer_sha256: str) -> str:
    storage.save_npz(storage.join(data_dir, STATS_FILE), frequency=self.frequency,
                     document_frequency=self.document_frequency, documents=self.documents,
                     tokenizer_sha256=tokenizer_sha256)
    return STATS_FILE


def idf(document_frequency: np.ndarray, documents: int) -> np.ndarray:
  """float32 [V] smoothed inverse document frequency (see the module docstring)."""
  return np.log((1.0 + documents) / (1.0 + document_frequency)).astype(np.float32)


def load_stats(data_dir: str) -> dict[str, Any]:
  """{"frequency", "document_frequency", "idf", "documents", "tokenizer_sha256"}."""
  path = storage.join(data_dir, STATS_FILE)
  if not path.exists():
    raise FileNotFoundError(f"No {STATS_FILE} in {data_dir}; prepare the data (mlmjax-prepare) "
                            "with this workdir first.")
  out = storage.load_npz(path)
  out["documents"] = int(out["documents"])
  out["tokenizer_sha256"] = str(out["tokenizer_sha256"])
  out["idf"] = idf(out["document_frequency"], out["documents"])
  return out


def vocab_tables(tokenizer: tokenizers.Tokenizer, manifest_or_data_dir: dict | str):
  """The masking library's VocabTables, with corpus frequency, IDF and function words.

  Args:
    tokenizer: the tokenizer the data was prepared with (its hash is checked).
    manifest_or_data_dir: the manifest `prepare` returned, or its folder (workdir/data).
  Returns:
    `masking.VocabTables`: specials and word starts from the tokenizer (its own convention),
    `frequency` and `idf` from the training split, `function_word` from the masking library's
    English closed-class list (`masking.tables.DEFAULT_FUNCTION_WORDS`).
  """

  data_dir = (manifest_or_data_dir["data_dir"] if isinstance(manifest_or_data_dir, dict)
              else manifest_or_data_dir)
  stats = load_stats(data_dir)
  if stats["tokenizer_sha256"] != tokenizer_lib.tokenizer_hash(tokenizer):
    raise ValueError(f"The token statistics in {data_dir} were computed with another tokenizer; "
                     "prepare the data again with this one.")
  roles = tokenizer_lib.special_tokens(tokenizer)
  vocab = tokenizer.get_vocab()
  added = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
  specials = list(dict.fromkeys([*roles.values(), *(t for t in added if t in vocab)]))
  size = max(vocab.values()) + 1
  if len(stats["frequency"]) != size:
    raise ValueError(f"{data_dir}/{STATS_FILE} has {len(stats['frequency'])} entries, the "
                     f"tokenizer {size} ids; prepare the data again.")
  return tables.VocabTables.from_vocab(
      vocab, special_tokens=specials, mask_token=roles["mask"], pad_token=roles["pad"],
      frequency=stats["frequency"].astype(np.float32), idf=stats["idf"],
      function_words=tables.DEFAULT_FUNCTION_WORDS)
