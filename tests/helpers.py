"""Helpers shared by tests: configs as the command line loads them, small corpora."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np

from mlmjax.data import pipeline

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str = "quickstart", arg: str | None = None):
  """`get_config([arg])` of `configs/<name>.py`, as `--config=configs/<name>.py[:arg]` loads it."""
  spec = importlib.util.spec_from_file_location(f"configs.{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def write_corpus(path: pathlib.Path, num_docs: int = 120, seed: int = 0) -> pathlib.Path:
  """A small synthetic .txt corpus (documents separated by blank lines) with real structure."""
  rng = np.random.default_rng(seed)
  subjects = ["the parser", "a function", "this module", "the list", "each object", "the server"]
  verbs = ["returns", "raises", "reads", "writes", "sorts", "creates"]
  objects = ["a new string", "the first item", "an error", "the file name", "a copy of the data"]
  docs = []
  for _ in range(num_docs):
    sentences = [f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {rng.choice(objects)}."
                 for _ in range(rng.integers(2, 8))]
    docs.append(" ".join(sentences))
  path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
  return path


def tiny_config(tmp_path: pathlib.Path):
  """The quickstart config shrunk to run in seconds on a synthetic corpus."""
  config = load_config("quickstart")
  config.data.source = "files"
  config.data.paths = str(write_corpus(tmp_path / "corpus.txt"))
  config.data.vocab_size = 200
  config.data.seq_len = 32
  config.data.validation_fraction = 0.1
  config.masking.max_predictions = 6
  # Dropout on (the quickstart trains without): determinism and resume tests cover its keys.
  config.model.update(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      max_position_embeddings=32, hidden_dropout=0.1)
  config.train.update(batch_size=8, steps=6, warmup_steps=2, log_every=2, eval_every=3,
                      eval_batches=2, checkpoint_every=3, keep_checkpoints=3)
  return config


# A run of the real command line, shrunk to seconds (use with `config.data.paths=<corpus>`).
TRAIN_CLI = "import sys; sys.argv[0] = 'mlmjax-train'; from mlmjax import cli; cli.train()"
TINY_OVERRIDES = (
    "--config.data.source=files", "--config.data.vocab_size=200", "--config.data.seq_len=32",
    "--config.data.validation_fraction=0.1", "--config.masking.max_predictions=6",
    "--config.model.hidden_size=32", "--config.model.num_layers=2", "--config.model.num_heads=2",
    "--config.model.intermediate_size=64", "--config.model.max_position_embeddings=32",
    "--config.model.hidden_dropout=0.1",
    "--config.train.batch_size=8", "--config.train.warmup_steps=1", "--config.train.log_every=2",
    "--config.train.eval_every=0", "--config.train.eval_batches=1")


def annotation_spans(ids: np.ndarray, rng: np.random.Generator, every: int = 12,
                     first_word_id: int = 5) -> np.ndarray:
  """[B, S] synthetic annotation spans (entities, n-grams) of 2-3 tokens, numbered per row,
  only over word tokens (ids >= first_word_id)."""
  spans = np.zeros(ids.shape, np.int32)
  for r in range(ids.shape[0]):
    k = 0
    for start in range(1 + rng.integers(0, every), ids.shape[1] - 4, every):
      end = start + rng.integers(2, 4)
      if (ids[r, start:end] >= first_word_id).all():
        k += 1
        spans[r, start:end] = k
  return spans


def split_arrays(data_dir, split: str) -> dict[str, np.ndarray]:
  """Every prepared field of a split as one in-memory array [N, S] (its parts end to end)."""
  rows = pipeline.PackedRows(str(data_dir), split)
  return rows.rows(0, len(rows))


def tiny_wordpiece(vocab_size: int = 99):
  """A BERT WordPiece tokenizer over a made-up vocabulary: the specials (ids 0-4), a-z, w0..."""
  from tokenizers import (  # pylint: disable=g-import-not-at-top
      Tokenizer, models, normalizers, pre_tokenizers, processors)
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(ord("a") + i) for i in range(26)]
  vocab += [f"w{i}" for i in range(vocab_size - len(vocab))]
  tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  return tok


# ------------------------------------------------------------------ runs of the command line


# The reference run of the reliability tests (conftest.straight_run): 12 steps, saved each step.
STRAIGHT_ARGS = ("--config.train.steps=12", "--config.train.checkpoint_every=1")


def train_cmd(workdir, corpus, *extra) -> list[str]:
  """mlmjax-train on `corpus` at the tiny shapes, in a subprocess."""
  return [sys.executable, "-c", TRAIN_CLI, f"--workdir={workdir}",
          f"--config.data.paths={corpus}", *TINY_OVERRIDES, *extra]


def cli_env(devices: int = 1) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def run_ok(cmd, devices: int = 1) -> subprocess.CompletedProcess:
  """Runs a command line to success (its stderr's end is the assertion message otherwise)."""
  out = subprocess.run(cmd, env=cli_env(devices), capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def run_fails(cmd, devices: int = 1) -> str:
  """Runs a command line that must fail with one clear message: its stderr, checked to hold
  mlmjax's error line and no Python traceback."""
  out = subprocess.run(cmd, env=cli_env(devices), capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 1, (out.returncode, out.stderr[-3000:])
  assert "mlmjax: error: " in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
  return out.stderr


def steps_in(workdir) -> list[int]:
  """The committed checkpoint steps of a local workdir."""
  root = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def params_of(workdir) -> dict:
  """The parameters of a workdir's latest checkpoint, by name."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from mlmjax import inference  # pylint: disable=g-import-not-at-top
  model, _, _ = inference.load_trained(str(workdir))
  return {"/".join(map(str, p)): np.asarray(v[...])
          for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def assert_same_params(a, b) -> None:
  a, b = params_of(a), params_of(b)
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(b[name], a[name], err_msg=name)
