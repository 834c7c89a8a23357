"""PMI-Masking's n-gram vocabulary (Levine et al., ICLR 2021), built and matched on packed rows.

Words are the masking library's words: a token that starts a word (WordPiece: no "##";
SentencePiece: "▁"; byte-level BPE: "Ġ") and the continuation tokens after it. A word that is a
special token or has no letter or digit (punctuation) is a barrier: no n-gram contains one, and
none crosses a row or a document (segment) boundary.

Vocabulary (`build_vocab`, over the training rows): every word n-gram of length 2..max_n seen
more than `min_count` times (the paper: more than 10) is scored by the paper's eq. 3,

    PMI(w1..wn) = min over segmentations s of w1..wn into >= 2 parts of log p(w1..wn) / Π p(s_i)

with p(x) = count(x) / (number of n-gram positions of x's length), taken over all segmentations
by dynamic programming. Each length is ranked on its own and the lists merged in the paper's
proportions (half bigrams, a quarter trigrams, the rest shared by 4- and 5-grams) up to
`vocab_size` entries, keeping only n-grams whose PMI exceeds `min_pmi`. The paper ranks the
n-grams of a 3.3B-word corpus and keeps the top 800K with no floor; a corpus thousands of times
smaller has fewer frequent n-grams than slots, and ranking alone would then keep every one of
them, including pairs that co-occur less than chance ("and to": PMI < 0). The floor, 1 by
default (seen at least e ≈ 2.7 times as often as the likeliest split predicts), keeps the
collocations, so the slots shrink to what the corpus supports; `lengths` in the manifest says,
per length, the slots, the candidates, how many passed the floor and were kept, and the share
of the training tokens they cover. Counting covers at most `max_tokens` tokens: whole rows
drawn by `seed`.

Matching (`match`, every split), as the paper: an n-gram inside a longer matching one is
dropped (the longest wins), and n-grams that partly overlap, of one length or two, are
resolved at random (reproducibly: the draw comes from the n-gram and its place in the row).
The result is `ngram_ids` [N, S]: k > 0 on the tokens of the row's k-th n-gram, else 0.

n-grams are identified by 64-bit hashes of their words' token ids (two distinct n-grams share a
hash with probability ~1e-19 per pair): vectorised numpy, no Python loop over tokens.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator

import numpy as np

from mlmjax import storage
from mlmjax.data import annotate
from mlmjax.data import packing

VOCAB_FILE = "pmi_vocab.npz"
VOCAB_JSON = "pmi_vocab.json"  # the same vocabulary, readable: text, length, count, PMI
SHARES = {2: 0.5, 3: 0.25, 4: 0.125, 5: 0.125}  # the paper's merge of the per-length lists
MAX_N = max(SHARES)
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_BLOCK_ROWS = 4096


@dataclasses.dataclass(frozen=True)
class PmiConfig:
  """See the module docstring; `data.pmi.*` in the config."""
  vocab_size: int = 100_000
  min_count: int = 10
  min_pmi: float = 1.0
  max_n: int = 5
  max_tokens: int = 50_000_000
  seed: int = 0

  @classmethod
  def from_config(cls, pmi_config) -> PmiConfig:
    pmi_config = pmi_config or {}
    fields = {f.name: pmi_config.get(f.name, f.default) for f in dataclasses.fields(cls)}
    config = cls(**fields)
    if not 2 <= config.max_n <= MAX_N:
      raise ValueError(f"data.pmi.max_n={config.max_n} must be in [2, {MAX_N}].")
    return config


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser: a bijective scramble of uint64 values (wraps, as intended)."""
  with np.errstate(over="ignore"):
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _extend(prefix: np.ndarray, word: np.ndarray) -> np.ndarray:
  """Hash of an n-gram from the hash of its first n-1 words and its last word."""
  with np.errstate(over="ignore"):
    return _mix(prefix * np.uint64(0x9E3779B97F4A7C15) + word)


@dataclasses.dataclass
class _Words:
  """The words of a block of rows, flat. M = words."""
  hash: np.ndarray  # uint64 [M]
  run_last: np.ndarray  # int64 [M] last word of the barrier-free run holding the word
  ok: np.ndarray  # bool [M] not a barrier
  token_word: np.ndarray  # int64 [B*S] word index of each token
  first_token: np.ndarray  # int64 [M] flat index of the word's first token


def _words(input_ids: np.ndarray, segment_ids: np.ndarray, word_start: np.ndarray,
           barrier: np.ndarray) -> _Words:
  ids = input_ids.reshape(-1)
  token_word, first = annotate.word_index(input_ids, word_start, barrier, segment_ids)
  # Token hashes tagged by their place in the word, summed per word (mod 2^64), scrambled.
  place = np.arange(len(ids)) - first[token_word]
  tagged = _mix(ids.astype(np.uint64) + (place.astype(np.uint64) << np.uint64(32)))
  with np.errstate(over="ignore"):
    word_hash = _mix(np.add.reduceat(tagged, first, dtype=np.uint64))
  ok = ~barrier[ids[first]]
  # A run: consecutive non-barrier words of one row and one segment.
  row = first // input_ids.shape[1]
  seg = segment_ids.reshape(-1)[first]
  new_run = ~ok
  new_run[0] = True
  new_run[1:] |= (row[1:] != row[:-1]) | (seg[1:] != seg[:-1]) | ~ok[:-1]
  run = np.cumsum(new_run) - 1
  last_of_run = np.append(np.flatnonzero(run[1:] != run[:-1]), len(run) - 1)
  return _Words(word_hash, last_of_run[run], ok, token_word, first)


def _ngram_hashes(words: _Words, max_n: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """{n: (hash uint64 [M], valid bool [M])}: the n-gram starting at each word."""
  m = len(words.hash)
  index = np.arange(m)
  out = {1: (words.hash, words.ok)}
  current = words.hash
  for n in range(2, max_n + 1):
    nxt = np.zeros(m, np.uint64)
    nxt[:m - n + 1] = words.hash[n - 1:]
    current = _extend(current, nxt)
    out[n] = (current, words.ok & (words.run_last >= index + n - 1))
  return out


def _blocks(arrays: dict[str, np.ndarray], rows: np.ndarray | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  total = arrays["input_ids"].shape[0]
  rows = np.arange(total) if rows is None else rows
  for start in range(0, len(rows), _BLOCK_ROWS):
    take = rows[start:start + _BLOCK_ROWS]
    yield (np.asarray(arrays["input_ids"][take]), np.asarray(arrays["segment_ids"][take]))


def _merge_counts(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  keys = np.concatenate([k for k, _ in parts])
  counts = np.concatenate([c for _, c in parts])
  unique, inverse = np.unique(keys, return_inverse=True)
  return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)


def _segmentation_pmi(words: np.ndarray, log_p: Callable[[np.ndarray, int], np.ndarray]
                      ) -> np.ndarray:
  """eq. 3 for candidates `words` uint64 [C, n]: log p(all) - max over >= 2-part splits."""
  c, n = words.shape
  best = {}  # (a, b) -> max over segmentations of words[a:b] (>= 1 part) of Σ log p(part)
  whole = None
  for length in range(1, n + 1):
    for a in range(0, n - length + 1):
      b = a + length
      h = words[:, a]
      for k in range(a + 1, b):
        h = _extend(h, words[:, k])
      lp = log_p(h, length)
      split = np.full(c, -np.inf)
      for k in range(a + 1, b):
        split = np.maximum(split, best[a, k] + best[k, b])
      if length == n:
        whole = lp - split
      best[a, b] = np.maximum(lp, split)
  return whole


def build_vocab(arrays: dict[str, np.ndarray], word_start: np.ndarray, barrier: np.ndarray,
                config: PmiConfig, decode: Callable[[list[int]], str] | None = None) -> dict:
  """The PMI n-gram vocabulary of the training rows (see the module docstring).

  Args:
    arrays: {"input_ids": [N, S], "segment_ids": [N, S]} (memmaps are read in blocks).
    word_start, barrier: bool [V] tables (see token_tables.py).
    config: the vocabulary's size and counting limits.
    decode: token ids -> text, for the readable list; None leaves texts out.
  Returns:
    {n: {"hash": uint64 [K_n] sorted, ...}, "entries": [{"ngram", "n", "count", "pmi"}]}.
  """
  num_rows, seq_len = arrays["input_ids"].shape
  rows = None
  if num_rows * seq_len > config.max_tokens:
    take = max(1, config.max_tokens // seq_len)
    rows = np.sort(np.random.default_rng(config.seed).choice(num_rows, take, replace=False))

  # Pass 1: counts of every n-gram, n = 1..max_n, and the number of positions per length.
  parts = {n: [] for n in range(1, config.max_n + 1)}
  totals = dict.fromkeys(parts, 0)
  for ids, seg in _blocks(arrays, rows):
    for n, (h, valid) in _ngram_hashes(_words(ids, seg, word_start, barrier),
                                       config.max_n).items():
      keys, counts = np.unique(h[valid], return_counts=True)
      parts[n].append((keys, counts))
      totals[n] += int(valid.sum())
  counted = {n: _merge_counts(p) if p else (np.zeros(0, np.uint64), np.zeros(0, np.int64))
             for n, p in parts.items()}

  def log_p(h: np.ndarray, n: int) -> np.ndarray:
    keys, counts = counted[n]
    at = np.minimum(np.searchsorted(keys, h), max(len(keys) - 1, 0))
    return np.log(counts[at] / max(totals[n], 1))

  # Pass 2: the words (and tokens, for the readable list) of one occurrence per candidate.
  candidates = {n: counted[n][0][counted[n][1] > config.min_count]  # "more than 10"
                for n in range(2, config.max_n + 1)}
  found = {n: {} for n in candidates}
  for ids, seg in _blocks(arrays, rows):
    words = _words(ids, seg, word_start, barrier)
    flat_ids = ids.reshape(-1)
    for n, (h, valid) in _ngram_hashes(words, config.max_n).items():
      if n < 2 or not len(candidates[n]):
        continue
      at = np.flatnonzero(valid & np.isin(h, candidates[n]))
      keys, first = np.unique(h[at], return_index=True)
      new = [i for i, k in zip(at[first].tolist(), keys.tolist()) if k not in found[n]]
      for i in new:
        last_token = (words.first_token[i + n] if i + n < len(words.first_token)
                      else len(flat_ids))
        found[n][int(h[i])] = (words.hash[i:i + n].copy(),
                               flat_ids[words.first_token[i]:last_token].tolist())

  vocab, entries, lengths = {}, [], {}
  budget = {n: int(round(config.vocab_size * SHARES[n])) for n in candidates}
  for n in candidates:
    hashes = np.array(list(found[n]), np.uint64)
    lengths[n] = {"slots": budget[n], "candidates": len(hashes), "above_min_pmi": 0, "kept": 0}
    if not len(hashes):
      vocab[n] = np.zeros(0, np.uint64)
      continue
    words = np.stack([found[n][int(h)][0] for h in hashes])
    score = _segmentation_pmi(words, log_p)
    keys, counts = counted[n]
    count = counts[np.searchsorted(keys, hashes)]
    # By PMI (ties by hash), the collocations only: a small corpus fills no slot list with them,
    # and ranking alone would then keep every frequent n-gram, collocation or not.
    order = np.lexsort((hashes, -score))
    order = order[score[order] > config.min_pmi]
    lengths[n].update(above_min_pmi=len(order), kept=min(len(order), budget[n]))
    order = order[:budget[n]]
    vocab[n] = np.sort(hashes[order])
    for i in order.tolist():
      entry = {"n": n, "count": int(count[i]), "pmi": round(float(score[i]), 4)}
      if decode is not None:
        entry["ngram"] = decode(found[n][int(hashes[i])][1])
      entries.append(entry)
  entries.sort(key=lambda e: -e["pmi"])
  return {"vocab": vocab, "entries": entries, "positions": totals, "lengths": lengths}


def save_vocab(vocab: dict, data_dir: str) -> dict:
  """Writes pmi_vocab.npz (hashes) and pmi_vocab.json (readable); returns the manifest entry."""
  storage.save_npz(storage.join(data_dir, VOCAB_FILE),
                   **{f"hash_{n}": h for n, h in vocab["vocab"].items()})
  # One entry a line: readable, and far faster to write than an indented dump.
  storage.write_text(storage.join(data_dir, VOCAB_JSON), "[\n" + ",\n".join(
      json.dumps(e, ensure_ascii=False) for e in vocab["entries"]) + "\n]\n")
  return {"file": VOCAB_FILE, "readable": VOCAB_JSON,
          "size": {str(n): len(h) for n, h in vocab["vocab"].items()},
          "lengths": {str(n): v for n, v in vocab["lengths"].items()}}


def load_vocab(data_dir: str) -> dict[int, np.ndarray]:
  """{n: sorted uint64 hashes} from pmi_vocab.npz."""
  return {int(k.split("_")[1]): v
          for k, v in storage.load_npz(storage.join(data_dir, VOCAB_FILE)).items()}


def _resolve(length: np.ndarray, priority: np.ndarray) -> np.ndarray:
  """A non-overlapping choice among candidates (length int64 [M]: n-gram length in words
  starting at each word, 0 = none; at most one per start), at random.

  The result of taking the candidates one by one in decreasing `priority` (uint64 [M], random
  per candidate), each unless it overlaps one taken before. Computed in rounds: a candidate
  whose priority beats every undecided candidate it overlaps is taken, those it overlaps are
  dropped; a few rounds decide all (the expected number grows with the log of a chain's length).
  """
  positions = np.flatnonzero(length)
  m = len(positions)
  rank = np.empty(m, np.int64)
  rank[np.argsort(priority[positions], kind="stable")] = np.arange(m)  # unique
  # Candidates start at distinct words, so overlapping ones are fewer than max n apart in the
  # list; the earlier one reaches the later.
  reach = positions + length[positions]
  longest = int(length.max(initial=1))
  pairs = [(d, positions[d:] < reach[:-d]) for d in range(1, min(longest, m))]
  undecided, taken = np.ones(m, bool), np.zeros(m, bool)
  while undecided.any():
    rival = np.full(m, -1)
    for d, close in pairs:
      rival[:-d] = np.maximum(rival[:-d], np.where(close & undecided[d:], rank[d:], -1))
      rival[d:] = np.maximum(rival[d:], np.where(close & undecided[:-d], rank[:-d], -1))
    new = undecided & (rank > rival)
    blocked = np.zeros(m, bool)
    for d, close in pairs:
      blocked[:-d] |= close & new[d:]
      blocked[d:] |= close & new[:-d]
    taken |= new
    undecided &= ~new & ~blocked
  out = np.zeros(len(length), bool)
  out[positions[taken]] = True
  return out


def _shift(x: np.ndarray, by: int) -> np.ndarray:
  """x moved `by` places to the right (False shifted in)."""
  return np.concatenate([np.zeros(by, bool), x[:len(x) - by]]) if by else x


def match_words(input_ids: np.ndarray, segment_ids: np.ndarray, word_start: np.ndarray,
                barrier: np.ndarray, vocab: dict[int, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
  """`match`, and int32 [B, S] the length in words of each token's n-gram (0 outside one)."""
  words = _words(input_ids, segment_ids, word_start, barrier)
  m = len(words.hash)
  lengths = sorted(n for n in vocab if len(vocab[n]))
  hashes = _ngram_hashes(words, max(lengths, default=1))
  candidate = {}
  for n in lengths:
    h, valid = hashes[n]
    at = np.minimum(np.searchsorted(vocab[n], h), len(vocab[n]) - 1)
    candidate[n] = valid & (vocab[n][at] == h)
  # An n-gram inside a longer one is no candidate: the longest wins (the paper's rule).
  for n in lengths:
    for longer in (k for k in lengths if k > n):
      for offset in range(longer - n + 1):
        candidate[n] &= ~_shift(candidate[longer], offset)
  length = np.zeros(m, np.int64)
  priority = np.zeros(m, np.uint64)
  place_in_row = words.first_token % input_ids.shape[1]
  for n in lengths:  # at most one candidate per start now: a shorter one there is inside
    length[candidate[n]] = n
    # Random but reproducible: from the n-gram and its place in its row, not the block.
    priority = np.where(candidate[n], _mix(hashes[n][0] ^ (place_in_row.astype(np.uint64)
                                                           << np.uint64(48))), priority)
  # Partly overlapping n-grams, of one length or of two, are resolved at random.
  starts = np.flatnonzero(_resolve(length, priority))
  span, span_words = np.zeros(m, np.int64), np.zeros(m, np.int64)
  for offset in range(max(lengths, default=0)):
    inside = starts[length[starts] > offset]
    span[inside + offset] = np.arange(1, len(starts) + 1)[length[starts] > offset]
    span_words[inside + offset] = length[inside]
  per_token = span[words.token_word].reshape(input_ids.shape).astype(np.int32)
  return (packing.renumber_spans(per_token),
          span_words[words.token_word].reshape(input_ids.shape).astype(np.int32))


def match(input_ids: np.ndarray, segment_ids: np.ndarray, word_start: np.ndarray,
          barrier: np.ndarray, vocab: dict[int, np.ndarray]) -> np.ndarray:
  """int32 [B, S] ngram_ids of rows: the k-th vocabulary n-gram of each row is k (see above)."""
  return match_words(input_ids, segment_ids, word_start, barrier, vocab)[0]


def match_rows(arrays: dict[str, np.ndarray], word_start: np.ndarray, barrier: np.ndarray,
               vocab: dict[int, np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """`match_words` over all rows of a split, in blocks: yields (ngram_ids, words per n-gram),
  int32 [b, S] each, in row order."""
  for ids, seg in _blocks(arrays):
    yield match_words(ids, seg, word_start, barrier, vocab)
