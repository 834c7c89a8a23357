"""Mask-rate and mixture-weight schedules: pure functions of the traced step (never recompile).

The rate only changes traced values (the per-row budget), never a shape, so one compiled step
serves every rate; `max_predictions` must be sized for the schedule's highest rate.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections


def _progress(step: jax.Array, steps: int) -> jax.Array:
  """[] f32 in [0, 1]: share of the schedule done at `step`."""
  return jnp.clip(jnp.asarray(step, jnp.float32) / max(int(steps), 1), 0.0, 1.0)


def mask_rate(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
  """[] f32 mask rate at `step`.

  constant: `config.rate`. linear: start -> end over `schedule.steps`, then end.
  cosine: end + (start - end) * (1 + cos(pi t)) / 2, t = step / steps; with start = 2p + 0.02 and
  end = 0.02 this is the masking-ratio decay p (1 + cos(pi t)) + 0.02 of Yang et al. (2023).
  """
  sched = config.schedule
  if sched.kind == "constant":
    return jnp.asarray(config.rate, jnp.float32)
  t = _progress(step, sched.steps)
  if sched.kind == "linear":
    rate = sched.start + (sched.end - sched.start) * t
  elif sched.kind == "cosine":
    rate = sched.end + (sched.start - sched.end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
  else:
    raise ValueError(f"unknown schedule.kind {sched.kind!r}; use constant, linear or cosine")
  return jnp.clip(rate, 0.0, 1.0).astype(jnp.float32)


def max_rate(config: ml_collections.ConfigDict) -> float:
  """The highest rate the schedule reaches (to size max_predictions)."""
  sched = config.schedule
  if sched.kind == "constant":
    return float(config.rate)
  return float(min(1.0, max(sched.start, sched.end)))


# Extra slots `required_predictions` sizes for fill="whole": the unit that reaches the budget
# is taken whole, overshooting by up to its length less one (a 5-word PMI n-gram of one-token
# words: 4). Longer overshoots are cut at max_predictions and counted in num_clipped.
WHOLE_UNIT_ALLOWANCE = 4


def required_predictions(config: ml_collections.ConfigDict, seq_len: int) -> int:
  """The most tokens the budget can ask of one full row of `seq_len` at the schedule's highest
  rate: what `max_predictions` must hold for nothing to be clipped.

  A row counts at most seq_len - 2 tokens ([CLS] and [SEP] are special), or seq_len with
  `count_specials`. "exact" rounds half to even, "ceil" and "prob_round" reach the ceiling;
  "bernoulli" draws the count at random, so only its mean is required here (its tail beyond P
  is clipped and counted in the `budget_clipped` metric). "per_unit" draws whole units: the
  mean plus three standard deviations of a per-token draw (units of several tokens spread it a
  little more; the rare rest is clipped and counted). `fill="whole"` may overshoot the budget
  by a unit less one token: WHOLE_UNIT_ALLOWANCE more.
  """
  rate = max_rate(config)
  n = seq_len if config.count_specials else max(seq_len - 2, 0)
  x = rate * n
  if config.count_mode == "per_unit":
    count = math.ceil(x + 3 * math.sqrt(n * rate * (1 - rate)))
  else:
    count = {"exact": round(x), "bernoulli": round(x)}.get(config.count_mode,
                                                             math.ceil(x - 1e-9))
  if config.fill == "whole":
    count += WHOLE_UNIT_ALLOWANCE
  return max(int(count), 1 if config.min_one else 0)


def mixture_weights(weights: Sequence[float], final_weights: Sequence[float], steps: int,
                    step: jax.Array) -> jax.Array:
  """[M] f32 mixture weights at `step`: linear from `weights` to `final_weights` (if given)."""
  w0 = jnp.asarray(weights, jnp.float32)
  if not final_weights:
    return w0
  return w0 + (jnp.asarray(final_weights, jnp.float32) - w0) * _progress(step, steps)
