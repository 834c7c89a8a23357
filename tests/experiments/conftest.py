"""Fixtures of the comparison tests: a miniature comparison on a synthetic corpus."""

import pytest

from data import labelled_fixture
from helpers import load_config, tiny_config


def tiny_compare_config(path, strategies=("random", "span"),
                        eval_maskings=("random", "span", "pmi")):
  """configs/compare.py shrunk to seconds: the model, data and steps of `tiny_config`."""
  config = load_config("compare")
  tiny = tiny_config(path)
  annotated = ("annotations", "spacy_pipeline")  # the comparison's, not the quickstart's
  config.data.update({k: v for k, v in tiny.data.items() if k not in annotated})
  config.data.spacy_pipeline = ""  # the rules (the probe labels asserted), whatever is installed
  config.data.validation_fraction = 0.15  # 18 rows: three evaluation batches of 4
  for block in ("model", "train"):
    config[block].update(tiny[block].to_dict())
  config.masking.max_predictions = tiny.masking.max_predictions
  # Gold labels for the file probes: a CoNLL-U file (upos, deprel) and a CoNLL NER file.
  labelled_fixture.write_conllu(path / "ud.conllu")
  labelled_fixture.write_conll_ner(path / "ner.txt")
  config.compare.update(strategies=strategies, eval_maskings=eval_maskings, eval_batch_size=4,
                        eval_batches=3, probe_groups=2, probe_steps=50,
                        probe_files=f"{path / 'ud.conllu'},{path / 'ner.txt'}")
  return config


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
  """(config, workdir, matrix) of one miniature comparison, shared by a module's tests."""
  from mlmjax.experiments import compare
  path = tmp_path_factory.mktemp("compare")
  config = tiny_compare_config(path)
  workdir = str(path / "workdir")
  return config, workdir, compare.compare(config, workdir)


@pytest.fixture
def tiny_compare(tmp_path):
  return tiny_compare_config(tmp_path)
