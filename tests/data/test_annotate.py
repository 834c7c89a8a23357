"""Tests of mlmjax.data.annotate: rule entities, sentences, token alignment, POS classes, spaCy."""

import numpy as np
import pytest

from mlmjax.data import annotate
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import tokenizer as tokenizer_lib

TEXT = ("The Python Software Foundation was founded on March 6, 2001 in Delaware. Guido van "
        "Rossum wrote 3.5% of it, and 1,000 people met the Bank of England. In 1991 utf8 and "
        "x2 were not numbers.\n\nA new paragraph by Ada Lovelace on 2021-05-05.")


def _texts(text, spans):
  return [text[s:e] for s, e in spans]


def test_rule_entities():
  found = _texts(TEXT, annotate.rule_entities(TEXT))
  # Names not at a sentence start ("Guido van Rossum" starts one and loses "Guido", leaving a
  # single word), numbers not glued to letters, dates in three forms.
  assert found == ["Python Software Foundation", "March 6, 2001", "3.5%", "1,000",
                   "Bank of England", "1991", "Ada Lovelace", "2021-05-05"]
  assert annotate.rule_entities("New York City is big.") == [(4, 13)]  # "York City"
  assert annotate.rule_entities("no entities here at all.") == []


def test_sentence_starts():
  starts = annotate.sentence_starts(TEXT)
  assert [TEXT[s:s + 9] for s in starts] == ["Guido van", "In 1991 u", "A new par"]
  assert annotate.sentence_starts("Ends with a stop.") == []


def test_spans_to_tokens_and_words_to_tokens():
  # Tokens: [0,3) [3,5) [6,9) [10,12) [12,14) [15,20)
  starts = np.array([0, 3, 6, 10, 12, 15])
  ends = np.array([3, 5, 9, 12, 14, 20])
  spans = np.array([[1, 4], [4, 7], [9, 10], [12, 20]])  # the second overlaps the first's tokens
  np.testing.assert_array_equal(annotate.spans_to_tokens(spans, starts, ends),
                                [1, 1, 2, 0, 3, 3])
  words = np.array([[0, 5], [6, 14], [15, 20]])
  classes = np.array([2, 1, 0], np.int8)
  np.testing.assert_array_equal(annotate.words_to_tokens(words, classes, starts, ends),
                                [2, 2, 1, 1, 1, 0])


@pytest.fixture(scope="module")
def tok(make_documents):
  docs = make_documents(60) + [TEXT] * 3
  return tokenizer_lib.train_tokenizer(docs, vocab_size=300, lowercase=True)


def _tables(tok):
  return prepare_lib.token_tables(tok)


def test_vocab_pos_classes_share_a_class_per_word(tok):
  tables = _tables(tok)
  text = "the foundation of sequencing , and it"
  ids = [2] + tok.encode(text, add_special_tokens=False).ids + [3]
  pos = annotate.vocab_pos_classes(np.array([ids]), tables)[0]
  pieces = [tok.id_to_token(i) for i in ids]
  by_word = []
  for piece, cls in zip(pieces, pos.tolist()):
    if not piece.startswith("##"):
      by_word.append([])
    by_word[-1].append(cls)
  assert all(len(set(w)) == 1 for w in by_word)  # tokens of a word share its class
  assert [w[0] for w in by_word] == [0, 2, 1, 2, 1, 0, 2, 2, 0]  # [CLS] ... [SEP]
  assert pos.dtype == np.int8


def test_encode_chunk_aligns_entities_to_tokens(tok):
  chunk = annotate.encode_chunk(tok, [TEXT, "Short one. Next one."], sentences=True,
                                wanted=(annotate.ENTITY,), annotator=None)
  assert chunk.lengths.tolist() == [len(tok.encode(t, add_special_tokens=False).ids)
                                    for t in (TEXT, "Short one. Next one.")]
  ent = chunk.fields[annotate.ENTITY][:chunk.lengths[0]]
  first = ent[ent > 0][0]
  span = np.array(tok.encode(TEXT, add_special_tokens=False).ids)[ent == first]
  assert tok.decode(span.tolist()) == "python software foundation"
  assert len(np.unique(ent[ent > 0])) == 8
  starts = np.flatnonzero(chunk.sentence_start)
  assert starts[0] == 0 and starts[-2] == chunk.lengths[0]  # each document starts one
  assert len(starts) == 4 + 2


@pytest.fixture(scope="module")
def spacy_pipeline(tmp_path_factory):
  """A real spaCy pipeline, built offline: entity ruler + attribute ruler setting POS."""
  import spacy  # pylint: disable=g-import-not-at-top  (the test extra has it)
  nlp = spacy.blank("en")
  ruler = nlp.add_pipe("entity_ruler")
  ruler.add_patterns([{"label": "ORG", "pattern": "Python Software Foundation"},
                      {"label": "GPE", "pattern": [{"LOWER": "delaware"}]}])
  attributes = nlp.add_pipe("attribute_ruler")
  attributes.add(patterns=[[{"IS_ALPHA": True}]], attrs={"POS": "NOUN"})
  attributes.add(patterns=[[{"LOWER": {"IN": ["the", "on", "in", "of", "was"]}}]],
                 attrs={"POS": "ADP"})
  attributes.add(patterns=[[{"IS_PUNCT": True}]], attrs={"POS": "PUNCT"})
  path = tmp_path_factory.mktemp("spacy") / "pipeline"
  nlp.to_disk(path)
  return str(path)


def test_spacy_annotations_in_prepared_rows(tmp_path, spacy_pipeline, data_config, write_txt,
                                            make_documents):
  docs = [TEXT] + make_documents(20)
  config = data_config(source="files", paths=write_txt(tmp_path / "c.txt", docs),
                       validation_fraction=0.05, seq_len=64, vocab_size=300,
                       annotations=("entity_ids", "pos_class"), spacy_pipeline=spacy_pipeline,
                       split_seed=1)
  manifest = prepare_lib.prepare(config, str(tmp_path / "w"))
  assert manifest["annotator"].startswith("spacy:")
  assert manifest["schema"]["entity_ids"]["source"] == manifest["annotator"]
  data = tmp_path / "w" / "data"
  ids, ent, pos = (np.load(data / f"train{s}.npy")
                   for s in ("", "_entity_ids", "_pos_class"))
  tok = tokenizer_lib.get_tokenizer(config, str(tmp_path / "w"))
  row = next(r for r in range(len(ids)) if ent[r].max() > 0)
  spans = [tok.decode(ids[row][ent[row] == k].tolist()) for k in range(1, ent[row].max() + 1)]
  assert spans == ["python software foundation", "delaware"]  # the ruler's, not the rules'
  found = [tok.id_to_token(i) for i in ids[row][:12]]
  assert found[:3] == ["[CLS]", "the", "python"]
  assert pos[row][:3].tolist() == [0, 2, 1]  # special, ADP -> function, NOUN -> content
  assert pos.dtype == np.int8 and set(np.unique(pos)) <= {0, 1, 2}
  # A changed annotator makes the prepared data stale.
  config.spacy_pipeline = ""
  again = prepare_lib.prepare(config, str(tmp_path / "w"))
  assert again["annotator"] == annotate.RULES


def test_spacy_pipeline_errors(tmp_path, spacy_pipeline):
  with pytest.raises(annotate.AnnotationError, match="neither an installed spaCy package"):
    annotate.resolve_annotator(str(tmp_path / "missing"))
  assert annotate.resolve_annotator("") == annotate.RULES
  import spacy  # pylint: disable=g-import-not-at-top  (the test extra has it)
  blank = tmp_path / "blank"
  spacy.blank("en").to_disk(blank)
  with pytest.raises(annotate.AnnotationError, match="finds no entities"):
    annotate.SpacyAnnotator(str(blank), (annotate.ENTITY,))
  with pytest.raises(annotate.AnnotationError, match="sets no part-of-speech tags"):
    annotate.SpacyAnnotator(str(blank), (annotate.POS,))
  annotator = annotate.SpacyAnnotator(spacy_pipeline, (annotate.ENTITY, annotate.POS))
  out = annotator(["It was the Python Software Foundation."])[0]
  assert out["entity"] == [(11, 37)]
  assert out["classes"] == [1, 2, 2, 1, 1, 1, 0]
