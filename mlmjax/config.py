"""The configuration schema: every key mlmjax reads, its default, and a comment saying what it does.

Config files in `configs/` start from `default_config()` and override what their experiment
changes, so each knob has one name and one place. Defaults describe a small BERT that trains on
the embedded corpus on a CPU; configs/quickstart.py tunes its run for 5 minutes on 2 cores.
"""

import ml_collections

from mlmjax import masking


# The published BERT sizes (Devlin et al. 2019) as `config.model` keys: the configs and the
# benchmarks take them from here.
BERT_SHAPES = {
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                 max_position_embeddings=512),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                  max_position_embeddings=512),
}

# What a family changes in the default config beyond `model.family` (its published recipe,
# at the default small size): `with_family(config, name)` applies it.
FAMILY_RECIPES = {
    "bert": {},
    # Liu et al. 2019: byte-level BPE (cased), one token type, LayerNorm eps 1e-5, positions
    # numbered after the padding id (so two more position rows), dynamic masking.
    "roberta": {"data.tokenizer_type": "byte_level_bpe", "model.type_vocab_size": 1,
                "model.layer_norm_eps": 1e-5, "masking": "roberta"},
    # Warner et al. 2024: byte-level BPE, GeGLU (intermediate = 1.5 x hidden, gated), rotary
    # positions, a global layer every 3 and 128-token windows elsewhere, no dropout, 30% masking.
    "modernbert": {"data.tokenizer_type": "byte_level_bpe", "model.type_vocab_size": 1,
                   "model.layer_norm_eps": 1e-5, "model.hidden_dropout": 0.0,
                   "masking": "modernbert"},
}


def with_family(config: ml_collections.ConfigDict, family: str) -> ml_collections.ConfigDict:
  """`config` turned into `family`'s recipe (FAMILY_RECIPES), keeping its size and data."""
  if family not in FAMILY_RECIPES:
    raise ValueError(f"unknown model family {family!r}; choose from {sorted(FAMILY_RECIPES)}")
  config = config.copy_and_resolve_references()
  config.model.family = family
  for path, value in FAMILY_RECIPES[family].items():
    if path == "masking":
      slots = config.masking.max_predictions
      config.masking = masking.preset(value)
      config.masking.max_predictions = max(slots, masking.schedules.required_predictions(
          config.masking, config.data.seq_len))
    else:
      section, key = path.split(".")
      config[section][key] = value
  if family == "roberta":
    config.model.max_position_embeddings = config.data.seq_len + 2  # after <pad> (id 1)
  if family == "modernbert":
    config.model.intermediate_size = 3 * config.model.hidden_size // 2  # each half of the GLU
  return config


def default_config() -> ml_collections.ConfigDict:
  """Every key mlmjax reads, with its default and what it means; config files override."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # one seed for init, masking and data order
  config.init_from_hf = ""  # local HF BERT, RoBERTa / XLM-R or ModernBERT folder to continue
  #   pretraining from ("" = scratch); it decides the model's family, shape and tokenizer

  config.data = data = ml_collections.ConfigDict()
  data.source = "embedded"  # "embedded" (Python's docs), "files", "tfds" or "hf"
  data.paths = ""  # comma-separated globs of .txt / .jsonl / .parquet files (source "files")
  data.text_field = "text"  # the field holding the text in .jsonl / .parquet / TFDS / HF rows
  data.tfds_name = ""  # TFDS dataset[/config], e.g. "wikipedia/20230601.en" (source "tfds")
  data.tfds_data_dir = ""  # folder or bucket holding it, prepared as ArrayRecord ("" = default)
  data.tfds_split = "train"  # TFDS split the training documents come from
  data.tfds_validation_split = ""  # held-out TFDS split; "" holds out validation_fraction
  data.hf_path = ""  # local Hugging Face dataset folder (save_to_disk or data files; "hf")
  data.hf_split = "train"  # split of an HF DatasetDict / data-file folder
  data.shard_bytes = 64 << 20  # text per preparation shard, the unit one host prepares and writes
  # WordPiece is trained on about this much text, the first share of every shard; the embedded
  # corpus and small corpora are read whole.
  data.tokenizer_sample_bytes = 100_000_000
  data.split_seed = 0  # which documents are held out; independent of config.seed
  data.packing = "full_sentences"  # "full_sentences" (RoBERTa), "per_document", "concatenate"
  # Any of "entity_ids", "phrase_ids", "pos_class", "ngram_ids", made at preparation.
  data.annotations = ()
  # "auto": the best installed English spaCy pipeline (en_core_web_sm first), else the rules;
  # "": the rules; or a pipeline package name or folder.
  data.spacy_pipeline = "auto"
  data.num_workers = 0  # tokenizing processes; 0 = one per core
  # The training rows as this many contiguous ranges, each shuffled on its own; every batch
  # takes batch_size / shuffle_shards rows of each. A process reads only the ranges its rows of
  # a batch come from (about 1/processes of the data when a multiple of the process count):
  # what bounds a host's local disk with a workdir on a bucket. 1 = one global shuffle.
  data.shuffle_shards = 1
  data.pmi = ml_collections.ConfigDict()  # PMI n-gram vocabulary for `ngram_ids`
  data.pmi.vocab_size = 100_000  # n-gram slots (the paper: 800K for BERT-scale corpora)
  data.pmi.min_count = 10  # an n-gram must occur more often than this in the training rows
  data.pmi.min_pmi = 1.0  # and have a PMI above this (collocations only; see data/pmi.py)
  data.pmi.max_n = 5  # longest n-gram, in words (2..5)
  data.pmi.max_tokens = 50_000_000  # counting covers at most this many tokens
  data.pmi.seed = 0  # which rows are counted when max_tokens cuts
  data.validation_fraction = 0.05  # share of documents held out (at least one document)
  data.seq_len = 128  # tokens per packed row, [CLS] and [SEP] included
  data.tokenizer_path = ""  # vocab.txt or tokenizer.json to load; "" trains one:
  data.tokenizer_type = "wordpiece"  # what to train: "wordpiece" (BERT) or "byte_level_bpe"
  #   (RoBERTa: cased, no unknown characters; `lowercase` applies to WordPiece only)
  data.vocab_size = 4096  # WordPiece vocabulary size when training one
  data.lowercase = True  # uncased tokenizer (BERT-uncased style)

  config.masking = masking.default_config()
  config.masking.max_predictions = 20  # prediction slots per row: ~0.15 x seq_len

  config.model = model = ml_collections.ConfigDict()
  # "bert", "roberta" or "modernbert" (mlmjax/model/config.py; configs/roberta.py and
  # configs/modernbert.py set each family's recipe).
  model.family = "bert"
  # BERT-Tiny's shape (2 layers, hidden 128): what 2 CPU cores train usefully in minutes.
  model.hidden_size = 128
  model.num_layers = 2
  model.num_heads = 2
  model.intermediate_size = 512
  model.max_position_embeddings = 128
  model.type_vocab_size = 2
  model.hidden_dropout = 0.1
  model.attention_dropout = 0.0  # dropout on attention probabilities (HF BERT: 0.1); XLA
  #   attention only (cuDNN's fused kernel has none, so a non-zero value there is refused)
  model.initializer_range = 0.02
  model.layer_norm_eps = 1e-12  # BERT's; RoBERTa and ModernBERT use 1e-5
  model.dtype = "float32"  # compute dtype: "bfloat16" on GPU/TPU; params stay float32
  model.attention = "auto"  # "auto": cuDNN flash on GPU in bf16, else "xla"; or force one
  model.hidden_act = "gelu"  # HF's names: "gelu" (exact, BERT's) or "gelu_pytorch_tanh"
  # Dropout's random bits: "hash" (a counter hash: cheap, the same masks on any mesh), "rbg"
  # (XLA's RngBitGenerator) or "threefry" (jax.random.bernoulli; ~10x the integer work).
  model.dropout_impl = "hash"
  # What each layer keeps for the backward pass: "none", "full" (recompute everything),
  # "dots_saveable" or "dots_with_no_batch_dims_saveable" (jax.checkpoint_policies).
  model.remat_policy = "none"
  # Layers are always stacked; True runs them as a device loop (one layer compiled: faster
  # compiles for deep models, a slower step), False unrolls them (the fastest step).
  model.scan_layers = False
  # ModernBERT only: sliding-window width of the local layers (a token sees ±half of it), one
  # global layer every n (layer 0 first), and the rotary bases of the global and local layers.
  model.local_attention = 128
  model.global_attn_every_n_layers = 3
  model.global_rope_theta = 160_000.0
  model.local_rope_theta = 10_000.0

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
  train.log_every = 50  # steps between metric writes; each logs its window's means
  train.eval_every = 400  # steps between evaluations (0 = only at the end)
  train.eval_batches = 0  # validation batches per evaluation, fixed masks (0 = whole split)
  train.checkpoint_every = 400  # steps between checkpoints
  train.keep_checkpoints = 2  # latest checkpoints kept, plus the one with the best eval loss
  train.max_consecutive_skips = 20  # stop after this many non-finite updates in a row (0: never)
  train.allow_config_change = False  # resume a workdir whose config differs (else refused)
  # Where the initial state is computed: "host" (the CPU, then placed in its shardings: XLA:GPU
  # takes ~35 s to compile BERT-base's initialiser, the CPU ~4 s), "device", or "auto" (host
  # on GPU, device elsewhere).
  train.init_on = "auto"

  config.mesh = mesh = ml_collections.ConfigDict()
  mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices
  mesh.axis_rules = (  # logical parameter axis -> mesh axis
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("vocab", "tensor"),
      ("layers", None),  # the stacked-layer axis of scan_layers: never sharded
  )
  return config
