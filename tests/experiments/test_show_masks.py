"""Tests of the masking demo (mlmjax-mask)."""

from mlmjax.experiments import show_masks

import numpy as np
import pytest

from helpers import tiny_config
from mlmjax.data import corpora, new_texts, pipeline, prepare

SENTENCE = "Barack Obama was born in Hawaii. The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny corpus prepared by mlmjax-mask itself (every annotation, the rules)."""
  path = tmp_path_factory.mktemp("mask")
  config = tiny_config(path)
  config.data.spacy_pipeline = ""  # the rules, whatever spaCy pipelines the machine has
  show_masks.prepared_data(config, str(path / "work"))
  return config, str(path / "work")


def _config(config, strategy, **masking):
  config = config.copy_and_resolve_references()
  config.masking.strategy = strategy
  config.masking.update(masking)
  return config


def test_mask_texts_shows_masks_targets_and_the_annotations(workdir):
  config, path = workdir
  lines = show_masks.mask_texts(_config(config, "dynamic", rate=0.3, mask_prob=1.0,
                                        random_prob=0.0), path, [SENTENCE], steps=2)
  assert lines[0].startswith("annotator: rules-v2") and lines[1] == f'Original: "{SENTENCE}"'
  masked = [line for line in lines if line.startswith("Masked")]
  assert len(masked) == 2 and all("[MASK]" in line for line in masked)
  assert masked[0] != masked[1]  # dynamic (RoBERTa): new masks every step
  targets = [line for line in lines if line.startswith("  predict:")][0].split(": ", 1)[1]
  assert all(t.endswith("([MASK])") for t in targets.split(", "))
  # random is BERT's static masking: the same masks every time the sentence is seen.
  lines = show_masks.mask_texts(_config(config, "random", rate=0.3), path, [SENTENCE], steps=2)
  masked = [line for line in lines if line.startswith("Masked")]
  assert masked[0].split(":", 1)[1] == masked[1].split(":", 1)[1]
  # Entity masking shows the entities and phrases it reads, found by the training annotator.
  lines = show_masks.mask_texts(_config(config, "entity"), path, [SENTENCE])
  assert "  entities: 'Barack Obama', 'Hawaii'" in lines
  assert "  phrases: 'quick brown fox jumps', 'lazy dog'" in lines


def test_texts_get_the_annotations_their_prepared_rows_have(tmp_path):
  """Training documents run through mlmjax-mask's path get exactly the annotations that
  preparation wrote for them: entities, phrases, part-of-speech classes and PMI n-grams."""
  config = tiny_config(tmp_path)
  config.data.update(packing="per_document", seq_len=128,  # a document per row
                     spacy_pipeline="")  # the rules, whatever pipelines the machine has
  manifest, tok = show_masks.prepared_data(config, str(tmp_path / "work"))
  data = config.data.copy_and_resolve_references()
  data.annotations = manifest["annotations"]
  docs = corpora.load_splits(data)[0][:8]
  rows = new_texts.to_rows(tok, docs, manifest)
  n = rows["input_ids"].shape[1]
  assert set(rows) == {"input_ids", "segment_ids", *manifest["annotations"]}
  prepared = pipeline.PackedRows(manifest["data_dir"], "train").rows(0, 8)
  assert set(prepared) == set(rows)
  for field, array in prepared.items():
    np.testing.assert_array_equal(rows[field], array[:, :n], err_msg=field)
    assert not array[:, n:].any()  # nothing past the longest document
  assert rows["ngram_ids"].any() and rows["phrase_ids"].any()  # (this corpus has no names)


def test_spacy_pipeline_found_by_auto_annotates_the_sentences(tmp_path, spacy_package):
  config = tiny_config(tmp_path)
  config.data.spacy_pipeline = "auto"
  lines = show_masks.mask_texts(_config(config, "syntax"), str(tmp_path / "work"), [SENTENCE])
  assert lines[0].startswith(f"annotator: spacy:{spacy_package}")
  classes = [line for line in lines if line.startswith("  classes:")][0]
  assert "born/predicate" in classes and "Obama/argument" in classes  # from the parse
  lines = show_masks.mask_texts(_config(config, "entity"), str(tmp_path / "work"), [SENTENCE])
  assert "  entities: 'Barack Obama', 'Hawaii'" in lines


def test_contextual_masking_says_whose_hidden_states(workdir):
  config, path = workdir
  lines = show_masks.mask_texts(_config(config, "contextual"), path, [SENTENCE])
  assert "hidden states: an untrained model (no checkpoint in the workdir)" in lines


def test_data_prepared_without_an_annotation_is_named(tmp_path):
  config = tiny_config(tmp_path)
  prepare.prepare(config.data, str(tmp_path / "work"))  # no annotations
  with pytest.raises(ValueError, match=r"entity masking reads \['entity_ids', 'phrase_ids'\]"):
    show_masks.mask_texts(_config(config, "entity"), str(tmp_path / "work"), [SENTENCE])

