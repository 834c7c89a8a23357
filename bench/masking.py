r"""Masking benchmark: each strategy alone, jitted, and Hugging Face's collator on the same rows.

    python -m bench.masking                                   # [256,128] and [64,512], this CPU
    python -m bench.masking --shapes=256x128 --bench_iters=50 --strategies=random,whole_word

Rows: the embedded corpus (Python's documentation) prepared as training prepares it
(`mlmjax.data.prepare`: a WordPiece tokenizer of 8192 ids, full-sentence packing, every
annotation by the rules, PMI n-grams, and the token statistics the tables carry), once per row
length, in --workdir (kept: the next run reuses it); the first B training rows of it.

Ours: each strategy's masker jitted, the batch already on the device (as inside the train
step), each call run to completion; the median of --bench_iters calls after 1 s of warm-up.
Contextual masking reads random stand-in hidden states of width 64 (the forward pass that makes
them is part of the train step's figure: `bench.train`).
HF: `DataCollatorForLanguageModeling` called as a DataLoader would, on the same rows as
pre-tokenized examples with `special_tokens_mask` (its fast path), the same way timed; for
whole-word masking also `offset_mapping`, made from our word starts so that its words are ours.

`time_strategy` is also what `bench.train --masking` times on the train step's own batch.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import time
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from bench import harness
from mlmjax import config as mlmjax_config
from mlmjax import masking
from mlmjax.data import annotate, pipeline, prepare
from mlmjax.data import stats as data_stats
from mlmjax.data import tokenizer as tokenizer_lib

VOCAB_SIZE = 8192
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------- rows


def prepared_rows(seq_len: int, batch: int, workdir: str, paths: str = "",
                  tokenizer_path: str = "") -> tuple[dict, masking.VocabTables, Any]:
  """(rows [B, S] of every field, tables, tokenizer) of the corpus prepared at `seq_len`.

  `paths`: the corpus files ("" for the embedded corpus); `tokenizer_path`: a tokenizer.json to
  use instead of training one. Fewer training rows than B are repeated.
  """
  data = mlmjax_config.default_config().data
  data.update(source="files" if paths else "embedded", paths=paths, seq_len=seq_len,
              vocab_size=VOCAB_SIZE, annotations=annotate.ANNOTATIONS, spacy_pipeline="",
              tokenizer_path=tokenizer_path)
  manifest = prepare.prepare(data, workdir)
  tok = tokenizer_lib.get_tokenizer(data, workdir)
  split = pipeline.PackedRows(manifest["data_dir"], "train")
  rows = split.rows(0, min(batch, len(split)))
  rows = {k: np.resize(v, (batch, seq_len)) for k, v in rows.items()}
  return rows, data_stats.vocab_tables(tok, manifest), tok


def word_offsets(ids: np.ndarray, tables: masking.VocabTables) -> np.ndarray:
  """int64 [B, S, 2] character offsets with which HF's collator finds our words.

  HF starts a word where a token does not begin where the one before it ended: so one
  character of gap before each word start, none before a continuation piece.
  """
  starts = np.asarray(tables.is_word_start)[ids]
  begin = np.arange(ids.shape[1]) + np.cumsum(starts, axis=1)
  return np.stack([begin, begin + 1], axis=-1).astype(np.int64)


# ----------------------------------------------------------------------------- timing


def _unrolled(masker: Callable, unroll: int) -> Callable:
  """(key, step0, batch, state, hidden) -> `unroll` MaskedBatches of steps step0, step0 + 1, ...

  The arrays are arguments, not closed over: XLA would otherwise embed them as constants.
  """
  def many(key, step0, batch, state, hidden):
    return [masker(key, batch, step0 + i, state, hidden) for i in range(unroll)]
  return jax.jit(many)


def time_strategy(mask_config: ml_collections.ConfigDict, tables: masking.VocabTables,
                  batch: dict, hidden: jax.Array, iters: int, unroll: int = 1,
                  windows: int = 1, warmup_s: float = 0.0) -> dict:
  """The masking record of `mask_config.strategy` on `batch` (arrays on the device).

  `unroll` masker calls at different steps (so different masks) run in one jitted program;
  `iters` programs are timed in `windows` windows. A window per program times a call's latency,
  dispatch included (beside HF's collator); one window for all amortises the launch cost away,
  as inside the train step.
  """
  many = _unrolled(masking.make_masker(mask_config, tables), unroll)
  args = (batch, masking.init_state(mask_config, tables), hidden)
  key = jax.random.key(0)
  start = time.perf_counter()
  compiled = many.lower(key, jnp.int32(0), *args).compile()
  compile_s = time.perf_counter() - start
  steps = itertools.cycle([jnp.int32(unroll * i) for i in range(1, iters + 1)])  # made untimed
  times = harness.time_calls(lambda: compiled(key, next(steps), *args), jax.block_until_ready,
                             iters, windows, warmup=1, warmup_s=warmup_s)
  call_s = statistics.median(times) / unroll
  b, s = batch["input_ids"].shape
  return {"kind": "masking", "name": mask_config.strategy, "model": "", "batch": b, "seq_len": s,
          "tokens_per_s": b * s / call_s, "step_ms": call_s * 1e3, "compile_s": compile_s,
          "max_predictions": mask_config.max_predictions, "unroll": unroll, "iters": iters,
          "device": jax.devices()[0].device_kind}


def time_collator(tok: Any, rows: dict, tables: masking.VocabTables, whole_word: bool,
                  tensors: str, iters: int, warmup_s: float = 0.0) -> float | None:
  """Median seconds of one HF collator call on the rows (None without transformers)."""
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
  ids = rows["input_ids"]
  special = np.asarray(tables.is_special)[ids].astype(int).tolist()
  offsets = word_offsets(ids, tables).tolist()
  examples = [{"input_ids": row, "special_tokens_mask": special[r],
               **({"offset_mapping": [tuple(o) for o in offsets[r]]} if whole_word else {})}
              for r, row in enumerate(ids.tolist())]
  times = harness.time_calls(lambda: collator(examples), lambda _: None, iters, iters,
                             warmup=1, warmup_s=warmup_s)
  return statistics.median(times)


def run(shapes: list[tuple[int, int]], strategies: list[str], iters: int, workdir: str,
        paths: str = "", warmup_s: float = 1.0) -> list[dict]:
  """One masking record per strategy and HF collator at each shape [B, S]."""
  records, tokenizer_path = [], ""
  for b, s in shapes:
    rows, tables, tok = prepared_rows(s, b, os.path.join(workdir, f"s{s}"), paths,
                                      tokenizer_path)
    # Every length shares the first one's tokenizer (trained once).
    tokenizer_path = tokenizer_path or os.path.join(workdir, f"s{s}", "tokenizer",
                                                    "tokenizer.json")
    batch = jax.device_put({k: jnp.asarray(v) for k, v in rows.items()})
    hidden = jax.random.normal(jax.random.key(1), (b, s, 64))
    for name in strategies:
      config = masking.default_config()
      config.update(strategy=name, max_predictions=int(round(0.15 * s)) + 4)
      records.append(time_strategy(config, tables, batch, hidden, iters, windows=iters,
                                   warmup_s=warmup_s))
    for whole_word, tensors in itertools.product((False, True), ("np", "pt")):
      seconds = time_collator(tok, rows, tables, whole_word, tensors, iters, warmup_s)
      records.append({"kind": "masking", "model": "", "batch": b, "seq_len": s,
                      "name": f"HF collator{' whole_word_mask' if whole_word else ''} ({tensors})",
                      "tokens_per_s": seconds and b * s / seconds,
                      "step_ms": seconds and seconds * 1e3})
  return records


# ----------------------------------------------------------------------------- output


def table(records: list[dict], shapes: list[tuple[int, int]]) -> str:
  """Markdown: tokens/s per strategy and shape, and the speed-up over HF's "np" collator
  (whole_word over the whole-word collator, the rest over the plain one)."""
  rate = {(r["name"], (r["batch"], r["seq_len"])): r["tokens_per_s"] for r in records}
  head = (["what"] + [f"[{b},{s}] tokens/s" for b, s in shapes]
          + [f"x HF [{b},{s}]" for b, s in shapes])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in dict.fromkeys(r["name"] for r in records):
    whole = name == "whole_word" or "whole_word_mask" in name
    reference = "HF collator whole_word_mask (np)" if whole else "HF collator (np)"
    cells = [name]
    for shape in shapes:
      x = rate[(name, shape)]
      cells.append("transformers not installed" if x is None else f"{x / 1e6:.1f}M")
    for shape in shapes:
      x, y = rate[(name, shape)], rate.get((reference, shape))
      cells.append(f"{x / y:.1f}x" if x and y else "-")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(_):
  logging.set_verbosity(logging.WARNING)
  shapes = [tuple(int(x) for x in shape.split("x")) for shape in FLAGS.shapes]
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {len(jax.devices())} device(s)")
  records = run(shapes, FLAGS.strategies or list(masking.SPECS), FLAGS.bench_iters,
                FLAGS.workdir, FLAGS.paths)
  harness.write_records(FLAGS.json_out, records)
  print(table(records, shapes))


if __name__ == "__main__":
  flags.DEFINE_list("shapes", ["256x128", "64x512"], "batch shapes BxS to time")
  flags.DEFINE_integer("bench_iters", 200, "timed calls per case (the median is kept)")
  flags.DEFINE_list("strategies", [], "strategies to time (default: all)")
  flags.DEFINE_string("workdir", os.path.join(tempfile.gettempdir(), "mlmjax_bench_masking"),
                      "where the corpus is prepared, once per row length (kept)")
  flags.DEFINE_string("paths", "", "corpus files (.txt, .jsonl, ...); empty: the embedded one")
  flags.DEFINE_string("json_out", "", "write the records (a JSON list) here")
  app.run(main)
