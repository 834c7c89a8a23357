r"""Model shapes for the train-step benchmark: `get_config(shape)`, the shape one of
tiny, mini, dispatch, base or large.

    python -m bench.train --config=configs/bench.py:tiny --steps=3     # a CPU smoke run
    python -m bench.train --config=configs/bench.py:mini --hf          # beside HF PyTorch, same CPU
    python -m bench.train --config=configs/bench.py:dispatch           # host time of a step call
    python -m bench.train --config=configs/bench.py:large --config.train.batch_size=32

Base and large are BERT's, in bf16 (the training recipes at those sizes are
`configs/bert_base.py` and `configs/bert_large.py:512`); the benchmark names a model by the
shape here it matches (`bench/train.py`). The prediction slots follow the sequence length as
BERT's do (20 per 128 tokens), also when `--config.data.seq_len` changes it;
`--config.masking.max_predictions` pins them. Config files are Python: they run as code, so run
only files you trust.
"""

from typing import Any

import ml_collections

from mlmjax import config as mlmjax_config

# Benchmark shapes by name, as dotted config paths.
SHAPES: dict[str, dict[str, Any]] = {
    # BERT-Tiny's width at a small vocabulary: for tests and CPU smoke runs.
    "tiny": {"model.hidden_size": 64, "model.num_layers": 2, "model.num_heads": 2,
             "model.intermediate_size": 256, "model.max_position_embeddings": 512,
             "data.vocab_size": 1024, "data.seq_len": 64, "train.batch_size": 8},
    # BERT-Mini (4 layers, width 256): the CPU side-by-side with HF (`--hf`).
    "mini": {"model.hidden_size": 256, "model.num_layers": 4, "model.num_heads": 4,
             "model.intermediate_size": 1024, "model.max_position_embeddings": 512,
             "data.vocab_size": 8192, "data.seq_len": 128, "train.batch_size": 16},
    # BERT-base's depth at a width of 16: the step's host (dispatch) time with little compute.
    "dispatch": {"model.hidden_size": 16, "model.num_layers": 12, "model.num_heads": 2,
                 "model.intermediate_size": 32, "model.max_position_embeddings": 512,
                 "data.vocab_size": 1024, "data.seq_len": 16, "train.batch_size": 2},
    "base": {**{f"model.{k}": v for k, v in mlmjax_config.BERT_SHAPES["base"].items()},
             "model.dtype": "bfloat16", "data.vocab_size": 30522, "data.seq_len": 128,
             "train.batch_size": 256},
    "large": {**{f"model.{k}": v for k, v in mlmjax_config.BERT_SHAPES["large"].items()},
              "model.dtype": "bfloat16", "data.vocab_size": 30522, "data.seq_len": 512,
              "train.batch_size": 32},
}


def get_config(shape: str = "tiny") -> ml_collections.ConfigDict:
  if shape not in SHAPES:
    raise ValueError(f"configs/bench.py:{shape}: choose one of {sorted(SHAPES)}")
  config = mlmjax_config.default_config()
  config.update_from_flattened_dict(SHAPES[shape])
  # A reference, so a command-line --config.data.seq_len moves the slots with it.
  config.masking.max_predictions = config.data.get_ref("seq_len") * 20 // 128
  return config
