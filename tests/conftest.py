"""Shared test setup: CPU only, and float32 matmuls so numerical comparisons are meaningful."""

import atexit
import importlib
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache for the session, inherited by the processes tests start:
# a resumed, killed or re-launched run compiles the same step as the run before it, and XLA
# then loads it instead of compiling it again (the same program, so the same results).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mlmjax_tests_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402

from helpers import tiny_config  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
  """The quickstart config shrunk to run in seconds on a synthetic corpus in `tmp_path`."""
  return tiny_config(tmp_path)


@pytest.fixture
def spacy_package(tmp_path, monkeypatch):
  """A small English spaCy pipeline installed as a package for this test; its name.

  The pipeline (tests/data/spacy_fixture.py) tags and parses plain sentences and finds a few
  entities; `spacy.load(name)` and `data.spacy_pipeline="auto"` find it. Its folder,
  `tmp_path / "site-packages"`, is on sys.path; put it on PYTHONPATH for a subprocess.
  """
  spacy_fixture = importlib.import_module("data.spacy_fixture")  # imports spaCy: only here
  return spacy_fixture.install_pipeline(tmp_path / "site-packages", monkeypatch)


# The slowest files first (minutes each: real processes, many compiles): the two xdist workers
# (pytest.ini) take files in collection order, and longest-first lets them finish together.
SLOWEST_FIRST = ("tests/test_checkpoint.py", "tests/bench/test_gpu_report.py",
                 "tests/train/test_partition.py", "tests/experiments/test_compare.py",
                 "tests/train/test_multiprocess.py", "tests/test_cli.py")


def pytest_collection_modifyitems(items):
  rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
