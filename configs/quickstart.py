r"""Quickstart: BERT-Tiny's shape on the embedded corpus, on a laptop CPU in about 5 minutes.

    mlmjax-quickstart --workdir=/tmp/mlmjax_quickstart

or, step by step,

    mlmjax-train --config=configs/quickstart.py --workdir=/tmp/mlmjax_quickstart
    mlmjax-export --workdir=/tmp/mlmjax_quickstart --out=/tmp/mlmjax_quickstart/hf

Any key can be overridden on the command line, e.g. `--config.train.steps=200`; every key is
described in `mlmjax/config.py`. Config files are Python: they run as code, so run only files
you trust.

The run's recipe was chosen for the best held-out accuracy 2 CPU cores reach in about 5
minutes end to end; `bash bench/quickstart_recipes.sh` reruns the candidates, and
docs/BENCHMARKS.md ("Quickstart recipes") has their figures.
"""

import ml_collections

from mlmjax import config as mlmjax_config


def get_config() -> ml_collections.ConfigDict:
  config = mlmjax_config.default_config()  # BERT-Tiny's shape, LR 2e-3
  # Five minutes leave the model far from fitting the corpus: dropout only slows it down.
  config.model.hidden_dropout = 0.0
  # More, smaller updates learn more in the same time than 32-row batches (same tokens/s).
  config.train.update(batch_size=16, steps=2400, warmup_steps=200, eval_every=800,
                      checkpoint_every=800)
  return config
