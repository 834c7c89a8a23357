"""Entities, phrases and syntax classes from a spaCy pipeline (`data.spacy_pipeline`).

Any installed pipeline: a package name, a folder, or "auto", the best installed English
pipeline package. Entities from its `ner` / `entity_ruler`. Phrases: with a parse, its noun
chunks without a leading determiner or pronoun; with POS tags only, maximal runs of
ADJ/NOUN/PROPN/NUM ending in a NOUN or PROPN. Classes from the universal POS tags its tagger,
morphologizer or attribute_ruler sets, refined by the parse when a component sets one (see
`spacy_word_class`).

spaCy is optional: it is imported (`_spacy`) only when a pipeline is resolved or loaded.
Sentences are found by rule whichever annotator is used (rules.py); the annotations' names and
values, and their alignment to tokens, are annotate.py's.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Sequence

from mlmjax.data import rules
from mlmjax.data.annotate import (ENTITY, PHRASE, POS, POS_ARGUMENT, POS_CONTENT, POS_FUNCTION,
                                  POS_PREDICATE, POS_UNKNOWN, AnnotationError)

# What data.spacy_pipeline="auto" prefers among the installed English pipelines; any other
# English pipeline comes after these, by name.
PREFERRED_SPACY_PACKAGES = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg",
                            "en_core_web_trf")

# Universal POS tags (spaCy's `token.pos_`) by class; PUNCT, SYM, X, SPACE stay unknown (0).
CONTENT_TAGS = frozenset({"NOUN", "PROPN", "VERB", "ADJ", "ADV", "NUM", "INTJ"})
FUNCTION_TAGS = frozenset({"ADP", "AUX", "CCONJ", "DET", "PART", "PRON", "SCONJ"})
# Phrases from tags alone: runs of these tags that end in a noun.
PHRASE_TAGS = frozenset({"ADJ", "NOUN", "PROPN", "NUM"})
PHRASE_HEAD_TAGS = frozenset({"NOUN", "PROPN"})
# Dependency labels (spaCy's English ClearNLP labels, and their Universal Dependencies forms)
# of a clause's head: a predicate when the word is a verb or an auxiliary.
PREDICATE_DEPS = frozenset({"ROOT", "ccomp", "xcomp", "advcl", "relcl", "acl", "acl:relcl",
                            "csubj", "csubjpass", "csubj:pass", "parataxis"})
# Subjects and objects: the head word of a core argument (its modifiers keep their own class).
ARGUMENT_DEPS = frozenset({"nsubj", "nsubjpass", "nsubj:pass", "dobj", "obj", "iobj",
                           "dative", "attr", "oprd"})
VERBAL_TAGS = frozenset({"VERB", "AUX"})


def _spacy():
  try:
    import spacy  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise AnnotationError("data.spacy_pipeline names a spaCy pipeline, but spaCy is not "
                          "installed: pip install 'mlmjax[spacy]', or set "
                          "data.spacy_pipeline='' for the rule-based annotations.") from e
  return spacy


def _package_meta(module: str, path: Sequence[str] | None = None) -> dict | None:
  """meta.json of an installed pipeline package (a top-level one in the folders `path`, else
  on sys.path), read without importing the package."""
  try:
    spec = (importlib.util.find_spec(module) if path is None else
            importlib.machinery.PathFinder.find_spec(module, list(path)))
  except (ImportError, ValueError):
    return None
  locations = (spec and spec.submodule_search_locations) or []
  for folder in locations:
    path = os.path.join(folder, "meta.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        return json.load(f)
  return None


def _preference(name: str) -> tuple[int, str]:
  known = PREFERRED_SPACY_PACKAGES
  return (known.index(name) if name in known else len(known), name)


def installed_english_pipelines(path: Sequence[str] | None = None) -> list[str]:
  """Installed spaCy pipeline packages whose language is English, best first.

  Best: PREFERRED_SPACY_PACKAGES in that order, then the others by name. Packages are found
  by their "spacy_models" entry points (what `spacy.util.get_installed_models` lists) and
  their meta.json, read afresh and without importing them: `get_installed_models` imports
  every pipeline package (a transformer pipeline pulls in torch) and reads entry points that
  were cached when spaCy was first imported, so it misses a package installed since.
  `path`: the folders to look in (site-packages folders), sys.path when None.
  """
  if path is None:
    entry_points = importlib.metadata.entry_points(group="spacy_models")
  else:
    entry_points = [e for dist in importlib.metadata.distributions(path=list(path))
                    for e in dist.entry_points if e.group == "spacy_models"]
  names = set()
  for entry_point in entry_points:
    meta = _package_meta(entry_point.module, path)
    if meta is not None and meta.get("lang") == "en":
      names.add(entry_point.name)
  return sorted(names, key=_preference)


def resolve_annotator(spacy_pipeline: str) -> str:
  """The annotator `data.spacy_pipeline` selects: "rules-vN" or "spacy:<name or path>@<id>".

  "" selects the rules; "auto" selects the best installed English pipeline package
  (`installed_english_pipelines`) when spaCy is installed, else the rules; any other value
  must name an installed pipeline package or a pipeline folder (`nlp.to_disk`). The part after
  "@" identifies the pipeline's version, so a changed pipeline makes prepared data stale.
  """
  if not spacy_pipeline:
    return rules.RULES
  if spacy_pipeline == "auto":
    try:
      _spacy()
    except AnnotationError:
      return rules.RULES
    english = installed_english_pipelines()
    if not english:
      return rules.RULES
    spacy_pipeline = english[0]
  spacy = _spacy()
  if os.path.isdir(spacy_pipeline):
    meta_path = os.path.join(spacy_pipeline, "meta.json")
    if not os.path.exists(meta_path):
      raise AnnotationError(f"data.spacy_pipeline={spacy_pipeline!r} is a folder without "
                            "meta.json; save a pipeline there with nlp.to_disk().")
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    version = f"{meta.get('version', '?')}-{os.stat(meta_path).st_mtime_ns}"
    return f"spacy:{os.path.abspath(spacy_pipeline)}@{version}"
  if spacy.util.is_package(spacy_pipeline):
    return f"spacy:{spacy_pipeline}@{spacy.util.get_package_version(spacy_pipeline)}"
  raise AnnotationError(f"data.spacy_pipeline={spacy_pipeline!r} is neither an installed "
                        "spaCy package nor a pipeline folder; install it (pip), give a folder "
                        "written by nlp.to_disk(), or set '' for the rule-based annotations.")


def _char_span(tokens) -> tuple[int, int]:
  return tokens[0].idx, tokens[-1].idx + len(tokens[-1].text)


def noun_chunk_phrases(doc) -> list[tuple[int, int]]:
  """Character spans of a parsed doc's noun chunks of two words or more.

  A leading determiner or pronoun is neither counted nor included ("the old car" gives "old
  car", "my car" nothing): it is no part of what a phrase-level mask should hide.
  """
  spans = []
  for chunk in doc.noun_chunks:
    tokens = list(chunk)
    while tokens and tokens[0].pos_ in ("DET", "PRON"):
      tokens.pop(0)
    if sum(not (t.is_punct or t.is_space) for t in tokens) >= 2:
      spans.append(_char_span(tokens))
  return spans


def tagged_phrases(doc) -> list[tuple[int, int]]:
  """Character spans of the phrases a tagger alone can find, in a doc without a parse.

  Maximal runs of PHRASE_TAGS tokens cut back to end in a PHRASE_HEAD_TAGS token, two tokens
  or more: a noun with its adjective, number and noun modifiers ("3 big red apples").
  """
  spans, run = [], []
  for token in [*doc, None]:
    if token is not None and token.pos_ in PHRASE_TAGS:
      run.append(token)
      continue
    while run and run[-1].pos_ not in PHRASE_HEAD_TAGS:
      run.pop()
    if len(run) >= 2:
      spans.append(_char_span(run))
    run = []
  return spans


def tag_class(token) -> int:
  """The class of a word by its universal POS tag: 1 content, 2 function, 0 otherwise."""
  return (POS_CONTENT if token.pos_ in CONTENT_TAGS else
          POS_FUNCTION if token.pos_ in FUNCTION_TAGS else POS_UNKNOWN)


def is_predicate(token) -> bool:
  """Whether a parsed token is a predicate: a verb or auxiliary that heads a clause.

  Its dependency is in PREDICATE_DEPS, or it is conjoined to a predicate ("ran and jumped").
  A verbless root (a title, "Built-in Functions") is no predicate: it keeps its tag's class.
  Without POS tags, any clause head is a predicate.
  """
  if token.pos_ and token.pos_ not in VERBAL_TAGS:
    return False
  if token.dep_ == "conj":
    return token.head.i != token.i and is_predicate(token.head)
  return token.dep_ in PREDICATE_DEPS


def spacy_word_class(token, parsed: bool) -> int:
  """The pos_class of a spaCy token: from the parse, if any, then from its POS tag.

  With a parse, predicates are 3 (`is_predicate`) and core arguments 4; every other word, and
  every word without a parse, has its tag's class (`tag_class`). A core argument is the head
  word of a subject or object (ARGUMENT_DEPS), whatever its tag: a pronoun subject is an
  argument. Determiners, modifiers and prepositional objects keep their tag's class.
  """
  if parsed and is_predicate(token):
    return POS_PREDICATE
  if parsed and token.dep_ in ARGUMENT_DEPS:
    return POS_ARGUMENT
  return tag_class(token)


# Run once when a pipeline loads, to see which annotations its components set.
_PROBE = "The old cat chased a small mouse in the garden."


class SpacyAnnotator:
  """Entities, phrases and POS classes from a spaCy pipeline; loaded once per worker process."""

  def __init__(self, name_or_path: str, wanted: Sequence[str]):
    spacy = _spacy()
    self.nlp = spacy.load(name_or_path)
    factories = set(self.nlp.pipe_factories.values())
    probe = self.nlp(_PROBE)
    tagged, parsed = probe.has_annotation("POS"), probe.has_annotation("DEP")
    if ENTITY in wanted and not factories & {"ner", "entity_ruler", "beam_ner"}:
      raise AnnotationError(f"The spaCy pipeline {name_or_path!r} finds no entities (its "
                            f"components: {self.nlp.pipe_names}); add an 'ner' or "
                            "'entity_ruler', or drop entity_ids from data.annotations.")
    if POS in wanted and not tagged:
      raise AnnotationError(f"The spaCy pipeline {name_or_path!r} sets no part-of-speech tags "
                            f"(its components: {self.nlp.pipe_names}); add a 'tagger' with an "
                            "'attribute_ruler', or a 'morphologizer'.")
    if PHRASE in wanted and not (tagged or parsed):
      raise AnnotationError(f"The spaCy pipeline {name_or_path!r} finds no phrases: it sets "
                            f"neither a parse nor part-of-speech tags (its components: "
                            f"{self.nlp.pipe_names}); add a 'parser', or a 'tagger' with an "
                            "'attribute_ruler', or drop phrase_ids from data.annotations.")
    self.wanted = tuple(wanted)

  def annotate(self, doc) -> dict:
    """{"entity": [(start, end)], "phrase": [(start, end)], "words": [(start, end)],
    "classes": [int]}: what `wanted` asks for (entities for phrases too), as character spans
    of `doc.text`; words are the doc's tokens but whitespace, each with its class."""
    item = {}
    parsed = doc.has_annotation("DEP")
    entities = [(e.start_char, e.end_char) for e in doc.ents]
    if ENTITY in self.wanted or PHRASE in self.wanted:
      item["entity"] = entities
    if PHRASE in self.wanted:
      phrases = noun_chunk_phrases(doc) if parsed else tagged_phrases(doc)
      item["phrase"] = rules.drop_overlapping(phrases, entities)
    if POS in self.wanted:
      words = [t for t in doc if not t.is_space]
      item["words"] = [(t.idx, t.idx + len(t.text)) for t in words]
      item["classes"] = [spacy_word_class(t, parsed) for t in words]
    return item

  def __call__(self, texts: Sequence[str]) -> list[dict]:
    """Per text, `annotate` of its doc."""
    # A document longer than spaCy's default limit (1M characters) is still one document.
    self.nlp.max_length = max([self.nlp.max_length, *(len(t) + 1 for t in texts)])
    return [self.annotate(doc) for doc in self.nlp.pipe(texts, batch_size=64)]
