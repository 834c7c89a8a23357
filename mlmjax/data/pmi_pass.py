"""The PMI pass of preparation: ngram_ids beside every part, once all the rows are written.

PMI n-grams are found on packed rows, not on text: process 0 builds the vocabulary on the
training rows of every shard (`build_vocab`; pmi.py holds the method) and saves it, then every
process matches it on its own shards' parts of each split (`match_parts`), writing an
ngram_ids part and the count of the tokens it covers beside each. `record_coverage` adds those
counts to the manifest.
"""

import dataclasses

from absl import logging
import numpy as np

from mlmjax import storage
from mlmjax.data import annotate
from mlmjax.data import parts
from mlmjax.data import pmi

_ROWS = ("input_ids", "segment_ids")  # what building and matching read of a part


def add_files(splits: dict) -> None:
  """Adds each part's ngram_ids file (and its dtype) to the manifest's splits."""
  for split, info in splits.items():
    info["dtype"][annotate.NGRAM] = "int32"
    for part in info["parts"]:
      part["files"][annotate.NGRAM] = parts.part_files(split, part["shard"], [annotate.NGRAM])[
          annotate.NGRAM]


class _SplitArray:
  """One field of a split's rows across its parts, as `pmi.build_vocab` reads it: `.shape`, and
  rows by sorted index arrays (parts are read one at a time, the last one kept)."""

  def __init__(self, data_dir: str, split_parts: list[dict], field: str, seq_len: int):
    self.data_dir, self.parts, self.field = data_dir, split_parts, field
    self.bounds = np.cumsum([0] + [p["rows"] for p in split_parts])
    self.shape = (int(self.bounds[-1]), seq_len)
    self._loaded = (None, None)

  def _part(self, i: int) -> np.ndarray:
    if self._loaded[0] != i:
      self._loaded = (i, parts.read(self.data_dir, self.parts[i], [self.field])[self.field])
    return self._loaded[1]

  def __getitem__(self, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    which = np.searchsorted(self.bounds, rows, side="right") - 1
    return np.concatenate([self._part(i)[rows[which == i] - self.bounds[i]]
                           for i in np.unique(which).tolist()])


def build_vocab(tok, data_dir: str, splits: dict, seq_len: int, tables: dict[str, np.ndarray],
                pmi_config: pmi.PmiConfig) -> dict:
  """Builds the PMI vocabulary on the training rows and saves it (process 0); returns the
  manifest's `pmi` entry."""
  train = splits["train"]["parts"]
  arrays = {f: _SplitArray(data_dir, train, f, seq_len) for f in _ROWS}
  built = pmi.build_vocab(arrays, tables["word_start"], tables["barrier"], pmi_config,
                          decode=lambda ids: tok.decode(ids))
  return {**pmi.save_vocab(built, data_dir), "config": dataclasses.asdict(pmi_config)}


def match_parts(data_dir: str, splits: dict, mine: set[int], seq_len: int,
                tables: dict[str, np.ndarray], vocab: dict, staging: str | None) -> None:
  """ngram_ids of the parts of shards `mine` (this process's), from the PMI vocabulary, each
  beside its rows with the count of the tokens it covers (NAME.json)."""
  for info in splits.values():
    for part in info["parts"]:
      if part["shard"] in mine:
        _match_part(data_dir, part, seq_len, tables, vocab, staging)


def _match_part(data_dir: str, part: dict, seq_len: int, tables: dict[str, np.ndarray],
                vocab: dict, staging: str | None) -> None:
  rows = parts.read(data_dir, part, _ROWS)
  name = part["files"][annotate.NGRAM]
  writer = parts.writer(data_dir, name, staging, np.int32, (seq_len,))
  covered = np.zeros(pmi.MAX_N + 1, np.int64)  # tokens inside an n-gram of n words
  for block, words in pmi.match_rows(rows, tables["word_start"], tables["barrier"], vocab):
    writer.append(block)
    covered += np.bincount(words.reshape(-1), minlength=len(covered))
  writer.close()
  storage.write_json(storage.join(data_dir, f"{name}.json"),
                     {"covered": int(covered[2:].sum()),
                      "covered_by_n": {str(n): int(covered[n])
                                       for n in range(2, pmi.MAX_N + 1)}})


def record_coverage(data_dir: str, splits: dict, pmi_entry: dict) -> None:
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

