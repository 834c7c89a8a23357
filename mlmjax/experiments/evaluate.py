"""Cross-evaluation: fixed masks per evaluation masking, drawn once, and models scored on them.

The masks of an evaluation masking are a function of the key, the held-out rows and the vocabulary
tables only, never of a model: they are drawn once and every model is scored on the very same
masked batches (their hash is recorded with each score, so a reader can check it).
"""

from __future__ import annotations

import functools
import hashlib

import jax
import ml_collections
import numpy as np
from flax import nnx

from mlmjax import masking
from mlmjax.data import pipeline
from mlmjax.train import loop, step as step_lib

MASKED_FIELDS = ("input_ids", "positions", "labels", "weights")


# ----------------------------------------------------------------------------- the masks


def eval_masking_config(config: ml_collections.ConfigDict,
                        name: str) -> ml_collections.ConfigDict:
  """The masking config of one evaluation masking: the training one with `name`, at step 0.

  A constant rate (a schedule's rate at step 0 would not be the budget the table claims) and
  the evaluation replacement mix (`compare.eval_mask_prob` / `eval_random_prob`).
  """
  cfg = ml_collections.ConfigDict(config.masking.to_dict())
  cfg.strategy = name
  cfg.schedule.kind = "constant"
  cfg.dynamic.mode = "every_step"
  cfg.mask_prob = config.compare.eval_mask_prob
  cfg.random_prob = config.compare.eval_random_prob
  return cfg


def eval_key(seed: int) -> jax.Array:
  """The evaluation masks' key (`compare.eval_seed`): the training loop's evaluation stream."""
  return jax.random.fold_in(jax.random.key(seed), loop.EVAL_STREAM)


def eval_rows(config: ml_collections.ConfigDict, data_dir: str) -> list[dict[str, np.ndarray]]:
  """The held-out batches every model is scored on: full batches of the validation split.

  Only full batches, so that each batch (the unit of the interval) holds as many rows.
  """
  size = config.compare.eval_batch_size
  available = len(pipeline.PackedRows(data_dir, "validation")) // size
  count = min(config.compare.eval_batches or available, available)
  if count < 2:
    raise ValueError(f"The validation split holds {available} full batch(es) of "
                     f"compare.eval_batch_size={size} rows; an interval needs at least 2. "
                     "Lower compare.eval_batch_size or raise data.validation_fraction.")
  return pipeline.eval_batches(data_dir, "validation", size, count, process_index=0,
                               process_count=1)


def draw_masks(mask_config: ml_collections.ConfigDict, tables: masking.VocabTables,
               rows: list[dict[str, np.ndarray]], key: jax.Array) -> list[dict[str, np.ndarray]]:
  """Batch i masked with fold_in(key, i) at step 0: {input_ids [B, S], positions, labels,
  weights [B, P]} per batch. A function of the key, rows and tables only: no model is read."""
  masker = jax.jit(masking.make_masker(mask_config, tables))
  masked = []
  for i, batch in enumerate(rows):
    out = masker(jax.random.fold_in(key, i), batch, 0)
    masked.append({f: np.asarray(getattr(out, f)) for f in MASKED_FIELDS})
  return masked


def masks_sha256(masked: list[dict[str, np.ndarray]]) -> str:
  """One hash of every masked input, position, label and weight: equal hashes, equal masks."""
  digest = hashlib.sha256()
  for batch in masked:
    for field in MASKED_FIELDS:
      digest.update(np.ascontiguousarray(batch[field]).tobytes())
  return digest.hexdigest()


def rows_sha256(rows: list[dict[str, np.ndarray]]) -> str:
  digest = hashlib.sha256()
  for batch in rows:
    digest.update(np.ascontiguousarray(batch["input_ids"]).tobytes())
  return digest.hexdigest()


def _gather(field: np.ndarray, positions: np.ndarray) -> np.ndarray:
  return np.take_along_axis(field, positions, axis=1)


def masks_profile(masked: list[dict[str, np.ndarray]], rows: list[dict[str, np.ndarray]],
                  baseline_token: int) -> dict:
  """What a masking predicts: how many tokens, the share inside entity spans and PMI n-grams,
  the mean length of runs of adjacent predicted tokens, and the most-frequent-token accuracy."""
  total, runs, baseline = 0.0, 0.0, 0.0
  inside = {"entity_ids": 0.0, "ngram_ids": 0.0}
  for m, batch in zip(masked, rows):
    w, pos = m["weights"], m["positions"]
    total += w.sum()
    # A run starts at a predicted slot whose position does not follow the previous slot's.
    follows = np.concatenate([np.zeros_like(pos[:, :1], bool), pos[:, 1:] == pos[:, :-1] + 1], 1)
    runs += (w * ~follows).sum()
    baseline += (w * (m["labels"] == baseline_token)).sum()
    for field in inside:
      if field in batch:
        inside[field] += (w * (_gather(batch[field], pos) > 0)).sum()
  share = lambda field: (float(inside[field] / max(total, 1.0))
                         if field in rows[0] else None)
  return {"predictions": int(total), "in_entities": share("entity_ids"),
          "in_ngrams": share("ngram_ids"), "run_length": float(total / max(runs, 1.0)),
          "baseline_accuracy": float(baseline / max(total, 1.0))}


def evaluation_masks(config: ml_collections.ConfigDict, name: str, tables: masking.VocabTables,
                     rows: list[dict[str, np.ndarray]], baseline_token: int) -> dict:
  """{"batches", "sha256", profile..., "error"} of one evaluation masking.

  A masking the prepared data cannot support (entity or PMI masking without entity_ids /
  ngram_ids) is reported with the masker's own message and the annotations to request: the
  column is marked unavailable, never filled in with another masking.
  """
  try:
    masked = draw_masks(eval_masking_config(config, name), tables, rows,
                        eval_key(config.compare.eval_seed))
  except ValueError as e:
    asked = tuple(config.data.annotations or ())
    return {"error": f"{e} (config.data.annotations is {asked}; request the annotation there)",
            "batches": None}
  return {"batches": masked, "sha256": masks_sha256(masked), "error": None,
          **masks_profile(masked, rows, baseline_token)}


# ------------------------------------------------------------------------------- scoring


@functools.partial(jax.jit, static_argnums=0)
def _score_batch(graphdef: nnx.GraphDef, params, masked: dict) -> dict:
  """Sums over one masked batch: loss, correct predictions, predictions."""
  return step_lib.score_sums(graphdef, params, masked["input_ids"], masked["positions"],
                             masked["labels"], masked["weights"])


def score(graphdef: nnx.GraphDef, params, masked: list[dict[str, np.ndarray]]) -> dict:
  """Per-batch mean loss, accuracy and prediction count of one model on fixed masked batches.

  Batches without a prediction (possible only for a masking that finds no unit) are left out.
  """
  loss, accuracy, predictions = [], [], []
  for batch in masked:
    sums = jax.device_get(_score_batch(graphdef, params, batch))
    count = float(sums["count"])
    if count > 0:
      loss.append(float(sums["loss_sum"]) / count)
      accuracy.append(float(sums["correct"]) / count)
      predictions.append(count)
  return {"loss": loss, "accuracy": accuracy, "predictions": predictions}
