"""Labelled files for the probes: CoNLL-U, CoNLL column files, HF datasets on disk, encoding."""

import numpy as np
import pytest

from data import labelled_fixture
from mlmjax.data import labelled
from mlmjax.data import tokenizer as tokenizer_lib


def test_conllu_gives_upos_and_deprel_of_syntactic_words(tmp_path):
  path = tmp_path / "ud.conllu"
  truth = labelled_fixture.write_conllu(path, sentences=5)
  sentences = labelled.read(str(path))
  assert set(sentences.labels) == {"upos", "deprel"}
  assert sentences.words == [[w for w, _, _ in s] for s in truth]  # no "1-2", no "3.1"
  assert sentences.labels["upos"] == [[u for _, u, _ in s] for s in truth]
  # Subtypes dropped: the odd sentences' "nsubj:pass" is "nsubj".
  assert sentences.labels["deprel"] == [[d for _, _, d in s] for s in truth]
  assert "nsubj:pass" in path.read_text()


def test_column_file_gives_entity_types(tmp_path):
  path = tmp_path / "ner.txt"
  truth = labelled_fixture.write_conll_ner(path, sentences=6)
  sentences = labelled.read(str(path))
  assert list(sentences.labels) == ["ner"]
  assert sentences.words == [[w for w, _ in s] for s in truth]
  assert sentences.labels["ner"] == [[labelled.entity_type(t) for _, t in s] for s in truth]
  assert {t for s in sentences.labels["ner"] for t in s} <= {"O", "PER", "LOC"}


def test_hf_dataset_on_disk_reads_class_names(tmp_path):
  datasets = pytest.importorskip("datasets")  # in the test extra: runs in CI
  tags = datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))
  features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                "ner_tags": tags,
                                "deprel": datasets.Sequence(datasets.Value("string"))})
  data = datasets.Dataset.from_dict(
      {"tokens": [["ada", "lives", "in", "new", "york"]], "ner_tags": [[1, 0, 0, 3, 4]],
       "deprel": [["nsubj", "root", "case", "compound", "obl:in"]]}, features=features)
  datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / "hf"))
  sentences = labelled.read(str(tmp_path / "hf"))
  assert sentences.words == [["ada", "lives", "in", "new", "york"]]
  assert sentences.labels["ner"] == [["PER", "O", "O", "LOC", "LOC"]]
  assert sentences.labels["deprel"] == [["nsubj", "root", "case", "compound", "obl:in"]]


@pytest.mark.parametrize("name, text, message", [
    ("bad.conllu", "1\tcat\tNOUN\n\n", "10 tab-separated fields"),
    ("bad.txt", "the DT\ncat NN\n\n", "entity tag last"),
    ("empty.txt", "\n\n", "no labelled sentence"),
    ("missing.txt", None, "does not exist"),
])
def test_unreadable_files_name_the_format(tmp_path, name, text, message):
  path = tmp_path / name
  if text is not None:
    path.write_text(text, encoding="utf-8")
  with pytest.raises(labelled.LabelledFileError, match=message):
    labelled.read(str(path))


def test_rows_with_labels_put_each_label_on_the_first_token_of_its_word(tmp_path):
  tok = tokenizer_lib.train_tokenizer(["the cat sees a dog . john lives in paris ."] * 20,
                                      vocab_size=60, lowercase=True)
  sentences = labelled.Sentences(
      words=[["John", "lives", "in", "Paris", "."], ["the", "cats", "."]],
      labels={"ner": [["PER", "O", "O", "LOC", "O"], ["O", "O", "O"]]})
  enc = labelled.rows_with_labels(sentences, "ner", tok, seq_len=8, limit=5)
  roles = tokenizer_lib.special_roles(tok)
  assert enc.names[0] == "O" and enc.input_ids.shape == (2, 8)
  assert enc.input_ids[0, 0] == roles["cls"]
  first = enc.input_ids[0]
  assert list(enc.labels[0, :7]) == [-1, *[enc.names.index(t) for t in
                                           ("PER", "O", "O", "LOC", "O")], -1]
  assert first[6] == roles["sep"] and first[7] == roles["pad"]
  # "cats" is several word pieces: the label sits on the first, -1 on the rest.
  pieces = tok.encode(["cats"], is_pretokenized=True, add_special_tokens=False).ids
  assert len(pieces) > 1
  assert list(enc.labels[1, 2:2 + len(pieces)]) == [0] + [-1] * (len(pieces) - 1)
  # A row too short for its sentence keeps the words that fit.
  short = labelled.rows_with_labels(sentences, "ner", tok, seq_len=4, limit=1)
  assert short.input_ids.shape == (1, 4) and (short.labels[0] >= 0).sum() == 2
  assert np.all(short.input_ids[0, [0, 3]] == [roles["cls"], roles["sep"]])


def test_tfds_dataset_reads_tokens_and_class_names(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")  # in the test extra: runs in CI
  sentences = [(["ada", "lives", "in", "new", "york"], [1, 0, 0, 3, 4]),
               (["john", "sees", "paris"], [1, 0, 3])]

  class TinyNer(tfds.core.GeneratorBasedBuilder):
    """Sentences with CoNLL-2003's feature names: tokens and ner (class ids)."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "tokens": tfds.features.Sequence(tfds.features.Text()),
          "ner": tfds.features.Sequence(tfds.features.ClassLabel(
              names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"validation": self._generate_examples()}

    def _generate_examples(self):
      for i, (tokens, tags) in enumerate(sentences):
        yield i, {"tokens": tokens, "ner": tags}

  TinyNer(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  read = labelled.read("tfds:tiny_ner", str(tmp_path))
  assert read.words == [s for s, _ in sentences]
  assert read.labels == {"ner": [["PER", "O", "O", "LOC", "LOC"], ["PER", "O", "LOC"]]}
  with pytest.raises(labelled.LabelledFileError, match="Cannot open TFDS 'tiny_ner' split 'te"):
    labelled.read("tfds:tiny_ner:test", str(tmp_path))
