"""Train and eval steps: pure functions of (state, batch, key), masking inside the jitted step.

The masker runs on device as part of the step, with the step number folded into its key, so the
masks are dynamic (new every step), free on the host and exactly reproducible. The loss is the
mean cross-entropy over the predicted slots (`weights` marks the real ones), as in BERT.
"""

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mlmjax import masking
from mlmjax.model import layers as model_layers
from mlmjax.model.layers import SPAN_BOUNDARY_POSITIONS

# MASK_STREAM is folded into the run key (the masker folds in the step itself: static masks
# need the run key without it), DROPOUT_STREAM into the step key.
MASK_STREAM, DROPOUT_STREAM = 0, 1


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied so far
  params: Any  # nnx.State of the model's parameters (float32)
  opt_state: Any  # optax state, sharded like the params
  mask_state: Any  # running state of the masking strategy (None for stateless strategies)
  skipped: jax.Array  # int32 scalar: updates skipped for a non-finite loss or gradient
  consecutive_skips: jax.Array  # int32 scalar: skipped updates since the last good one


def masking_hidden(graphdef: nnx.GraphDef, params, mask_config, batch: dict) -> jax.Array | None:
  """The model's [B, S, D] hidden states of the unmasked rows (`model.layers.hidden_states`), for the
  strategies that read them (contextual masking); None otherwise, at no cost."""
  if not masking.reads_hidden(mask_config):
    return None
  return model_layers.hidden_states(graphdef, params, batch["input_ids"])


def mlm_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array):
  """Weighted cross-entropy. logits [B, P, V] f32; labels [B, P]; weights [B, P].

  Returns (mean loss, per-slot loss [B, P], per-slot correct [B, P]). A slot is correct when its
  label's logit is the largest: the maximum the log-sum-exp needs anyway, so accuracy costs no
  extra pass over the [B, P, V] logits (an argmax would be one).
  """
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))  # a shift for stability, no gradient
  log_norm = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
  per_slot = log_norm - label_logit
  correct = (label_logit >= top).astype(jnp.float32)
  mean = jnp.sum(per_slot * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  return mean, per_slot, correct


def span_boundaries(positions: jax.Array, weights: jax.Array, seq_len: int):
  """The spans of the predicted positions, for SpanBERT's boundary objective.

  A span is a run of consecutive predicted positions (adjacent masked units are one span, as
  SpanBERT merges them). For each prediction slot: `left`, `right` [B, P] the positions just
  before and after its span, `offset` [B, P] its place in the span (0-based), and `valid`
  [B, P] f32, 1 where the slot is a boundary target (a real prediction whose span ends before
  the row does and within the head's SPAN_BOUNDARY_POSITIONS). Works on the [B, P] slots only
  (the positions are ascending): no pass over [B, S].
  """
  used = weights > 0
  slot = jnp.arange(positions.shape[1])
  # Slot j continues slot j - 1's span when both are used and their positions are adjacent.
  joined = used[:, 1:] & used[:, :-1] & (positions[:, 1:] == positions[:, :-1] + 1)
  continues = jnp.pad(joined, ((0, 0), (1, 0)))
  continued = jnp.pad(joined, ((0, 0), (0, 1)))
  first = jax.lax.cummax(jnp.where(continues, 0, slot), axis=1)  # the span's first slot
  last = jax.lax.cummin(jnp.where(continued, slot.shape[0] - 1, slot), axis=1, reverse=True)
  left = jnp.take_along_axis(positions, first, axis=1) - 1
  right = jnp.take_along_axis(positions, last, axis=1) + 1
  offset = slot - first
  valid = used & (right < seq_len) & (offset < SPAN_BOUNDARY_POSITIONS)
  return (jnp.maximum(left, 0), jnp.minimum(right, seq_len - 1),
          jnp.minimum(offset, SPAN_BOUNDARY_POSITIONS - 1), valid.astype(jnp.float32))


def microbatches(tree, k: int):
  """[B, ...] leaves -> [k, B/k, ...], microbatch i holding rows i, i+k, i+2k, ...

  Interleaved rather than contiguous: the rows of a batch are sharded over devices, so each
  microbatch keeps rows on every device.
  """
  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {k} microbatches; "
                       "make train.batch_size a multiple of train.grad_accum_steps")
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
  return jax.tree.map(split, tree)


def train_step(state: TrainState, batch: dict, key: jax.Array, *, graphdef: nnx.GraphDef,
               masker: Callable, tx: optax.GradientTransformation, mask_config,
               learning_rate: Callable, grad_accum_steps: int = 1) -> tuple[TrainState, dict]:
  """One optimizer update. `batch` holds global [B, S] arrays ("input_ids", annotations).

  The whole batch is masked first (per-row keys: masks do not depend on the mesh or on the
  accumulation), then gradients are summed over `grad_accum_steps` microbatches, each loss
  normalised by the whole batch's prediction count, so the update equals the unsplit one.
  With `masking.boundary_objective`, SpanBERT's span boundary loss (over the batch's boundary
  targets) is added to the MLM loss, as SpanBERT sums them.
  """
  step_key = jax.random.fold_in(key, state.step)
  masked = masker(jax.random.fold_in(key, MASK_STREAM), batch, state.step, state.mask_state,
                  masking_hidden(graphdef, state.params, mask_config, batch))
  dropout_key = jax.random.fold_in(step_key, DROPOUT_STREAM)
  num_predictions = jnp.sum(masked.weights)
  inputs = (masked.input_ids, masked.positions, masked.labels, masked.weights)
  boundary = masking.boundary_objective(mask_config)  # static: off, the step is MLM alone
  if boundary:
    spans = span_boundaries(masked.positions, masked.weights, masked.input_ids.shape[1])
    inputs += spans
    num_targets = jnp.sum(spans[-1])

  def loss_fn(params, micro, key):
    input_ids, positions, labels, weights = micro[:4]
    model = nnx.merge(graphdef, params)
    boundary_loss = jnp.zeros((), jnp.float32)
    if boundary:
      hidden = model.encode(input_ids, dropout_key=key)
      logits = model.logits(jnp.take_along_axis(hidden, positions[..., None], axis=1))
      left, right, offset, valid = micro[4:]
      _, per_target, _ = mlm_loss(model.span_boundary_logits(hidden, left, right, offset),
                                  labels, valid)
      boundary_loss = jnp.sum(per_target * valid) / jnp.maximum(num_targets, 1.0)
    else:
      logits = model(input_ids, positions, dropout_key=key)
    _, per_slot, correct = mlm_loss(logits, labels, weights)
    loss = jnp.sum(per_slot * weights) / jnp.maximum(num_predictions, 1.0)
    return loss + boundary_loss, (per_slot, correct, boundary_loss)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    (total, (per_slot, correct, boundary_loss)), grads = grad_fn(state.params, inputs,
                                                                dropout_key)
  else:
    def accumulate(grads, xs):
      micro, i = xs
      (total, aux), g = grad_fn(state.params, micro, jax.random.fold_in(dropout_key, i))
      return jax.tree.map(jnp.add, grads, g), (total, aux)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    grads, (totals, (per_slot, correct, boundary_losses)) = jax.lax.scan(
        accumulate, zeros, (microbatches(inputs, grad_accum_steps),
                            jnp.arange(grad_accum_steps)))
    total, boundary_loss = jnp.sum(totals), jnp.sum(boundary_losses)
    unsplit = lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])  # back to [B, P]
    per_slot, correct = unsplit(per_slot), unsplit(correct)
  loss = total - boundary_loss if boundary else total  # the MLM loss: comparable across runs

  grad_norm = optax.global_norm(grads)

  def update(params, opt_state, mask_state):
    updates, opt_state = tx.update(grads, opt_state, params)
    mask_state = masking.update_state(mask_config, mask_state, masked.labels,
                                      jax.lax.stop_gradient(per_slot), masked.weights)
    return optax.apply_updates(params, updates), opt_state, mask_state

  # A non-finite loss or gradient skips the whole update and is counted, not propagated. A
  # conditional on the scalar, not a select per leaf: a select reads the old and the new state
  # together, so XLA copies every buffer instead of updating it in place.
  finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
  params, opt_state, mask_state = jax.lax.cond(
      finite, update, lambda *old: old, state.params, state.opt_state, state.mask_state)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, mask_state=mask_state,
      skipped=state.skipped + (~finite).astype(jnp.int32),
      consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1))
  metrics = {
      "loss": loss,
      "accuracy": jnp.sum(correct * masked.weights) / jnp.maximum(num_predictions, 1.0),
      "grad_norm": grad_norm,
      "learning_rate": learning_rate(state.step),
      "predictions_per_row": num_predictions / masked.weights.shape[0],
      "budget_clipped": jnp.sum(masked.num_clipped).astype(jnp.float32),
      "skipped_updates": new_state.skipped.astype(jnp.float32),
      "consecutive_skips": new_state.consecutive_skips,
  }
  if boundary:
    metrics["boundary_loss"] = boundary_loss
  return new_state, metrics


# The logging window: per-step metrics summed on the device, carried from step to step as a few
# scalars and read where the loop blocks to log anyway, so a logged value is the window's mean
# (as HF Trainer, clu and MaxText report) and no step is held on the host.
MEANS_OVER_GOOD_STEPS = ("loss", "accuracy", "grad_norm", "boundary_loss")  # a skipped step
#   would make them NaN; boundary_loss only with masking.boundary_objective
MEANS_OVER_STEPS = ("predictions_per_row", "budget_clipped")
LAST_VALUES = ("learning_rate", "skipped_updates", "consecutive_skips")  # as of the last step


def empty_window(boundary_objective: bool = False) -> dict:
  """The sums of a window with no steps in it (of a step with the boundary objective, if so)."""
  zero = jnp.zeros((), jnp.float32)
  names = [n for n in MEANS_OVER_GOOD_STEPS + MEANS_OVER_STEPS + LAST_VALUES
           if n != "boundary_loss" or boundary_objective]
  return {**{name: zero for name in names},
          "steps": jnp.zeros((), jnp.int32), "good_steps": jnp.zeros((), jnp.int32)}


def add_to_window(window: dict, metrics: dict) -> dict:
  """The window's sums with one more step's metrics (a step skipped for a non-finite loss or
  gradient counts in `steps`, not in the means of its loss, accuracy and gradient norm)."""
  good = functools.reduce(jnp.logical_and, [jnp.isfinite(metrics[name])
                                            for name in MEANS_OVER_GOOD_STEPS if name in window])
  out = {name: window[name] + jnp.where(good, metrics[name], 0.0).astype(jnp.float32)
         for name in MEANS_OVER_GOOD_STEPS if name in window}
  out.update({name: window[name] + metrics[name] for name in MEANS_OVER_STEPS})
  out.update({name: jnp.asarray(metrics[name], window[name].dtype) for name in LAST_VALUES})
  out["steps"] = window["steps"] + 1
  out["good_steps"] = window["good_steps"] + good.astype(jnp.int32)
  return out


def window_means(window: dict) -> dict:
  """Host scalars of a window read from the device: the means, the last values, and
  `window_steps`, the steps it covers (the last window of a run may be short)."""
  steps, good = int(window["steps"]), int(window["good_steps"])
  scalars = {name: float(window[name]) / good if good else float("nan")
             for name in MEANS_OVER_GOOD_STEPS if name in window}
  scalars.update({name: float(window[name]) / max(steps, 1) for name in MEANS_OVER_STEPS})
  scalars.update({name: float(window[name]) for name in LAST_VALUES})
  scalars["window_steps"] = float(steps)
  return scalars


def train_step_in_window(state: TrainState, batch: dict, key: jax.Array, window: dict,
                         **step_args) -> tuple[TrainState, dict]:
  """`train_step`, its metrics added to the logging window: (new state, new window)."""
  state, metrics = train_step(state, batch, key, **step_args)
  return state, add_to_window(window, metrics)


def eval_step(params: Any, batch: dict, key: jax.Array, *, graphdef: nnx.GraphDef,
              masker: Callable, mask_config, mask_state: Any, baseline_token: int) -> dict:
  """Sums over one validation batch with fixed masks (the caller passes a fixed key).

  `baseline_token` is the training corpus's most frequent token: always predicting it is the
  trivial baseline the model's accuracy is compared with, on the very same masks.
  """
  masked = masker(key, batch, 0, mask_state,
                  masking_hidden(graphdef, params, mask_config, batch))
  sums = score_sums(graphdef, params, masked.input_ids, masked.positions, masked.labels,
                    masked.weights)
  sums["baseline_correct"] = jnp.sum((masked.labels == baseline_token) * masked.weights)
  return sums


def score_sums(graphdef: nnx.GraphDef, params, input_ids: jax.Array, positions: jax.Array,
               labels: jax.Array, weights: jax.Array) -> dict:
  """Sums over one masked batch, no dropout: `loss_sum`, `correct` predictions and `count`
  (the evaluation's and the comparison's scoring, experiments/evaluate.py)."""
  logits = nnx.merge(graphdef, params)(input_ids, positions)
  _, per_slot, correct = mlm_loss(logits, labels, weights)
  return {"loss_sum": jnp.sum(per_slot * weights), "correct": jnp.sum(correct * weights),
          "count": jnp.sum(weights)}
