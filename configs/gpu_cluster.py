r"""BERT-large on a SLURM GPU cluster: N nodes x 8 GPUs, one JAX process per node.

    sbatch --nodes=4 launch/slurm.sbatch configs/gpu_cluster.py /shared/runs/bert_large

Without a shared filesystem, a bucket instead (`pip install 'mlmjax[gcs]'` on every node):

    sbatch --nodes=4 launch/slurm.sbatch configs/gpu_cluster.py gs://bucket/runs/bert_large \
      --config.data.paths='gs://bucket/corpus/*.jsonl'

Mesh: data parallel across nodes (slow links), FSDP across the 8 GPUs of a node (NVLink), so
the all-gathers of FSDP stay inside a node. Global batch 2048 x 128 = 256 rows per node-step
of 8 GPUs x 32 rows; with 4 nodes, LAMB-free AdamW at 2e-4 (RoBERTa-style larger batch).
"""

import ml_collections

from mlmjax import config as mlmjax_config

GPUS_PER_NODE = 8


def get_config() -> ml_collections.ConfigDict:
  config = mlmjax_config.default_config()
  config.data.source = "files"
  config.data.paths = "/shared/corpus/*.jsonl"
  config.data.vocab_size = 30522
  config.data.seq_len = 128
  config.data.validation_fraction = 0.001
  # With a gs:// workdir (no shared filesystem) each node copies only the rows its block of a
  # batch draws from; 16 divides the batch and is a multiple of 1, 2, 4, 8 or 16 nodes.
  config.data.shuffle_shards = 16
  config.masking.max_predictions = 20

  config.model.update(**mlmjax_config.BERT_SHAPES["large"], dtype="bfloat16", attention="cudnn")

  config.train.update(batch_size=2048, steps=250_000, learning_rate=2e-4, warmup_steps=10_000,
                      adam_b2=0.98, log_every=100, eval_every=5_000, eval_batches=10,
                      checkpoint_every=2_000, keep_checkpoints=3)
  config.mesh.shape = (-1, GPUS_PER_NODE, 1)  # (nodes, GPUs per node, 1)
  return config
