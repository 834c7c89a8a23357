"""Helpers shared by tests: configs as the command line loads them, small corpora."""

import importlib.util
import pathlib

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
