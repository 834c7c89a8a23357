r"""Quickstart: BERT-Tiny's shape on the embedded corpus, on a laptop CPU in minutes.

    mlmjax-quickstart --workdir=/tmp/mlmjax_quickstart

or, step by step,

    mlmjax-train --config=configs/quickstart.py --workdir=/tmp/mlmjax_quickstart
    mlmjax-export --workdir=/tmp/mlmjax_quickstart --out=/tmp/mlmjax_quickstart/hf

Any key can be overridden on the command line, e.g. `--config.train.steps=200`; every key is
described in `mlmjax/config.py`. Config files are Python: they run as code, so run only files
you trust.
"""

import ml_collections

from mlmjax import config as mlmjax_config


def get_config() -> ml_collections.ConfigDict:
  return mlmjax_config.default_config()  # the defaults are the quickstart
