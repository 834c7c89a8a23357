r"""BERT-large (340M) MLM pretraining in BERT's two phases: 128-token rows, then 512.

    mlmjax-train --config=configs/bert_large.py:128 --workdir=DIR   # steps 0 .. 900k
    mlmjax-train --config=configs/bert_large.py:512 --workdir=DIR   # same DIR: 900k .. 1M

Phase 2 resumes the phase-1 checkpoint in the same workdir: the model and optimizer go on, the
data is prepared again with 512-token rows and read from its first batch (mlmjax notices the
changed data config). The learning-rate schedule spans both phases (`train.steps` = 1M).
FSDP over all devices: parameters and AdamW moments are split, so each device holds a slice.
"""

import ml_collections

from mlmjax import config as mlmjax_config

PHASES = {  # seq_len: (prediction slots, global batch, last step of the phase)
    128: (20, 256, 900_000),
    512: (80, 256, 1_000_000),
}


def get_config(phase: str = "128") -> ml_collections.ConfigDict:
  seq_len = int(phase)
  if seq_len not in PHASES:
    raise ValueError(f"bert_large phase must be one of {sorted(PHASES)}, got {phase!r}")
  max_predictions, batch_size, stop_after = PHASES[seq_len]
  config = mlmjax_config.default_config()
  config.data.vocab_size = 30522
  config.data.seq_len = seq_len
  config.data.validation_fraction = 0.001
  config.masking.max_predictions = max_predictions

  config.model.update(**mlmjax_config.BERT_SHAPES["large"], hidden_dropout=0.1,
                      dtype="bfloat16", remat_policy="full" if seq_len == 512 else "none")

  config.train.update(batch_size=batch_size, steps=1_000_000, stop_after=stop_after,
                      learning_rate=1e-4, warmup_steps=10_000, adam_b2=0.999, log_every=100,
                      eval_every=10_000, eval_batches=20, checkpoint_every=5_000,
                      keep_checkpoints=3)
  config.mesh.shape = (1, -1, 1)  # FSDP over every device
  return config
