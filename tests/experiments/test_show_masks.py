"""Tests of the masking demo CLI and the benchmark's table."""

from mlmjax.experiments import show_masks
from mlmjax.bench import masking as bench

SENTENCE = "Barack Obama was born in Hawaii. The quick brown fox jumps over the lazy dog."


def test_mask_text_shows_masks_and_targets():
  lines = show_masks.mask_text(SENTENCE, "dynamic", rate=0.3, steps=2, seed=0, mask_prob=1.0,
                             random_prob=0.0)
  assert lines[0] == f'Original: "{SENTENCE}"'
  masked = [line for line in lines if line.startswith("Masked")]
  assert len(masked) == 2 and all("[MASK]" in line for line in masked)
  assert masked[0] != masked[1]  # new masks every step
  ids, _ = show_masks.encode(show_masks.build_tokenizer(SENTENCE), SENTENCE)
  targets = lines[2].split(": ", 1)[1].split(", ")
  assert len(targets) == round(0.3 * (ids.shape[1] - 2))  # [CLS] and [SEP] are not eligible
  assert all(t.endswith("([MASK])") for t in targets)


def test_capitalised_words_stand_in_for_entities():
  tok = show_masks.build_tokenizer(SENTENCE)
  _, offsets = show_masks.encode(tok, SENTENCE)
  spans = show_masks.capitalised_spans(SENTENCE, offsets)[0]
  words = {SENTENCE[a:b]: k for (a, b), k in zip(offsets, spans) if b > a}
  assert words["Barack"] == words["Obama"] == 1  # one entity of two words
  assert words["Hawaii"] == 2 and words["The"] == 0 and words["fox"] == 0


def test_entity_strategy_masks_entities_first():
  lines = show_masks.mask_text(SENTENCE, "entity", rate=0.2, steps=1, seed=0, mask_prob=1.0,
                             random_prob=0.0)
  assert "Barack (" in lines[2] and "Obama (" in lines[2] and "Hawaii (" in lines[2]


def test_benchmark_table():
  results = [{"name": "random", "shape": (2, 8), "seconds": 0.001},
             {"name": "whole_word", "shape": (2, 8), "seconds": 0.002},
             {"name": "HF collator (np)", "shape": (2, 8), "seconds": 0.01},
             {"name": "HF collator whole_word_mask (np)", "shape": (2, 8), "seconds": 0.04},
             {"name": "HF collator (pt)", "shape": (2, 8), "seconds": None}]
  text = bench.table(results, [(2, 8)])
  rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
  assert "0.0M" in rows["random"] and "10.0x" in rows["random"]
  assert "20.0x" in rows["whole_word"]  # against the whole-word collator
  assert "transformers not installed" in rows["HF collator (pt)"]
