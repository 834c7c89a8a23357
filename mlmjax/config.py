"""The configuration schema: every key mlmjax reads, its default, and a comment saying what it does.

Config files in `configs/` start from `default_config()` and override what their experiment
changes, so each knob has one name and one place. Defaults describe a small BERT that trains on
the embedded corpus on a CPU (the quickstart).
"""

import ml_collections

from mlmjax import masking


def default_config() -> ml_collections.ConfigDict:
  """Every key mlmjax reads, with its default and what it means; config files override."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # one seed for init, masking and data order
  config.init_from_hf = ""  # local HF BERT folder to continue pretraining from ("" = scratch)

  config.data = data = ml_collections.ConfigDict()
  data.source = "embedded"  # "embedded" (Python's own docs) or "files"
  data.paths = ""  # comma-separated globs of .txt / .jsonl files when source == "files"
  data.text_field = "text"  # the field holding the text in .jsonl rows
  data.validation_fraction = 0.05  # share of documents held out (at least one document)
  data.seq_len = 128  # tokens per packed row, [CLS] and [SEP] included
  data.tokenizer_path = ""  # vocab.txt or tokenizer.json to load; "" trains WordPiece
  data.vocab_size = 4096  # WordPiece vocabulary size when training one
  data.lowercase = True  # uncased tokenizer (BERT-uncased style)

  config.masking = masking.default_config()
  config.masking.max_predictions = 20  # prediction slots per row: ~0.15 x seq_len

  config.model = model = ml_collections.ConfigDict()
  # BERT-Tiny's shape (2 layers, hidden 128): what 2 CPU cores train usefully in minutes.
  model.hidden_size = 128
  model.num_layers = 2
  model.num_heads = 2
  model.intermediate_size = 512
  model.max_position_embeddings = 128
  model.type_vocab_size = 2
  model.hidden_dropout = 0.1
  model.attention_dropout = 0.0  # the fused attention kernels take no dropout; see docs
  model.initializer_range = 0.02
  model.dtype = "float32"  # compute dtype: "bfloat16" on GPU/TPU; params stay float32
  model.attention = "auto"  # "auto": cuDNN flash on GPU in bf16, else "xla"; or force one
  model.remat = False  # rematerialise each layer in the backward pass (saves memory)

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 32  # global batch, rows
  train.grad_accum_steps = 1  # microbatches per update (same update, less activation memory)
  train.steps = 1200  # length of the run (and of the learning-rate schedule)
  train.stop_after = 0  # stop early at this step, checkpointed (0 = run to train.steps)
  train.learning_rate = 2e-3
  train.warmup_steps = 100
  train.schedule = "linear"  # decay after warmup: "linear" (BERT) or "cosine"
  train.end_learning_rate_fraction = 0.0  # decay to this fraction of the peak
  train.weight_decay = 0.01
  train.adam_b1 = 0.9
  train.adam_b2 = 0.98
  train.adam_eps = 1e-6
  train.clip_norm = 1.0
  train.log_every = 50  # steps between metric writes
  train.eval_every = 400  # steps between evaluations (0 = only at the end)
  train.eval_batches = 0  # validation batches per evaluation, fixed masks (0 = whole split)
  train.checkpoint_every = 400  # steps between checkpoints
  train.keep_checkpoints = 2

  config.mesh = mesh = ml_collections.ConfigDict()
  mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices
  mesh.axis_rules = (  # logical parameter axis -> mesh axis
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("vocab", "tensor"),
  )
  return config
