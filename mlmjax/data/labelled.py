"""Word-labelled sentences a user points to (gold labels for the comparison's probes).

Three kinds of input, each giving some of the label columns `upos`, `deprel` and `ner`:

  *.conllu            Universal Dependencies CoNLL-U: `upos` (column 4) and `deprel` (column 8,
                      without its subtype: `nsubj:pass` -> `nsubj`); multiword-token ranges and
                      empty nodes are skipped, as UD's own evaluation does.
  any other file      CoNLL-2003-style columns: one word per line, its first field the word and
                      its last the entity tag (`O`, `B-PER`, `I-LOC`, ...; IOB1, IOB2, BIOES);
                      blank lines end sentences, `-DOCSTART-` lines are skipped. Gives `ner`.
  a folder            a Hugging Face dataset saved with `save_to_disk` (its validation split,
                      else test, else train): `tokens` and any of `upos`, `deprel`, `ner_tags`
                      (class ids are read as their names).
  tfds:NAME[:SPLIT]   a TFDS dataset prepared as ArrayRecord in `data_dir` (e.g. conll2003;
                      split default validation): `tokens` and any of `upos`, `deprel`, `ner`,
                      `ner_tags` (class ids read as their names).

`ner` labels are entity types: the B-/I-/E-/S- prefix is dropped, so a probe tells PER from ORG
from outside, word by word. `rows_with_labels` turns sentences into model rows with each word's
label on its first token, through the run's own tokenizer.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tokenizers

from mlmjax.data import sources
from mlmjax.data import tokenizer as tokenizer_lib

COLUMNS = ("upos", "deprel", "ner")
OUTSIDE = "O"  # the `ner` label of a word in no entity; label id 0 of `ner`
_TAG_PREFIXES = ("B-", "I-", "E-", "S-")
# Label columns of HF and TFDS datasets -> our names.
_DATASET_COLUMNS = {"upos": "upos", "deprel": "deprel", "ner_tags": "ner", "ner": "ner"}
TFDS_PREFIX = "tfds:"


class LabelledFileError(ValueError):
  """A labelled file cannot be read; the message names the format expected."""


@dataclasses.dataclass(frozen=True)
class Sentences:
  """Sentences of words and, per label column, one label per word."""
  words: list[list[str]]
  labels: dict[str, list[list[str]]]


@dataclasses.dataclass(frozen=True)
class LabelledRows:
  """Model rows of labelled sentences: `labels` holds a label id on each word's first token and
  -1 elsewhere; `names[i]` is label id i (`O` is 0 for `ner`)."""
  input_ids: np.ndarray  # [N, S] int32
  labels: np.ndarray  # [N, S] int64
  names: tuple[str, ...]


def read(path: str, tfds_data_dir: str = "") -> Sentences:
  """The sentences of one labelled file, dataset folder or TFDS dataset (module docstring)."""
  if path.startswith(TFDS_PREFIX):
    return read_tfds(path[len(TFDS_PREFIX):], tfds_data_dir)
  if os.path.isdir(path):
    return read_hf(path)
  if not os.path.isfile(path):
    raise LabelledFileError(f"compare.probe_files names {path!r}, which does not exist.")
  return read_conllu(path) if path.endswith(".conllu") else read_columns(path)


def _lines(path: str) -> list[str]:
  try:
    with open(path, encoding="utf-8") as f:
      return f.read().splitlines()
  except UnicodeDecodeError as e:
    raise LabelledFileError(f"{path} is not UTF-8 text; give a CoNLL-U (.conllu) or CoNLL "
                            "column file.") from e


def _blocks(lines: list[str], comments: bool) -> list[list[str]]:
  """Runs of non-blank lines (sentences); with `comments`, lines starting with # dropped (in a
  column file "#" may be a word)."""
  blocks, current = [], []
  for line in lines + [""]:
    if not line.strip():
      if current:
        blocks.append(current)
      current = []
    elif not (comments and line.startswith("#")):
      current.append(line)
  return blocks


def read_conllu(path: str) -> Sentences:
  """`upos` and `deprel` of each syntactic word of a CoNLL-U file."""
  words, upos, deprel = [], [], []
  for block in _blocks(_lines(path), comments=True):
    sentence = [line.split("\t") for line in block]
    if any(len(fields) != 10 for fields in sentence):
      raise LabelledFileError(f"{path}: a CoNLL-U line needs 10 tab-separated fields; got "
                              f"{block[0]!r}. Name column files anything but *.conllu.")
    sentence = [f for f in sentence if f[0].isdigit()]  # no "1-2" ranges, no "1.1" empty nodes
    words.append([f[1] for f in sentence])
    upos.append([f[3] for f in sentence])
    deprel.append([f[7].split(":")[0] for f in sentence])
  return _checked(path, Sentences(words, {"upos": upos, "deprel": deprel}))


def entity_type(tag: str) -> str:
  """`B-PER` -> `PER`; `O` stays `O`."""
  return tag[2:] if tag.startswith(_TAG_PREFIXES) else tag


def read_columns(path: str) -> Sentences:
  """Words (first field) and entity types (last field) of a CoNLL-2003-style column file."""
  words, ner = [], []
  for block in _blocks(_lines(path), comments=False):
    rows = [line.split() for line in block if not line.startswith("-DOCSTART-")]
    if not rows:
      continue
    tags = [r[-1] for r in rows]
    bad = next((t for r, t in zip(rows, tags) if len(r) < 2
                or (t != OUTSIDE and not t.startswith(_TAG_PREFIXES))), None)
    if bad is not None:
      raise LabelledFileError(f"{path}: expected 'word ... TAG' lines with an entity tag last "
                              f"(O, B-PER, I-LOC, ...); got {bad!r}. CoNLL-U files must end "
                              "in .conllu.")
    words.append([r[0] for r in rows])
    ner.append([entity_type(t) for t in tags])
  return _checked(path, Sentences(words, {"ner": ner}))


def read_hf(path: str) -> Sentences:
  """`tokens` and the label columns of a Hugging Face dataset saved to disk."""
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise LabelledFileError(f"{path} is a folder, read as a Hugging Face dataset: pip install "
                            "'mlmjax[datasets]'.") from e
  try:
    dataset = datasets.load_from_disk(path)
  except Exception as e:  # datasets raises many types for an unreadable folder
    raise LabelledFileError(f"{path} is not a dataset saved with save_to_disk: {e}") from e
  if isinstance(dataset, datasets.DatasetDict):
    split = next((s for s in ("validation", "test", "train") if s in dataset), None)
    if split is None:
      raise LabelledFileError(f"{path} has splits {list(dataset)}; one must be validation, "
                              "test or train.")
    dataset = dataset[split]
  columns = {c: dataset[c] for c in dataset.column_names if c in _DATASET_COLUMNS}
  class_names = {c: getattr(dataset.features[c].feature, "names", None) for c in columns}
  return _dataset_sentences(path, dataset.column_names,
                            dataset["tokens"] if "tokens" in dataset.column_names else None,
                            columns, class_names)


def read_tfds(spec: str, data_dir: str) -> Sentences:
  """`tokens` and the label features of a TFDS split ("NAME[:SPLIT]") prepared as ArrayRecord."""
  name, _, split = spec.partition(":")
  try:
    source = sources.open_tfds(name, split or "validation", data_dir)
  except sources.CorpusError as e:
    raise LabelledFileError(str(e)) from e
  features = source.dataset_info.features
  examples = source.__getitems__(list(range(len(source))))
  decode = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
  columns = {c: [list(ex[c]) for ex in examples] for c in features if c in _DATASET_COLUMNS}
  class_names = {c: getattr(features[c].feature, "names", None) for c in columns}
  tokens = ([[decode(w) for w in ex["tokens"]] for ex in examples] if "tokens" in features
            else None)
  return _dataset_sentences(f"TFDS {spec}", list(features), tokens, columns,
                            class_names)


def _dataset_sentences(where: str, all_columns: list[str], tokens, columns: dict,
                       class_names: dict) -> Sentences:
  """Sentences from a dataset's `tokens` and label columns (class ids -> names)."""
  if tokens is None:
    raise LabelledFileError(f"{where} has columns {all_columns}; a labelled dataset needs "
                            "`tokens` (the words).")
  labels = {}
  for column, rows in columns.items():
    names, ours = class_names[column], _DATASET_COLUMNS[column]
    values = [[names[int(v)] if names else str(v) for v in row] for row in rows]
    labels[ours] = [[entity_type(t) for t in row] for row in values] if ours == "ner" else values
  return _checked(where, Sentences([list(t) for t in tokens], labels))


def _checked(path: str, sentences: Sentences) -> Sentences:
  if not sentences.words or not sentences.labels:
    raise LabelledFileError(f"{path} holds no labelled sentence (upos, deprel or ner).")
  return sentences


def rows_with_labels(sentences: Sentences, column: str, tok: tokenizers.Tokenizer,
                     seq_len: int, limit: int) -> LabelledRows:
  """The first `limit` sentences as rows `[CLS] tokens [SEP]` padded to `seq_len`, each word's
  label id on its first token; words past the row's end are dropped."""
  names = sorted({t for row in sentences.labels[column] for t in row} - {OUTSIDE})
  if column == "ner":
    names = [OUTSIDE] + names
  index = {n: i for i, n in enumerate(names)}
  roles = tokenizer_lib.special_roles(tok)
  count = min(limit, len(sentences.words))
  ids = np.full((count, seq_len), roles["pad"], np.int32)
  labels = np.full((count, seq_len), -1, np.int64)
  for r in range(count):
    words, tags = sentences.words[r], sentences.labels[column][r]
    enc = tok.encode(words, is_pretokenized=True, add_special_tokens=False)
    body = enc.ids[: seq_len - 2]
    ids[r, : len(body) + 2] = [roles["cls"], *body, roles["sep"]]
    seen = set()
    for position, word in enumerate(enc.word_ids[: len(body)]):
      if word is not None and word not in seen:  # the word's first token
        seen.add(word)
        labels[r, position + 1] = index[tags[word]]
  return LabelledRows(ids, labels, tuple(names))
