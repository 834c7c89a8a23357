"""Pretraining as a library call: the training loop, plus the starting point the config names.

    from mlmjax import pretrain
    results = pretrain.train_and_evaluate(config, "/tmp/run")

With `config.init_from_hf` (a local Hugging Face BERT folder) the run takes that model's shape
and tokenizer and starts from its weights (continued pretraining; the optimizer starts afresh).
The loop (`train/loop.py`) knows nothing of Hugging Face: it takes starting parameters as a
function. This module joins the two, above `train` and `convert`, so the command lines and the
comparison (`experiments/compare.py`) honour the key alike.
"""

import functools

from mlmjax.convert import hf
from mlmjax.train import loop


def train_and_evaluate(config, workdir: str) -> dict:
  """`loop.train_and_evaluate`, from `config.init_from_hf`'s shape, tokenizer and weights when
  that is set; returns the final evaluation."""
  if not config.init_from_hf:
    return loop.train_and_evaluate(config, workdir)
  config = hf.with_hf_architecture(config)
  return loop.train_and_evaluate(
      config, workdir, init_params=functools.partial(hf.load_params, config.init_from_hf))
