"""Shared fixtures for the masking tests: small vocabularies and synthetic token batches."""

import numpy as np
import pytest

from mlmjax import masking

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)
NUM_WORDS, NUM_PIECES = 40, 20


def wordpiece_vocab():
  """5 specials, 40 word-start tokens, 20 '##' continuation pieces: V = 65."""
  return SPECIALS + [f"w{i}" for i in range(NUM_WORDS)] + [f"##p{i}" for i in range(NUM_PIECES)]


@pytest.fixture(scope="session")
def vocab():
  return wordpiece_vocab()


@pytest.fixture(scope="session")
def tables(vocab):
  freq = np.arange(len(vocab), dtype=np.float32) + 1.0
  idf = np.linspace(0.1, 5.0, len(vocab)).astype(np.float32)
  return masking.VocabTables.from_vocab(vocab, frequency=freq, idf=idf)


def _make_ids(seed, batch, length, *, lengths=None, piece_prob=0.3, packed=0):
  """[B, S] int32 rows "[CLS] tokens [SEP] PAD...", with '##' pieces at `piece_prob`.

  lengths: real tokens per row ([CLS] and [SEP] included); default: random in [S/2, S].
  packed: if > 0, rows hold that many documents separated by [SEP] (segment ids returned).
  Returns (ids, segment_ids).
  """
  rng = np.random.default_rng(seed)
  ids = np.full((batch, length), PAD, np.int32)
  seg = np.zeros((batch, length), np.int32)
  if lengths is None:
    lengths = rng.integers(length // 2, length + 1, batch)
  first_word, first_piece = 5, 5 + NUM_WORDS
  for r, n in enumerate(lengths):
    if n < 2:
      ids[r, :n] = CLS
      seg[r, :n] = 1
      continue
    body = np.where(rng.random(n - 2) < piece_prob,
                    rng.integers(first_piece, first_piece + NUM_PIECES, n - 2),
                    rng.integers(first_word, first_piece, n - 2))
    ids[r, 0], ids[r, 1:n - 1], ids[r, n - 1] = CLS, body, SEP
    seg[r, :n] = 1
    if packed > 1 and n > 4 * packed:
      cuts = np.sort(rng.choice(np.arange(2, n - 2), packed - 1, replace=False))
      for doc, c in enumerate(cuts, start=2):
        ids[r, c] = SEP
        seg[r, c + 1:n] = doc
  return ids, seg


def _selected(out):
  """[B, S] bool of the positions chosen, from a MaskedBatch."""
  pos, w = np.asarray(out.positions), np.asarray(out.weights) > 0
  b, s = np.asarray(out.input_ids).shape
  sel = np.zeros((b, s), bool)
  rows = np.repeat(np.arange(b)[:, None], pos.shape[1], 1)
  sel[rows[w], pos[w]] = True
  return sel


def _expected_budget(ids, tables, rate, max_predictions, count_specials=False):
  """BERT/numpy reference: min(round(rate * n), n_eligible, P) per row (Python round)."""
  special = np.asarray(tables.is_special)[ids]
  n_eligible = (~special).sum(1)
  n = (ids != PAD).sum(1) if count_specials else n_eligible
  k = np.array([round(rate * float(x)) for x in n])
  return np.minimum(np.minimum(k, n_eligible), max_predictions), np.maximum(
      np.minimum(k, n_eligible) - max_predictions, 0)


@pytest.fixture(scope="session")
def make_ids():
  return _make_ids


@pytest.fixture(scope="session")
def selected():
  return _selected


@pytest.fixture(scope="session")
def expected_budget():
  return _expected_budget


def _intermediate_shapes(closed_jaxpr):
  """Set of every array shape produced anywhere in a (closed) jaxpr, sub-jaxprs included."""
  shapes = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      shapes.update(tuple(getattr(v.aval, "shape", ())) for v in eqn.outvars)
      for param in eqn.params.values():
        for sub in param if isinstance(param, (list, tuple)) else (param,):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            walk(inner)
  walk(closed_jaxpr.jaxpr)
  return shapes


@pytest.fixture(scope="session")
def intermediate_shapes():
  return _intermediate_shapes
