"""Tests of mlmjax.data.annotate, rules and spacy_annotator: rule entities and phrases,
sentences, token alignment, POS classes, spaCy pipelines (built here, installed as packages:
tests/data/spacy_fixture.py)."""

import importlib

import numpy as np
import pytest
import spacy
from spacy.tokens import Doc

from data import spacy_fixture
from helpers import split_arrays
from mlmjax.data import annotate
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import prepare as prepare_lib
from mlmjax.data import rules
from mlmjax.data import spacy_annotator
from mlmjax.data import token_tables
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.data import workers
from mlmjax.masking import tables

WORDS = tables.DEFAULT_FUNCTION_WORDS

TEXT = ("The Python Software Foundation was founded on March 6, 2001 in Delaware. Guido van "
        "Rossum wrote 3.5% of it, and 1,000 people met the Bank of England. In 1991 utf8 and "
        "x2 were not numbers.\n\nA new paragraph by Ada Lovelace on 2021-05-05.")


def _texts(text, spans):
  return [text[s:e] for s, e in spans]


def _entities(text):
  return _texts(text, rules.rule_entities(text, WORDS))


def test_rule_entities():
  # Names without a closed-class first word ("The", "In", "A"), single capitalised words
  # inside a sentence ("Delaware"), runs of two or more anywhere ("Guido van Rossum" starts a
  # sentence), numbers not glued to letters, dates in three forms.
  assert _entities(TEXT) == ["Python Software Foundation", "March 6, 2001", "Delaware",
                             "Guido van Rossum", "3.5%", "1,000", "Bank of England", "1991",
                             "Ada Lovelace", "2021-05-05"]
  assert _entities("Barack Obama was born in Hawaii.") == ["Barack Obama", "Hawaii"]
  assert _entities("The Bank of England raised rates.") == ["Bank of England"]
  assert _entities("Returns the value.") == []
  assert _entities("New York City is big.") == ["New York City"]
  assert _entities("no entities here at all.") == []


def test_rule_entities_at_sentence_starts():
  # A sentence's first word, alone, is no name, after an opening quote too; "I" and a
  # closed-class word are never names; inside a sentence one capitalised word is.
  assert _entities('It works. "Sorted lists are fast," I said. In Python it is.') == ["Python"]
  assert _entities("Use it. This Python module sorts.") == ["Python"]
  assert _entities("Sorting uses Timsort.\n\nLists sort in place.") == ["Timsort"]


def _phrases(text, entities=()):
  return _texts(text, rules.rule_phrases(text, WORDS, entities))


def test_rule_phrases():
  # Runs of content words joined by spaces, cut by closed-class words and punctuation.
  assert _phrases("The default encoding of the file system is platform dependent.") == [
      "default encoding", "file system", "platform dependent"]
  # At most four words a phrase, cut from the start; a last single word is no phrase.
  assert _phrases("one two three four five six seven eight nine") == [
      "one two three four", "five six seven eight"]
  assert _phrases("alpha beta gamma delta epsilon") == ["alpha beta gamma delta"]
  # Hyphens join a word; digits, apostrophes, dotted names and sentence ends break runs.
  assert _phrases("a well-known key function, utf8 codec error handler") == [
      "well-known key function", "codec error handler"]
  assert _phrases("don't stop now, call os.path join first") == ["stop now", "join first"]
  assert _phrases("It ends badly. Next words follow.") == ["ends badly", "Next words follow"]
  assert _phrases("one word") == ["one word"] and _phrases("single") == []


def test_rule_phrases_stay_clear_of_entities():
  text = "Barack Obama was born in sunny Hawaii near warm sandy beaches."
  entities = rules.rule_entities(text, WORDS)
  assert _texts(text, entities) == ["Barack Obama", "Hawaii"]
  # "Barack Obama" and "sunny Hawaii" overlap an entity: dropped whole, not trimmed.
  assert _phrases(text) == ["Barack Obama", "sunny Hawaii", "warm sandy beaches"]
  assert _phrases(text, entities) == ["warm sandy beaches"]
  assert rules.drop_overlapping([(0, 5), (5, 9), (10, 12)], [(4, 5), (12, 20)]) == [
      (5, 9), (10, 12)]


def test_sentence_starts():
  starts = rules.sentence_starts(TEXT)
  assert [TEXT[s:s + 9] for s in starts] == ["Guido van", "In 1991 u", "A new par"]
  assert rules.sentence_starts("Ends with a stop.") == []


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
  return token_tables.from_tokenizer(tok)


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


def test_tokenize_and_annotate_aligns_entities_to_tokens(tok):
  chunk = annotate.tokenize_and_annotate(tok, [TEXT, "Short one. Next one."], sentences=True,
                                         wanted=(annotate.ENTITY,), annotator=None,
                                         function_words=WORDS)
  assert chunk.lengths.tolist() == [len(tok.encode(t, add_special_tokens=False).ids)
                                    for t in (TEXT, "Short one. Next one.")]
  ent = chunk.fields[annotate.ENTITY][:chunk.lengths[0]]
  first = ent[ent > 0][0]
  span = np.array(tok.encode(TEXT, add_special_tokens=False).ids)[ent == first]
  assert tok.decode(span.tolist()) == "python software foundation"
  assert len(np.unique(ent[ent > 0])) == 10
  starts = np.flatnonzero(chunk.sentence_start)
  assert starts[0] == 0 and starts[-2] == chunk.lengths[0]  # each document starts one
  assert len(starts) == 4 + 2


@pytest.fixture(scope="module")
def spacy_pipeline(tmp_path_factory):
  """A real spaCy pipeline, built offline: entity ruler + attribute ruler setting POS."""
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
  train = split_arrays(tmp_path / "w" / "data", "train")
  ids, ent, pos = (train[f] for f in ("input_ids", "entity_ids", "pos_class"))
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
  assert again["annotator"] == rules.RULES


def test_spacy_pipeline_errors(tmp_path, spacy_pipeline):
  with pytest.raises(annotate.AnnotationError, match="neither an installed spaCy package"):
    spacy_annotator.resolve_annotator(str(tmp_path / "missing"))
  assert spacy_annotator.resolve_annotator("") == rules.RULES
  blank = tmp_path / "blank"
  spacy.blank("en").to_disk(blank)
  with pytest.raises(annotate.AnnotationError, match="finds no entities"):
    spacy_annotator.SpacyAnnotator(str(blank), (annotate.ENTITY,))
  with pytest.raises(annotate.AnnotationError, match="sets no part-of-speech tags"):
    spacy_annotator.SpacyAnnotator(str(blank), (annotate.POS,))
  entities_only = tmp_path / "entities_only"
  nlp = spacy.blank("en")
  nlp.add_pipe("entity_ruler").add_patterns([{"label": "ORG", "pattern": "Python"}])
  nlp.to_disk(entities_only)
  with pytest.raises(annotate.AnnotationError, match="finds no phrases"):
    spacy_annotator.SpacyAnnotator(str(entities_only), (annotate.PHRASE,))
  annotator = spacy_annotator.SpacyAnnotator(spacy_pipeline, (annotate.ENTITY, annotate.POS))
  out = annotator(["It was the Python Software Foundation."])[0]
  assert out["entity"] == [(11, 37)]
  assert out["classes"] == [1, 2, 2, 1, 1, 1, 0]


def test_tokenize_and_annotate_keeps_phrases_off_entity_tokens(tok):
  text = "Barack Obama was born in sunny Hawaii near warm sandy beaches."
  chunk = annotate.tokenize_and_annotate(tok, [text], sentences=False, annotator=None,
                                         wanted=(annotate.ENTITY, annotate.PHRASE),
                                         function_words=WORDS)
  ids = np.array(tok.encode(text, add_special_tokens=False).ids)
  ent, phrase = chunk.fields[annotate.ENTITY], chunk.fields[annotate.PHRASE]
  assert not ((ent > 0) & (phrase > 0)).any()
  assert [tok.decode(ids[phrase == k].tolist()) for k in np.unique(phrase[phrase > 0])] == [
      "warm sandy beaches"]
  # Phrases alone are the same: they keep clear of the entities all the same.
  alone = annotate.tokenize_and_annotate(tok, [text], sentences=False, annotator=None,
                                         wanted=(annotate.PHRASE,), function_words=WORDS)
  np.testing.assert_array_equal(alone.fields[annotate.PHRASE], phrase)
  # Character spans that meet in one token: the phrase is dropped whole.
  np.testing.assert_array_equal(
      annotate._drop_touching(np.array([1, 1, 2, 2, 0, 3]), np.array([0, 0, 0, 1, 1, 0])),
      [1, 1, 0, 0, 0, 3])


def _doc(words, pos, heads=None, deps=None):
  """A spaCy Doc with the given tags and, with `heads` (absolute) and `deps`, a parse."""
  return Doc(spacy.blank("en").vocab, words=words, pos=pos, heads=heads,
             deps=deps)


def _classes(doc):
  parsed = doc.has_annotation("DEP")
  return [spacy_annotator.spacy_word_class(t, parsed) for t in doc]


def test_parse_classes_follow_the_parse():
  doc = _doc("The cat chased the mouse .".split(), ["DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT"],
             [1, 2, 2, 4, 2, 2], ["det", "nsubj", "ROOT", "det", "dobj", "punct"])
  assert _classes(doc) == [2, 4, 3, 2, 4, 0]
  # The same words without the parse: classes from the tags.
  assert _classes(_doc([t.text for t in doc], [t.pos_ for t in doc])) == [2, 1, 1, 2, 1, 0]
  # A clausal complement and a verb conjoined to it are predicates; a pronoun subject is an
  # argument; a marker, a conjunction and an adverb keep their tags' classes.
  doc = _doc("He said that it ran and jumped quickly .".split(),
             ["PRON", "VERB", "SCONJ", "PRON", "VERB", "CCONJ", "VERB", "ADV", "PUNCT"],
             [1, 1, 4, 4, 1, 4, 4, 6, 1],
             ["nsubj", "ROOT", "mark", "nsubj", "ccomp", "cc", "conj", "advmod", "punct"])
  assert _classes(doc) == [4, 3, 2, 4, 3, 2, 3, 1, 0]
  # A verbless root is no predicate; a noun conjoined to a subject is no argument; the object
  # of a preposition and a copula's attribute: attr is an argument, pobj is not.
  doc = _doc("Cats and dogs are pets in houses".split(),
             ["NOUN", "CCONJ", "NOUN", "AUX", "NOUN", "ADP", "NOUN"],
             [3, 0, 0, 3, 3, 4, 5], ["nsubj", "cc", "conj", "ROOT", "attr", "prep", "pobj"])
  assert _classes(doc) == [4, 2, 1, 3, 4, 2, 1]
  doc = _doc(["Sorting", "functions"], ["NOUN", "NOUN"], [1, 1], ["compound", "ROOT"])
  assert _classes(doc) == [1, 1]


def test_phrases_from_a_parse_and_from_tags():
  words = "The old cat chased a small gray mouse in the garden .".split()
  pos = ["DET", "ADJ", "NOUN", "VERB", "DET", "ADJ", "ADJ", "NOUN", "ADP", "DET", "NOUN",
         "PUNCT"]
  doc = _doc(words, pos, [2, 2, 3, 3, 7, 7, 7, 3, 3, 10, 8, 3],
             ["det", "amod", "nsubj", "ROOT", "det", "amod", "amod", "dobj", "prep", "det",
              "pobj", "punct"])
  # Noun chunks without their determiner, of two words or more ("the garden" is one).
  assert [c.text for c in doc.noun_chunks] == ["The old cat", "a small gray mouse", "the garden"]
  chunks, runs = spacy_annotator.noun_chunk_phrases(doc), spacy_annotator.tagged_phrases(doc)
  assert _texts(doc.text, chunks) == _texts(doc.text, runs) == ["old cat", "small gray mouse"]
  # From tags: runs of ADJ/NOUN/PROPN/NUM ending in a noun.
  doc = _doc("3 big red apples fell from new tall green".split(),
             ["NUM", "ADJ", "ADJ", "NOUN", "VERB", "ADP", "ADJ", "ADJ", "ADJ"])
  assert _texts(doc.text, spacy_annotator.tagged_phrases(doc)) == ["3 big red apples"]


def test_auto_finds_any_installed_english_pipeline(tmp_path, monkeypatch, spacy_site):
  # "auto" sees only the packages a test installs (tests/conftest.py), whatever the machine has.
  assert spacy_annotator.resolve_annotator("auto") == rules.RULES
  root = tmp_path / "site-packages"
  toy = spacy_fixture.install_pipeline(root, monkeypatch, spacy_site, name="zz_toy")
  german = spacy_fixture.install_pipeline(root, monkeypatch, spacy_site, lang="de", name="toy")
  assert (toy, german) == ("en_zz_toy", "de_toy")
  assert spacy_annotator.installed_english_pipelines() == [toy]
  assert spacy_annotator.resolve_annotator("auto") == f"spacy:{toy}@0.0.0"
  # en_core_web_sm, md, lg, trf come first, in that order, then the others by name.
  preferred = spacy_fixture.install_pipeline(root, monkeypatch, spacy_site, name="core_web_md")
  assert spacy_annotator.installed_english_pipelines() == [preferred, toy]
  assert spacy_annotator.resolve_annotator("auto") == f"spacy:{preferred}@0.0.0"
  monkeypatch.setattr(spacy_annotator, "installed_english_pipelines", lambda: [])
  assert spacy_annotator.resolve_annotator("auto") == rules.RULES


def test_auto_prefers_the_documented_order(tmp_path, monkeypatch, spacy_site):
  """docs/DATA.md, "spaCy or rules": en_core_web_sm, then _md, _lg, _trf, then any other
  package whose meta.json says "lang": "en", by name; never another language's."""
  root = tmp_path / "site-packages"
  installed = [spacy_fixture.install_pipeline(root, monkeypatch, spacy_site, lang=lang,
                                              name=name, version=version)
               for lang, name, version in [
                   ("en", "zz_toy", "0.0.0"), ("en", "core_web_trf", "3.8.0"),
                   ("de", "core_news_sm", "3.8.0"), ("en", "core_web_lg", "3.8.0"),
                   ("en", "aa_toy", "0.0.0"), ("en", "core_web_sm", "3.8.1"),
                   ("de", "aa_toy", "0.0.0"), ("en", "core_web_md", "3.8.0")]]
  english = ["en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf",
             "en_aa_toy", "en_zz_toy"]
  assert sorted(installed) == sorted([*english, "de_core_news_sm", "de_aa_toy"])
  assert spacy_annotator.installed_english_pipelines() == english
  assert spacy_annotator.installed_english_pipelines(path=[str(root)]) == english
  assert spacy_annotator.resolve_annotator("auto") == "spacy:en_core_web_sm@3.8.1"
  # On sys.path (path=None, what "auto" reads outside the tests) the machine's pipelines come
  # too; this test's, first on sys.path, keep their order, and an en_core_web_sm is this one.
  found = spacy_annotator.installed_english_pipelines(path=None)
  assert [name for name in found if name in installed] == english
  assert found[0] == "en_core_web_sm" and spacy.util.get_package_version(found[0]) == "3.8.1"
  # Uninstalled one by one (pip's layout: the package and its .dist-info), the next one wins.
  removed = tmp_path / "uninstalled"
  removed.mkdir()
  for gone, best in zip(english, english[1:]):
    for path in root.glob(f"{gone}*"):
      path.rename(removed / path.name)
    importlib.invalidate_caches()
    assert spacy_annotator.installed_english_pipelines()[0] == best
    assert spacy_annotator.resolve_annotator("auto").startswith(f"spacy:{best}@")


def test_spacy_annotator_with_and_without_a_parse(tmp_path, monkeypatch, spacy_package):
  wanted = (annotate.ENTITY, annotate.PHRASE, annotate.POS)
  text = "The old cat chased a small gray mouse. Barack Obama was born in sunny Hawaii."
  out = spacy_annotator.SpacyAnnotator(spacy_package, wanted)([text])[0]
  assert _texts(text, out["entity"]) == ["Barack Obama", "Hawaii"]
  # Noun chunks; "Barack Obama" is one too, but an entity, and no phrase.
  assert _texts(text, out["phrase"]) == ["old cat", "small gray mouse"]
  assert out["classes"] == [2, 1, 4, 3, 2, 1, 1, 4, 0, 1, 4, 2, 3, 2, 1, 1, 0]
  tagger_only = spacy_fixture.install_pipeline(tmp_path / "other", monkeypatch, parser=False,
                                               name="toy_tagger")
  out = spacy_annotator.SpacyAnnotator(tagger_only, wanted)([text])[0]
  # Phrases from tag runs ("sunny Hawaii" touches an entity); classes from tags alone.
  assert _texts(text, out["phrase"]) == ["old cat", "small gray mouse"]
  assert out["classes"] == [2, 1, 1, 1, 2, 1, 1, 1, 0, 1, 1, 2, 1, 2, 1, 1, 0]


def _not_here(*args, **kwargs):
  raise AssertionError("tokenized in the main process")


def test_prepare_with_the_auto_pipeline(tmp_path, spacy_package, data_config, write_txt,
                                        make_documents, monkeypatch):
  docs = ["The old cat chased a small gray mouse in the garden.",
          "Barack Obama was born in Hawaii."] * 3 + make_documents(20)
  config = data_config(source="files", paths=write_txt(tmp_path / "c.txt", docs),
                       validation_fraction=0.5, seq_len=64, vocab_size=300,
                       packing="per_document", spacy_pipeline="auto", split_seed=1,
                       annotations=("entity_ids", "phrase_ids", "pos_class"), num_workers=2)
  # In spawned workers (both splits), which find the package on the sys.path they inherit.
  # They load the pipeline the parent resolved: one that resolved "auto" again, with the
  # machine's packages (conftest.py's "auto" is this process's only), would take this
  # en_core_web_sm on their sys.path, which fails to load.
  trap = spacy_fixture.install_pipeline(tmp_path / "elsewhere", monkeypatch, name="core_web_sm")
  (tmp_path / "elsewhere" / trap / "__init__.py").write_text(
      "def load(**overrides):\n"
      "  raise RuntimeError('a worker resolved data.spacy_pipeline=\"auto\" again')\n",
      encoding="utf-8")
  monkeypatch.setattr(workers, "CHUNK_DOCS", 4)
  monkeypatch.setattr(workers.ChunkTokenizer, "__call__", _not_here)
  manifest = prepare_lib.prepare(config, str(tmp_path / "w"))
  assert manifest["shards"]["workers_per_process"] == 2
  assert manifest["annotator"] == f"spacy:{spacy_package}@0.0.0"
  assert manifest["schema"]["phrase_ids"]["source"] == manifest["annotator"]
  splits = [split_arrays(tmp_path / "w" / "data", split) for split in manifest_lib.SPLITS]
  ids, ent, phrase, pos = (np.concatenate([arrays[f] for arrays in splits])
                           for f in ("input_ids", "entity_ids", "phrase_ids", "pos_class"))
  tok = tokenizer_lib.get_tokenizer(config, str(tmp_path / "w"))
  text = [tok.decode(row.tolist()) for row in ids]
  cat = text.index("the old cat chased a small gray mouse in the garden.")
  assert ent[cat].max() == 0 and phrase[cat].max() == 2
  assert [tok.decode(ids[cat][phrase[cat] == k].tolist()) for k in (1, 2)] == [
      "old cat", "small gray mouse"]
  words = [[]]
  for i, cls in zip(ids[cat][1:].tolist(), pos[cat][1:].tolist()):
    if not tok.id_to_token(i).startswith("##"):
      words.append([])
    words[-1].append(cls)
  classes = [w[0] for w in words[1:] if len(set(w)) == 1]
  assert classes[:12] == [2, 1, 4, 3, 2, 1, 1, 4, 2, 2, 1, 0]  # the, old, cat, chased, ...
  obama = text.index("barack obama was born in hawaii.")
  assert [tok.decode(ids[obama][ent[obama] == k].tolist()) for k in (1, 2)] == [
      "barack obama", "hawaii"]
  assert phrase[obama].max() == 0  # its noun chunks are entities
