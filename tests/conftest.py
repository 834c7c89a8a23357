"""Shared test setup: CPU only, and float32 matmuls so numerical comparisons are meaningful."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache for the session, inherited by the processes tests start:
# a resumed, killed or re-launched run compiles the same step as the run before it, and XLA
# then loads it instead of compiling it again (the same program, so the same results).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="mlmjax_tests_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402

from helpers import tiny_config  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
  """The quickstart config shrunk to run in seconds on a synthetic corpus in `tmp_path`."""
  return tiny_config(tmp_path)
