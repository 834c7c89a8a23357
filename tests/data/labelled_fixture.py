"""Small labelled files in the formats data/labelled.py reads, written by the tests."""

import numpy as np

# (word choices, UPOS, dependency relation) of each slot of "DET NOUN VERB DET NOUN ."
_SLOTS = ((("the", "a"), "DET", "det"), (("cat", "dog", "bird"), "NOUN", "nsubj"),
          (("sees", "hears"), "VERB", "root"), (("the", "a"), "DET", "det"),
          (("tree", "house", "car"), "NOUN", "obj"), ((".",), "PUNCT", "punct"))
_HEADS = (2, 3, 0, 5, 3, 3)
_PEOPLE, _PLACES = ("john", "mary", "ada"), ("paris", "london", "new york")


def write_conllu(path, sentences: int = 40, seed: int = 0) -> list[list[tuple[str, str, str]]]:
  """A CoNLL-U file of sentences "DET NOUN VERB DET NOUN ." (with a comment, a multiword-token
  range and an empty node in the first, which readers skip); returns [(word, upos, deprel)]."""
  rng = np.random.default_rng(seed)
  lines, truth = [], []
  for s in range(sentences):
    words = [(str(rng.choice(choices)), upos, deprel) for choices, upos, deprel in _SLOTS]
    lines.append(f"# sent_id = {s}")
    if s == 0:
      lines.append("1-2\tthecat\t_\t_\t_\t_\t_\t_\t_\t_")
    for i, ((word, upos, deprel), head) in enumerate(zip(words, _HEADS), start=1):
      relation = "nsubj:pass" if deprel == "nsubj" and s % 2 else deprel
      lines.append(f"{i}\t{word}\t{word}\t{upos}\t_\t_\t{head}\t{relation}\t_\t_")
      if s == 0 and i == 3:
        lines.append("3.1\tsaw\tsee\tVERB\t_\t_\t_\t_\t3:conj\t_")
    lines.append("")
    truth.append(words)
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return truth


def ner_sentence(rng) -> list[tuple[str, str]]:
  """"PERSON lives in PLACE #1 ." with IOB2 tags ("#" is a word in a column file)."""
  place = str(rng.choice(_PLACES)).split()
  return ([(str(rng.choice(_PEOPLE)), "B-PER"), ("lives", "O"), ("in", "O")]
          + [(w, ("B-" if i == 0 else "I-") + "LOC") for i, w in enumerate(place)]
          + [("#", "O"), ("1", "O"), (".", "O")])


def write_conll_ner(path, sentences: int = 40, seed: int = 0) -> list[list[tuple[str, str]]]:
  """A CoNLL-2003-style file (word, POS, chunk, tag) with a -DOCSTART- line; returns
  [(word, tag)] per sentence."""
  rng = np.random.default_rng(seed)
  lines, truth = ["-DOCSTART- -X- -X- O", ""], []
  for _ in range(sentences):
    words = ner_sentence(rng)
    lines += [f"{w} NN I-NP {t}" for w, t in words] + [""]
    truth.append(words)
  path.write_text("\n".join(lines), encoding="utf-8")
  return truth
