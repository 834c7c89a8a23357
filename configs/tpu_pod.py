r"""BERT-large on a Cloud TPU v5p-64 pod slice (32 chips, 4 hosts), data from TFDS on a bucket.

    bash launch/tpu_pod.sh my-tpu us-east5-a configs/tpu_pod.py gs://bucket/runs/bert_large

Plan the sharding without a TPU:

    mlmjax-train --config=configs/tpu_pod.py --workdir=/tmp/plan --dry_run=32

Mesh (4, 8, 1): FSDP in groups of 8 chips, data parallel across the 4 groups (ICI links every
chip of a slice, so the split is about collective sizes, not topology). Attention through XLA.
Global batch 4096 x 128. The workdir is the bucket, the only storage the hosts share: each
host prepares its share of the data into it and copies back only the rows it reads.
"""

import ml_collections

from mlmjax import config as mlmjax_config


def get_config() -> ml_collections.ConfigDict:
  config = mlmjax_config.default_config()
  config.data.source = "tfds"
  config.data.tfds_name = "wikipedia/20230601.en"
  config.data.tfds_data_dir = "gs://bucket/tensorflow_datasets"
  config.data.vocab_size = 30522
  config.data.seq_len = 128
  config.data.validation_fraction = 0.001
  # Each host copies only the rows its block of a batch draws from (a quarter on 4 hosts) to
  # its own disk; 32 divides the batch and is a multiple of any host count up to 32.
  config.data.shuffle_shards = 32
  config.masking.max_predictions = 20

  config.model.update(**mlmjax_config.BERT_SHAPES["large"], dtype="bfloat16", attention="xla")

  config.train.update(batch_size=4096, steps=125_000, learning_rate=4e-4, warmup_steps=5_000,
                      adam_b2=0.98, log_every=100, eval_every=5_000, eval_batches=10,
                      checkpoint_every=2_000, keep_checkpoints=3)
  config.mesh.shape = (4, 8, 1)  # (data, fsdp, tensor) = 32 chips
  return config
