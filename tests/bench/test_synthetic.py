"""Synthetic rows look like prepared data and carry what every strategy reads."""

import numpy as np

from bench import synthetic
from mlmjax.data import annotate, token_tables


def test_synthetic_rows_look_like_packed_data():
  tok = synthetic.synthetic_tokenizer(300)
  tables = synthetic.synthetic_tables(tok)
  assert tables.vocab_size == 300 and tables.pad_id == synthetic.PAD
  rows = synthetic.synthetic_rows(tok, 6, 40, seed=1, pad_fraction=0.2)
  ids, seg = rows["input_ids"], rows["segment_ids"]
  assert ids.shape == seg.shape == rows["entity_ids"].shape == (6, 40)
  assert np.all(ids[:, 0] == synthetic.CLS)
  lengths = (ids != synthetic.PAD).sum(1)
  assert lengths.min() < 40  # some rows are padded
  for r, n in enumerate(lengths):
    assert np.all(ids[r, n:] == synthetic.PAD) and ids[r, n - 1] == synthetic.SEP
    assert set(np.unique(seg[r, :n])) == {1, 2} and np.all(seg[r, n:] == 0)
    for field in ("entity_ids", "phrase_ids", "ngram_ids"):
      spans = rows[field][r]
      assert set(np.unique(spans[spans > 0])) == set(range(1, spans.max() + 1))  # 1..k
  special = np.asarray(tables.is_special)[ids]
  assert np.all(rows["entity_ids"][special] == 0) and np.all(rows["pos_class"][special] == 0)
  assert not np.any((rows["entity_ids"] > 0) & (rows["phrase_ids"] > 0))  # phrases off entities
  full = synthetic.synthetic_rows(tok, 3, 20)
  assert np.all(full["input_ids"] != synthetic.PAD)


def test_part_of_speech_as_preparation_makes_it():
  """The vocabulary fallback of `prepare` on the rows: function words, content words, none."""
  tok = synthetic.synthetic_tokenizer(300)
  rows = synthetic.synthetic_rows(tok, 4, 64, seed=2)
  pos = rows["pos_class"]
  assert np.array_equal(pos, annotate.vocab_pos_classes(rows["input_ids"],
                                                        token_tables.from_tokenizer(tok)))
  assert {annotate.POS_UNKNOWN, annotate.POS_CONTENT, annotate.POS_FUNCTION} == set(
      np.unique(pos).tolist())
