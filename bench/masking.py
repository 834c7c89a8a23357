r"""Masking benchmark: every strategy, jitted, against Hugging Face's collator on the same CPU.

    mlmjax-bench-masking                       # or: python -m mlmjax.cli bench-masking
    mlmjax-bench-masking --shapes=256x128 --bench_iters=50

Prints tokens/s per strategy at each batch shape [B, S]. Our maskers run jitted with the batch
already on the device (as inside the train step); each call is timed to completion (blocking),
and the median is reported. The Hugging Face rows time `DataCollatorForLanguageModeling` called
as a DataLoader would, on pre-tokenized examples that carry `special_tokens_mask` (its fast path)
and, for whole-word masking, `offset_mapping`. Contextual masking reads a random [V, 64] table.
Text: docstrings of the Python standard library, tokenized with a WordPiece vocabulary trained on
them (8192 ids); nothing is downloaded.
"""

from __future__ import annotations

import importlib
import inspect
import statistics
import time
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mlmjax import masking

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_MODULES = ("os", "re", "json", "inspect", "typing", "collections", "itertools", "functools",
            "pathlib", "subprocess", "argparse", "logging", "threading", "asyncio", "email",
            "http.client", "urllib.request", "unittest", "decimal", "fractions", "statistics",
            "datetime", "calendar", "string", "textwrap", "difflib", "shutil", "tarfile",
            "zipfile", "csv", "sqlite3", "pickle", "socket", "ssl", "dataclasses", "enum")


def corpus() -> list[str]:
  """Docstrings of standard-library modules and their members: offline English text."""
  texts = []
  for name in _MODULES:
    try:
      module = importlib.import_module(name)
    except ImportError:
      continue
    for obj in [module] + [getattr(module, a, None) for a in dir(module)]:
      doc = inspect.getdoc(obj) if obj is not None else None
      if doc and len(doc) > 40:
        texts.append(doc)
  return list(dict.fromkeys(texts))  # dedupe, keep order


def train_tokenizer(texts: list[str], vocab_size: int = 8192) -> Any:
  """An uncased WordPiece `tokenizers.Tokenizer` trained on `texts`."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                      show_progress=False)
  tok.train_from_iterator(texts, trainer)
  return tok


def pack_rows(tok: Any, texts: list[str], batch: int, length: int) -> dict[str, np.ndarray]:
  """[B, S] rows "[CLS] tokens [SEP]" packed from the texts, with offsets, as group_texts does."""
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  ids, offsets = [], []
  for enc in tok.encode_batch(texts, add_special_tokens=False):
    ids += enc.ids
    offsets += enc.offsets
  body = length - 2
  need = batch * body
  reps = -(-need // len(ids))
  ids, offsets = (ids * reps)[:need], (offsets * reps)[:need]
  ids = np.asarray(ids, np.int32).reshape(batch, body)
  offsets = np.asarray(offsets, np.int64).reshape(batch, body, 2)
  rows = np.concatenate([np.full((batch, 1), cls), ids, np.full((batch, 1), sep)], 1)
  zeros = np.zeros((batch, 1, 2), np.int64)
  return {"input_ids": rows.astype(np.int32),
          "offset_mapping": np.concatenate([zeros, offsets, zeros], 1)}


def annotations(rows: np.ndarray, tables: masking.VocabTables, seed: int = 0) -> dict:
  """Synthetic entity / phrase / n-gram spans (2-3 words, ~1 per 20 tokens each; phrases off
  the entities) for the annotated strategies."""
  rng = np.random.default_rng(seed)
  starts = np.asarray(tables.is_word_start)[rows] & ~np.asarray(tables.is_special)[rows]
  spans = np.zeros(rows.shape, np.int32)
  for r in range(rows.shape[0]):
    words = np.flatnonzero(starts[r])
    chosen = np.sort(rng.choice(len(words) - 4, size=max(1, len(words) // 15), replace=False))
    k, last_end = 0, -1
    for w in chosen:
      if words[w] <= last_end:
        continue
      end = words[w + rng.integers(2, 4)]
      k += 1
      spans[r, words[w]:end] = k
      last_end = end
  # Phrases: the spans moved one word on, kept where they miss the entities.
  shifted = np.roll(spans, 3, axis=1)
  phrases = np.where((spans == 0) & (shifted > 0), shifted, 0).astype(np.int32)
  return {"entity_ids": spans, "phrase_ids": phrases, "ngram_ids": spans}


def time_call(fn: Callable[[int], Any], iters: int, warmup_s: float = 1.0) -> float:
  """Median seconds of fn(i), each call run to completion, after `warmup_s` of warm-up calls.

  Warm-up is by time, not by count: the first strategy timed otherwise also pays for the
  thread pool and caches warming up (it measured ~1/3 slower than the same function timed
  second).
  """
  start = time.perf_counter()
  while time.perf_counter() - start < warmup_s:
    jax.block_until_ready(fn(0))
  times = []
  for i in range(1, iters + 1):
    start = time.perf_counter()
    jax.block_until_ready(fn(i))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_strategy(name: str, tables: masking.VocabTables, batch: dict, iters: int,
                  hidden: jax.Array) -> float:
  config = masking.default_config()
  config.strategy = name
  b, s = batch["input_ids"].shape
  config.max_predictions = int(round(0.15 * s)) + 4
  masker = jax.jit(masking.make_masker(config, tables))
  state = masking.init_state(config, tables)
  key = jax.random.key(0)
  return time_call(lambda i: masker(key, batch, i, state, hidden), iters)


def time_hf(tok: Any, rows: dict[str, np.ndarray], whole_word: bool, tensors: str,
            iters: int) -> float | None:
  """Median seconds of one Hugging Face collator call on B pre-tokenized examples."""
  try:
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast
  except ImportError:
    return None
  hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "random replacement not supported with whole words"
    collator = DataCollatorForLanguageModeling(hf_tok, whole_word_mask=whole_word,
                                               return_tensors=tensors, seed=0)
  special = set(hf_tok.all_special_ids)
  examples = []
  for r, ids in enumerate(rows["input_ids"].tolist()):
    ex = {"input_ids": ids, "special_tokens_mask": [int(i in special) for i in ids]}
    if whole_word:
      ex["offset_mapping"] = [tuple(o) for o in rows["offset_mapping"][r].tolist()]
    examples.append(ex)
  return time_call(lambda _: collator(examples), iters)


def run(shapes: list[tuple[int, int]], strategies: list[str], iters: int) -> list[dict]:
  """Measurements: one dict per (row label, shape) with seconds per batch."""
  texts = corpus()
  tok = train_tokenizer(texts)
  freq = np.zeros(tok.get_vocab_size(), np.float32)
  results = []
  for b, s in shapes:
    rows = pack_rows(tok, texts, b, s)
    ids = rows["input_ids"]
    np.add.at(freq, ids.ravel(), 1.0)
    df = np.zeros_like(freq)
    for row in ids:
      df[np.unique(row)] += 1
    tables = masking.VocabTables.from_tokenizer(tok, frequency=freq,
                                                idf=np.log((1 + len(ids)) / (1 + df)) + 1)
    batch = {"input_ids": ids, **annotations(ids, tables)}
    batch = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()})
    # Contextual masking reads the model's hidden states; stand-ins of a small model's width
    # (the forward pass that makes them is the train step's cost: mlmjax-bench-train).
    hidden = jax.random.normal(jax.random.key(1), (*batch["input_ids"].shape, 64))
    for name in strategies:
      results.append({"name": name, "shape": (b, s),
                      "seconds": time_strategy(name, tables, batch, iters, hidden)})
    for whole_word in (False, True):
      for tensors in ("np", "pt"):
        label = f"HF collator{' whole_word_mask' if whole_word else ''} ({tensors})"
        results.append({"name": label, "shape": (b, s),
                        "seconds": time_hf(tok, rows, whole_word, tensors, iters)})
  return results


def table(results: list[dict], shapes: list[tuple[int, int]]) -> str:
  """Markdown table: tokens/s per row and shape, and the speed-up over the HF "np" collator."""
  def rate(r):
    return None if r["seconds"] is None else r["shape"][0] * r["shape"][1] / r["seconds"]
  by = {(r["name"], r["shape"]): r for r in results}
  base = {shape: (by.get(("HF collator (np)", shape)), by.get(("HF collator whole_word_mask (np)",
                                                               shape))) for shape in shapes}
  head = ["what"] + [f"[{b},{s}] tokens/s" for b, s in shapes] + [f"x HF [{b},{s}]"
                                                                   for b, s in shapes]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in dict.fromkeys(r["name"] for r in results):
    cells = [name]
    for shape in shapes:
      x = rate(by[(name, shape)])
      cells.append("transformers not installed" if x is None else f"{x / 1e6:.1f}M")
    for shape in shapes:
      plain, whole = base[shape]
      ref = whole if name in ("whole_word",) or "whole_word_mask" in name else plain
      x, y = rate(by[(name, shape)]), (rate(ref) if ref else None)
      cells.append(f"{x / y:.1f}x" if x and y else "-")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
