r"""Model shapes for the train-step benchmark: `get_config(shape)`, the shape one of
tiny, mini, dispatch, base or large.

    mlmjax-bench-train --config=configs/bench.py:tiny --steps=3     # a CPU smoke run
    mlmjax-bench-train --config=configs/bench.py:mini --hf          # beside HF PyTorch, same CPU
    mlmjax-bench-train --config=configs/bench.py:dispatch           # host time of a step call
    mlmjax-bench-train --config=configs/bench.py:large --config.train.batch_size=32

The shapes are `mlmjax.bench.train.SHAPES` (base and large are BERT's, in bf16; the training
recipes at those sizes are `configs/bert_base.py` and `configs/bert_large.py:512`). The
prediction slots follow the sequence length as BERT's do (20 per 128 tokens), also when
`--config.data.seq_len` changes it; `--config.masking.max_predictions` pins them. Config files
are Python: they run as code, so run only files you trust.
"""

import ml_collections

from mlmjax import config as mlmjax_config
from mlmjax.bench.train import SHAPES


def get_config(shape: str = "tiny") -> ml_collections.ConfigDict:
  if shape not in SHAPES:
    raise ValueError(f"configs/bench.py:{shape}: choose one of {sorted(SHAPES)}")
  config = mlmjax_config.default_config()
  config.update_from_flattened_dict(SHAPES[shape])
  # A reference, so a command-line --config.data.seq_len moves the slots with it.
  config.masking.max_predictions = config.data.get_ref("seq_len") * 20 // 128
  return config
