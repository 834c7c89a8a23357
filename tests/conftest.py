"""Shared test setup: CPU only, and float32 matmuls so numerical comparisons are meaningful."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402

from helpers import tiny_config  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
  """The quickstart config shrunk to run in seconds on a synthetic corpus in `tmp_path`."""
  return tiny_config(tmp_path)
