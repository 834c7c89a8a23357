r"""Masking strategy comparison: one model per strategy on one budget, every model on every masking.

    mlmjax-compare --config=configs/compare.py --workdir=/tmp/mlmjax_compare

trains BERT-Tiny's shape on the embedded corpus once per strategy in `compare.strategies`
(static and dynamic random tokens, whole words, spans, entities, PMI n-grams, rare tokens,
syntax, semantics; identical architecture, steps, batch, seed and data order), then scores
every model under every masking in `compare.eval_maskings` on the same held-out rows with the
same masks, and probes each model's frozen features (syntax, entities, rare words,
continuation; with `compare.probe_files`, gold UPOS, dependency relations and entity types:
experiments/probes.py). It writes results.md, results.csv,
probes.csv, loss_curves.png, accuracy_heatmap.png and probes.png to the workdir;
docs/COMPARISON.md reads a run of this command. Run it again to resume: finished runs,
evaluated cells and probes are reused.

Presets, `--config=configs/compare.py:NAME` (`get_config(NAME)`; `config.scale` records it):
  cpu    (default) 2 layers x 128, 600 steps of 32 x 128 tokens per strategy: about 2.5
         minutes a strategy on 2 quiet CPU cores.
  smoke  1 layer x 64, 40 steps of 16 x 64 tokens: checks the whole path in a few minutes.
  gpu    BERT-Small's shape (4 layers x 512), 20k steps of 256 x 128 tokens in bf16 per
         strategy. Give it a corpus of 100M+ tokens (`--config.data.source=files
         --config.data.paths='corpus/*.txt'`): on the embedded corpus (0.35M tokens) it would
         see every token ~1900 times and measure memorisation, not masking. Expected wall time
         on one H100-class GPU: about 10 minutes a strategy (an estimate: 2.6 TFLOP
         per step, a small model's launch-bound steps at ~25 ms; not yet measured).
Keys given on the command line win over the preset, e.g.
`--config.compare.strategies="('random','span')" --config.train.steps=300`.
Config files are Python: they run as code, so run only files you trust.
"""

import ml_collections

from mlmjax import config as mlmjax_config

# name -> overrides of the defaults (mlmjax/config.py): the sizes that make a comparison fit
# the hardware. Everything else is shared by every preset.
SCALES = {
    "cpu": {
        "model": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512,
                      max_position_embeddings=128, dtype="float32"),
        "data": dict(seq_len=128, vocab_size=4096),
        "train": dict(batch_size=32, steps=600, warmup_steps=60, learning_rate=2e-3,
                      log_every=50, eval_every=100, checkpoint_every=100),
        "compare": dict(eval_batch_size=16, eval_batches=0),
    },
    "smoke": {
        "model": dict(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128,
                      max_position_embeddings=64, dtype="float32"),
        "data": dict(seq_len=64, vocab_size=1024),
        "masking": dict(max_predictions=10),
        "train": dict(batch_size=16, steps=40, warmup_steps=5, learning_rate=2e-3,
                      log_every=10, eval_every=20, checkpoint_every=20),
        "compare": dict(eval_batch_size=16, eval_batches=8),
    },
    "gpu": {
        "model": dict(hidden_size=512, num_layers=4, num_heads=8, intermediate_size=2048,
                      max_position_embeddings=512, dtype="bfloat16"),
        "data": dict(seq_len=128, vocab_size=30522, validation_fraction=0.005),
        "train": dict(batch_size=256, steps=20_000, warmup_steps=1_000, learning_rate=5e-4,
                      adam_b2=0.999, log_every=100, eval_every=1_000, checkpoint_every=2_000),
        "compare": dict(eval_batch_size=64, eval_batches=50),
    },
}


def get_config(scale: str = "cpu") -> ml_collections.ConfigDict:
  if scale not in SCALES:
    raise ValueError(f"Unknown scale {scale!r}; presets: {sorted(SCALES)}.")
  config = mlmjax_config.default_config()
  config.scale = scale  # the preset these sizes come from (see the module docstring)

  # Entity and PMI masking (training and evaluation) need the data's annotations: entities and
  # phrases (ERNIE), part-of-speech classes (syntax, semantic), PMI n-grams.
  config.data.annotations = ("entity_ids", "phrase_ids", "pos_class", "ngram_ids")
  # An installed English spaCy pipeline when there is one, else the rules (the report names
  # the annotator used: tables made with different annotators do not compare).

  config.compare = compare = ml_collections.ConfigDict()
  # One model each, trained alike: BERT's static and RoBERTa's dynamic random masking, the
  # unit-based strategies (one per kind of unit the evaluation maskings ask for), and the
  # weight-based ones whose claims the probes test (rare words, syntax, semantics). Any name in
  # masking.SPECS may be added or dropped (docs/COMPARISON.md).
  compare.strategies = ("random", "dynamic", "whole_word", "span", "entity", "pmi", "frequency",
                        "syntax", "semantic")
  compare.eval_maskings = ("random", "whole_word", "span", "entity", "pmi")  # every model on each
  compare.eval_batch_size = 16  # rows per evaluation batch: the unit of the 95% intervals
  compare.eval_batches = 0  # at most this many full batches of the validation split (0 = all)
  # Key of the evaluation masks, apart from config.seed: comparisons trained with other seeds
  # are scored on the very same masks, so their cells pair up (seed-to-seed noise).
  compare.eval_seed = 0
  # Probes of each trained model (experiments/probes.py): syntax (pos_class), entities, rare
  # words (MLM accuracy), semantic (which half continues a document), with labels from the
  # annotator the data was prepared with; upos, deprel and ner with gold labels from
  # probe_files (left out without one). Each: a linear layer, Adam, probe_steps full-batch
  # steps on half of probe_rows validation rows (or sentences of a file), scored on the other
  # half in probe_groups groups.
  compare.probes = ("syntax", "entities", "frequency", "semantic", "upos", "deprel", "ner")
  # Comma-separated labelled files or folders: CoNLL-U (*.conllu: upos, deprel), CoNLL-2003
  # columns (ner), a Hugging Face dataset saved to disk, or tfds:NAME[:SPLIT] prepared in
  # data.tfds_data_dir (data/labelled.py).
  compare.probe_files = ""
  compare.probe_rows = 256
  compare.probe_steps = 300
  compare.probe_groups = 8
  # Evaluation replaces every chosen token by [MASK]: kept tokens (BERT's 10%) would be free
  # answers that dilute the differences between models.
  compare.eval_mask_prob = 1.0
  compare.eval_random_prob = 0.0

  for block, values in SCALES[scale].items():
    config[block].update(values)
  return config
