r"""BERT-base (110M) MLM pretraining, sequence length 128, on one GPU or host.

    mlmjax-train --config=configs/bert_base.py --workdir=gs://bucket/bert_base \
      --config.data.source=files --config.data.paths='corpus/*.jsonl'

BERT's recipe (Devlin et al. 2019) with dynamic masking (RoBERTa): AdamW 1e-4, 10k warmup steps,
linear decay, batch 256 x 128 tokens, 1M steps. bf16 compute with float32 parameters. On a
GPU, attention runs in cuDNN's flash kernel ("auto"). Use `--config.data.tokenizer_path=vocab.txt`
for BERT's own uncased vocabulary, or leave it empty to train a 30522-token WordPiece.
"""

import ml_collections

from mlmjax import config as mlmjax_config


def get_config() -> ml_collections.ConfigDict:
  config = mlmjax_config.default_config()
  config.data.vocab_size = 30522
  config.data.seq_len = 128
  config.data.validation_fraction = 0.001
  config.masking.max_predictions = 20  # BERT: 20 slots at 128 tokens

  config.model.update(**mlmjax_config.BERT_SHAPES["base"], hidden_dropout=0.1, dtype="bfloat16")

  config.train.update(batch_size=256, steps=1_000_000, learning_rate=1e-4, warmup_steps=10_000,
                      adam_b2=0.999, log_every=100, eval_every=10_000, eval_batches=20,
                      checkpoint_every=5_000, keep_checkpoints=3)
  config.mesh.shape = (-1, 1, 1)  # data parallel over all devices (params are small)
  return config
