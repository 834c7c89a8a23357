"""Small English spaCy pipelines installed as packages, for tests (no trained one can be had).

`install_pipeline(root, monkeypatch)` writes a pipeline package under `root` the way pip lays
one out: `name/__init__.py` whose `load()` calls `spacy.util.load_model_from_init_py`,
`name/meta.json`, the pipeline in `name/<lang>_<meta name>-<version>/`, and
`name-<version>.dist-info` with METADATA and a "spacy_models" entry point. It then puts `root`
on sys.path, so that `spacy.load(name)` and `spacy.util.is_package(name)` find it, and, given
`site` (the `spacy_site` fixture: tests/conftest.py), adds `root` to the folders where
`data.spacy_pipeline="auto"` looks, which are only the tests' own. A subprocess finds it with
`root` on PYTHONPATH, by its name: its "auto" would see the machine's pipelines too.

The pipeline (`english_pipeline`): `toy_parser` sets universal POS tags from a small lexicon
and, optionally, a dependency parse with spaCy's English labels, made by a few rules that are
right for plain sentences ("The old cat chased a small gray mouse in the garden."); then an
`entity_ruler` with ENTITY_PATTERNS. This file is copied into the package as its `components`
module, so the component is registered wherever the package is loaded (spawned workers too).
"""

import importlib
import json
import pathlib
import shutil

import spacy
from spacy.language import Language

PARSER = "mlmjax_toy_parser"
TAGGER = "mlmjax_toy_tagger"
ENTITY_PATTERNS = (
    {"label": "PERSON", "pattern": "Barack Obama"},
    {"label": "GPE", "pattern": "Hawaii"},
    {"label": "ORG", "pattern": "Python Software Foundation"},
    {"label": "GPE", "pattern": [{"LOWER": "delaware"}]},
)
LEXICON = {
    **dict.fromkeys("the a an this that these those every each some no".split(), "DET"),
    **dict.fromkeys("i you he she it we they me him her us them".split(), "PRON"),
    **dict.fromkeys("his its their my our your".split(), "DET"),
    **dict.fromkeys("in on at of to from with by for into over under".split(), "ADP"),
    **dict.fromkeys("is are was were be been has have had will can may".split(), "AUX"),
    **dict.fromkeys("and or but".split(), "CCONJ"),
    **dict.fromkeys("that because if while when".split(), "SCONJ"),
    **dict.fromkeys("not".split(), "PART"),
    **dict.fromkeys("very quickly often never".split(), "ADV"),
    **dict.fromkeys(("old small gray big new red quick lazy brown happy sorted default "
                     "large fast").split(), "ADJ"),
    **dict.fromkeys(("chased ate saw born raised returns reads wrote sleeps sat ran jumped "
                     "said found sorts made gave met").split(), "VERB"),
}
NOMINAL = frozenset({"NOUN", "PROPN", "PRON"})
PREMODIFIER_DEPS = {"DET": "det", "ADJ": "amod", "NUM": "nummod", "NOUN": "compound",
                    "PROPN": "compound"}


def _tag(token, sentence_first: bool) -> str:
  if token.lower_ in LEXICON:
    return LEXICON[token.lower_]
  if token.is_space:
    return "SPACE"
  if token.is_punct:
    return "PUNCT"
  if token.like_num:
    return "NUM"
  return "PROPN" if token.is_title and not sentence_first else "NOUN"


def _sentences(doc) -> list[list]:
  sentences, current = [], []
  for token in doc:
    current.append(token)
    if token.text in (".", "!", "?"):
      sentences.append(current)
      current = []
  return sentences + ([current] if current else [])


def _noun_phrases(tokens) -> list[tuple[int, int]]:
  """[start, head] positions in `tokens` of maximal DET/ADJ/NUM/NOUN/PROPN runs ending in a
  noun, and of lone pronouns."""
  phrases, start = [], None
  for k, token in enumerate([*tokens, None]):
    if token is not None and token.pos_ in PREMODIFIER_DEPS:
      start = k if start is None else start
      continue
    if start is not None:
      head = max((i for i in range(start, k) if tokens[i].pos_ in NOMINAL), default=None)
      if head is not None:
        phrases.append((start, head))
      start = None
    if token is not None and token.pos_ == "PRON":
      phrases.append((k, k))
  return phrases


def _attach(token, head, dep: str) -> None:
  token.head, token.dep_ = head, dep


def _governor(tokens, k: int, root):
  """The verb that a word at position k depends on: the last verb before it, else the root."""
  return next((t for t in reversed(tokens[:k]) if t.pos_ == "VERB"), root)


_SIMPLE_DEPS = {"AUX": "aux", "ADP": "prep", "CCONJ": "cc", "ADV": "advmod", "PUNCT": "punct",
                "ADJ": "acomp"}


def _parse(tokens) -> None:
  """A dependency parse of one plain sentence with spaCy's English labels (see the module
  docstring): the first verb (else auxiliary, else noun) is the ROOT; noun phrases before it
  are subjects, after a verb objects (attributes after a copula), after a preposition its
  objects; a verb after "and" is a conjunct."""
  verbs = [t for t in tokens if t.pos_ == "VERB"] or [t for t in tokens if t.pos_ == "AUX"]
  root = (verbs or [t for t in tokens if t.pos_ in NOMINAL] or tokens)[0]
  for k, token in enumerate(tokens):
    before = tokens[k - 1] if k else None
    if token.pos_ == "VERB":
      dep = "conj" if before is not None and before.pos_ == "CCONJ" else "advcl"
      _attach(token, _governor(tokens, k, root), dep)
    else:
      _attach(token, _governor(tokens, k, root), _SIMPLE_DEPS.get(token.pos_, "dep"))
  _attach(root, root, "ROOT")
  for start, head in _noun_phrases(tokens):
    for k in range(start, head):
      _attach(tokens[k], tokens[head], PREMODIFIER_DEPS[tokens[k].pos_])
    if tokens[head] is root:
      continue
    before = tokens[start - 1] if start else None
    governor = _governor(tokens, start, root)
    if before is not None and before.pos_ == "ADP":
      _attach(tokens[head], before, "pobj")
    elif tokens.index(tokens[head]) < tokens.index(root):
      _attach(tokens[head], root, "nsubj")
    else:
      _attach(tokens[head], governor, "attr" if governor.pos_ == "AUX" else "dobj")


def toy_tagger(doc):
  """Universal POS tags from LEXICON (else punctuation, number, proper or common noun)."""
  for sentence in _sentences(doc):
    for k, token in enumerate(sentence):
      token.pos_ = _tag(token, k == 0)
  return doc


def toy_parser(doc):
  """`toy_tagger`, then a dependency parse of each sentence (`_parse`)."""
  toy_tagger(doc)
  for sentence in _sentences(doc):
    _parse(sentence)
  return doc


# Registered once per process, whichever copy of this file is imported first.
for _name, _component in ((TAGGER, toy_tagger), (PARSER, toy_parser)):
  if not Language.has_factory(_name):
    Language.component(_name, func=_component)


def english_pipeline(parser: bool = True, entities: bool = True, lang: str = "en",
                     name: str = "mlmjax_toy", version: str = "0.0.0") -> Language:
  """A blank pipeline with `toy_parser` (or only `toy_tagger`) and an entity ruler."""
  nlp = spacy.blank(lang)
  nlp.add_pipe(PARSER if parser else TAGGER)
  if entities:
    nlp.add_pipe("entity_ruler").add_patterns(list(ENTITY_PATTERNS))
  nlp.meta.update(name=name, version=version)
  return nlp


def write_package(nlp: Language, root: pathlib.Path) -> str:
  """Writes `nlp` as an installed package under `root` (see the module docstring)."""
  meta = nlp.meta
  package = f"{meta['lang']}_{meta['name']}"
  folder = pathlib.Path(root) / package
  folder.mkdir(parents=True)
  nlp.to_disk(folder / f"{package}-{meta['version']}")
  (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
  shutil.copyfile(__file__, folder / "components.py")
  (folder / "__init__.py").write_text(
      "from spacy.util import load_model_from_init_py\n"
      "from . import components  # registers the pipeline's components\n\n\n"
      "def load(**overrides):\n"
      "  return load_model_from_init_py(__file__, **overrides)\n", encoding="utf-8")
  info = pathlib.Path(root) / f"{package}-{meta['version']}.dist-info"
  info.mkdir(parents=True, exist_ok=True)
  (info / "METADATA").write_text(
      f"Metadata-Version: 2.1\nName: {package}\nVersion: {meta['version']}\n", encoding="utf-8")
  (info / "entry_points.txt").write_text(f"[spacy_models]\n{package} = {package}\n",
                                         encoding="utf-8")
  return package


def install_pipeline(root: pathlib.Path, monkeypatch, site: list | None = None,
                     **pipeline) -> str:
  """Writes `english_pipeline(**pipeline)` as a package under `root`, puts `root` on sys.path
  for the test (`monkeypatch`) and in `site` (where "auto" looks), and returns the package
  name."""
  package = write_package(english_pipeline(**pipeline), root)
  monkeypatch.syspath_prepend(str(root))
  if site is not None and str(root) not in site:
    site.append(str(root))
  importlib.invalidate_caches()
  return package
