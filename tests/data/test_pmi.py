"""Tests of mlmjax.data.pmi: the PMI score, the vocabulary on a corpus, longest-first matching."""

import itertools
import json

import numpy as np
import pytest

from helpers import split_arrays
from mlmjax.data import pmi
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import tokenizer as tokenizer_lib


def _hash(words):
  h = np.array([words[0]], np.uint64)
  for w in words[1:]:
    h = pmi._extend(h, np.array([w], np.uint64))
  return int(h[0])


def _compositions(n):
  """Every split of range(n) into >= 2 contiguous parts, as lists of (start, stop)."""
  for cuts in range(1, n):
    for points in itertools.combinations(range(1, n), cuts):
      bounds = (0, *points, n)
      yield list(zip(bounds[:-1], bounds[1:]))


def test_segmentation_pmi_is_the_minimum_over_segmentations():
  rng = np.random.default_rng(0)
  words = np.array([[11, 12, 13, 14, 15], [21, 22, 23, 24, 25]], np.uint64)
  log_p = {}
  for row in words.tolist():
    for a in range(5):
      for b in range(a + 1, 6):
        log_p.setdefault(_hash(row[a:b]), -rng.uniform(1, 10) * (b - a))

  def lookup(h, n):
    del n
    return np.array([log_p[int(x)] for x in h])

  got = pmi._segmentation_pmi(words, lookup)
  for row, value in zip(words.tolist(), got):
    expected = min(log_p[_hash(row)] - sum(log_p[_hash(row[a:b])] for a, b in parts)
                   for parts in _compositions(5))
    assert value == pytest.approx(expected)


@pytest.mark.parametrize("lengths", [(2,), (3,), (5,), (2, 3, 5)])
def test_resolve_is_greedy_in_random_priority_order(lengths):
  rng = np.random.default_rng(sum(lengths))
  for density in (0.2, 0.6, 1.0):  # 1.0: one long chain
    length = np.where(rng.random(300) < density, rng.choice(lengths, 300), 0)
    length[-5:] = 0  # an n-gram ends inside the block
    priority = rng.integers(0, 2**63, 300, dtype=np.uint64)
    taken = np.zeros(300, bool)
    for i in sorted(np.flatnonzero(length), key=lambda i: -int(priority[i])):
      before = [j for j in np.flatnonzero(taken) if j < i and j + length[j] > i]
      after = [j for j in np.flatnonzero(taken) if i < j < i + length[i]]
      taken[i] = not before and not after
    got = pmi._resolve(length, priority)
    np.testing.assert_array_equal(got, taken)
    if density == 1.0 and len(lengths) == 1:  # at random, not leftmost (every n-th)
      assert not np.array_equal(np.flatnonzero(got), np.arange(0, 295, lengths[0]))


def test_the_longest_wins_inside_and_partial_overlaps_go_either_way():
  """Words a b c d (one token each): with "a b c" and "b c" in the vocabulary the trigram
  always wins (the paper's longest match); with "a b c" and "c d", which share only "c", each
  wins somewhere: the draw depends on the place in the row, not on the length."""
  a, b, c, d, filler = 5, 6, 7, 8, 9
  word_start = np.ones(16, bool)
  barrier = np.zeros(16, bool)
  barrier[:5] = True  # specials
  rows = np.full((64, 16), filler, np.int32)
  for r in range(64):
    at = 1 + r % 10
    rows[r, at:at + 4] = (a, b, c, d)
  rows[:, 0], rows[:, -1] = 2, 3
  segments = np.ones_like(rows)
  word = lambda token: int(pmi._mix(pmi._mix(np.array([token], np.uint64)))[0])  # 1 token
  vocab = lambda *grams: {n: np.sort(np.array([_hash([word(t) for t in g]) for g in grams
                                               if len(g) == n], np.uint64)) for n in (2, 3)}
  ids, words = pmi.match_words(rows, segments, word_start, barrier, vocab((a, b, c), (b, c)))
  assert (words.max(1) == 3).all() and (words[words > 0] == 3).all()
  ids, words = pmi.match_words(rows, segments, word_start, barrier, vocab((a, b, c), (c, d)))
  won = words.max(1)
  assert set(won.tolist()) == {2, 3}
  assert ((ids > 0).sum(1) == won).all()  # one n-gram per row: they overlap


_FILLER = ("alpha beta gamma delta epsilon zeta theta iota kappa lambda sigma omega river "
           "stone cloud paper").split()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, write_txt, data_config):
  """A corpus where 'new york city' and 'machine learning' recur in random contexts."""
  rng = np.random.default_rng(0)
  docs = []
  for i in range(120):
    words = list(rng.choice(_FILLER, size=12))
    words.insert(int(rng.integers(0, 12)), "new york city" if i % 2 else "machine learning")
    docs.append(" ".join(words) + ".")
  work = tmp_path_factory.mktemp("pmi")
  config = data_config(source="files", paths=write_txt(work / "c.txt", docs), seq_len=24,
                       vocab_size=120, annotations=("ngram_ids",), packing="full_sentences",
                       pmi={"vocab_size": 40, "min_count": 5})
  manifest = prepare_lib.prepare(config, str(work))
  return manifest, str(work / "data"), tokenizer_lib.get_tokenizer(config, str(work))


def test_vocabulary_ranks_the_recurring_phrases_first(prepared):
  manifest, data_dir, _ = prepared
  with open(f"{data_dir}/pmi_vocab.json", encoding="utf-8") as f:
    entries = json.load(f)
  top = [e["ngram"] for e in entries[:4]]
  assert set(top) == {"new york", "york city", "new york city", "machine learning"}
  assert all(e["count"] > 5 for e in entries)  # "more than min_count"
  assert [e["pmi"] for e in entries] == sorted((e["pmi"] for e in entries), reverse=True)
  assert manifest["pmi"]["size"]["2"] <= 20  # half of vocab_size=40 for bigrams
  assert min(e["pmi"] for e in entries) > 1.0  # data.pmi.min_pmi: collocations only
  lengths = manifest["pmi"]["lengths"]
  for n, stats in lengths.items():
    assert stats["kept"] == manifest["pmi"]["size"][n] <= stats["slots"]
    assert stats["kept"] <= stats["above_min_pmi"] <= stats["candidates"]
  assert lengths["2"]["token_share"] > 0.05 and lengths["3"]["token_share"] > 0.05
  assert manifest["splits"]["train"]["ngram_tokens"] == pytest.approx(
      sum(s["token_share"] for s in lengths.values()) * manifest["splits"]["train"]["tokens"],
      abs=4)
  # No n-gram holds punctuation (a barrier) or crosses a document.
  assert not any("." in e["ngram"] for e in entries)


def test_matching_is_longest_first_and_per_row(prepared):
  _, data_dir, tok = prepared
  train = split_arrays(data_dir, "train")
  ids, ngram, seg = train["input_ids"], train["ngram_ids"], train["segment_ids"]
  assert ngram.shape == ids.shape and ngram.dtype == np.int32
  sep = tok.token_to_id("[SEP]")
  matched = set()
  for r in range(len(ids)):
    k = ngram[r][ngram[r] > 0]
    firsts = k[np.concatenate([[True], k[1:] != k[:-1]])] if len(k) else k
    assert firsts.tolist() == list(range(1, len(firsts) + 1))  # 1, 2, ... per row
    for span in range(1, ngram[r].max() + 1):
      at = np.flatnonzero(ngram[r] == span)
      assert (np.diff(at) == 1).all()  # contiguous
      assert len(set(seg[r][at])) == 1 and sep not in ids[r][at]  # one document, no [SEP]
      matched.add(tok.decode(ids[r][at].tolist()))
  # "new york city" wins over its parts "new york" and "york city", which are in the
  # vocabulary too; every document is one sentence that fits a row, so none is cut.
  assert "new york city" in matched and "machine learning" in matched
  assert not matched & {"new york", "york city"}
