"""Optax AdamW with linear warmup, linear or cosine decay, clipping and no decay on norms/biases."""

import jax
import optax


def learning_rate_schedule(train_config) -> optax.Schedule:
  """Linear warmup to the peak, then linear (BERT) or cosine decay to a fraction of it."""
  peak, total = train_config.learning_rate, max(int(train_config.steps), 1)
  warmup = min(int(train_config.warmup_steps), total)
  end = peak * train_config.end_learning_rate_fraction
  decay_kind = train_config.schedule
  if decay_kind == "linear":
    decay = optax.linear_schedule(peak, end, max(total - warmup, 1))
  elif decay_kind == "cosine":
    alpha = end / peak if peak else 0.0
    decay = optax.cosine_decay_schedule(peak, max(total - warmup, 1), alpha=alpha)
  else:
    raise ValueError(f"config.train.schedule must be 'linear' or 'cosine', got {decay_kind!r}")
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(params):
  """Weight decay on matrices (kernels, embeddings) only, as BERT does: not on biases or norms."""
  def is_matrix(path, _):
    # Paths end in the parameter's name, then (for nnx.State) the Variable's `.value`.
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return names[-1] in ("kernel", "embedding")
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(train_config) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(train_config)
  return optax.chain(
      optax.clip_by_global_norm(train_config.clip_norm),
      optax.adamw(schedule, b1=train_config.adam_b1, b2=train_config.adam_b2,
                  eps=train_config.adam_eps, weight_decay=train_config.weight_decay,
                  mask=decay_mask))
