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

import helpers  # noqa: E402
from helpers import tiny_config  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
  """The quickstart config shrunk to run in seconds on a synthetic corpus in `tmp_path`."""
  return tiny_config(tmp_path)


# The folders where data.spacy_pipeline="auto" looks for pipeline packages in the tests.
_SPACY_SITE = []


@pytest.fixture(scope="session", autouse=True)
def _spacy_auto_sees_only_the_tests_packages():
  """`data.spacy_pipeline="auto"` finds only the pipeline packages a test installs for itself
  (`spacy_site`), never the machine's (an installed en_core_web_sm would win "auto" and change
  what every annotating test gets): with none, "auto" is the rules, as on a machine without one.

  Session-wide, so module fixtures see it too; in this process only: a subprocess the test
  starts sees the machine's packages, so pin its data.spacy_pipeline (spawned preparation
  workers resolve nothing: they load the pipeline the parent resolved).
  """
  spacy_annotator = importlib.import_module("mlmjax.data.spacy_annotator")  # not spaCy
  discover = spacy_annotator.installed_english_pipelines
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(spacy_annotator, "installed_english_pipelines",
                  lambda path=_SPACY_SITE: discover(path))  # path=None: sys.path, the machine's
    yield


@pytest.fixture
def spacy_site():
  """The folders where "auto" finds pipeline packages in this test: append a test's own
  site-packages folder (`spacy_fixture.install_pipeline(..., site=spacy_site)`); emptied after
  the test."""
  yield _SPACY_SITE
  _SPACY_SITE.clear()


@pytest.fixture
def spacy_package(tmp_path, monkeypatch, spacy_site):
  """A small English spaCy pipeline installed as a package for this test; its name.

  The pipeline (tests/data/spacy_fixture.py) tags and parses plain sentences and finds a few
  entities; `spacy.load(name)` and `data.spacy_pipeline="auto"` find it ("auto" finds no other:
  `spacy_site`). Its folder, `tmp_path / "site-packages"`, is on sys.path; a subprocess finds
  it with that folder on PYTHONPATH, by its name (its "auto" would see the machine's too).
  """
  spacy_fixture = importlib.import_module("data.spacy_fixture")  # imports spaCy: only here
  return spacy_fixture.install_pipeline(tmp_path / "site-packages", monkeypatch, site=spacy_site)


# The slowest files first (minutes each: real processes, many compiles): the two xdist workers
# (pytest.ini) take files in collection order, and longest-first lets them finish together.
SLOWEST_FIRST = ("tests/test_checkpoint.py", "tests/bench/test_gpu_report.py",
                 "tests/test_faults.py", "tests/train/test_no_shared_disk.py",
                 "tests/train/test_partition.py", "tests/experiments/test_compare.py",
                 "tests/convert/test_families.py",
                 "tests/train/test_multiprocess.py", "tests/test_object_store.py",
                 "tests/test_cli.py")


def pytest_collection_modifyitems(items):
  rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable


@pytest.fixture(scope="module")
def gcs():
  """A real GCS emulator (fake-gcs-server) on a loopback port, for this test module.

  Yields the environment a client needs to reach it, nothing else: `STORAGE_EMULATOR_HOST`
  (gcsfs, google-cloud-storage) and `TENSORSTORE_GCS_HTTP_URL` (TensorStore, Orbax's arrays),
  set in this process and to be passed to subprocesses. The bucket `mlmjax-test` exists.
  """
  gcs_fixture = importlib.import_module("gcs_fixture")
  with gcs_fixture.emulator() as env:
    yield env


@pytest.fixture(scope="session")
def reliability_corpus(tmp_path_factory):
  """The corpus of the reliability tests' runs (tests/test_checkpoint.py, test_faults.py)."""
  return helpers.write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory, reliability_corpus):
  """An uninterrupted 12-step run of the command line, checkpointing every step: what every
  interrupted and resumed run must end bit-identical to."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  helpers.run_ok(helpers.train_cmd(workdir, reliability_corpus, *helpers.STRAIGHT_ARGS))
  return workdir
