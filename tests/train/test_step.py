"""The train step: a non-finite loss skips the update and is counted; no hidden transfers."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from helpers import load_config
from mlmjax import masking
from mlmjax.train import loop, optim, partition
from mlmjax.train import state as state_lib
from mlmjax.train import step as step_lib
from mlmjax.train.step import train_step

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]


@pytest.fixture(scope="module")
def setup():
  config = load_config("quickstart")
  config.data.seq_len = 16
  config.masking.max_predictions = 4
  config.model.update(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=16, hidden_dropout=0.1)  # its path checked too
  config.train.update(batch_size=4, steps=10, warmup_steps=1)
  tables = masking.VocabTables.from_vocab(VOCAB)
  c = state_lib.build(config, tables, len(VOCAB), 0)
  rng = np.random.default_rng(0)
  ids = rng.integers(5, len(VOCAB), (4, 16)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 2, 3
  return config, c, {"input_ids": jnp.asarray(ids)}


def poisoned(masker, poison_step):
  """A masker whose prediction weights are NaN at one step (a batch with a NaN loss)."""
  def wrapped(key, batch, step, state=None, hidden=None):
    out = masker(key, batch, step, state, hidden)
    nan = jnp.where(step == poison_step, jnp.nan, 1.0)
    return dataclasses.replace(out, weights=out.weights * nan)
  return wrapped


def test_nan_loss_is_skipped_counted_and_training_continues(setup):
  config, c, batch = setup
  step = jax.jit(functools.partial(
      train_step, graphdef=c.graphdef, masker=poisoned(c.masker, 1), tx=c.tx,
      mask_config=config.masking, learning_rate=optim.learning_rate_schedule(config.train)))
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    state = c.init_state(jax.random.key(0))
    state, m0 = step(state, batch, jax.random.key(0))  # step 0: fine
    before = jax.device_get(state.params)
    state, m1 = step(state, batch, jax.random.key(0))  # step 1: NaN loss
    after = jax.device_get(state.params)
    assert not np.isfinite(float(m1["loss"]))
    assert float(m1["skipped_updates"]) == 1 and int(m1["consecutive_skips"]) == 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
      np.testing.assert_array_equal(a, b)  # the update was not applied
    assert int(state.step) == 2  # but the step counter moves on (new masks next time)
    state, m2 = step(state, batch, jax.random.key(0))  # step 2: fine again
    assert np.isfinite(float(m2["loss"])) and int(m2["consecutive_skips"]) == 0
    assert float(m2["skipped_updates"]) == 1


def test_window_holds_the_means_of_its_steps_and_leaves_out_a_skipped_ones_loss(setup):
  """Five steps, the third with a NaN loss: the window's loss, accuracy and gradient norm are
  the means of the four good steps' own metrics (read one step at a time from `train_step`),
  its other scalars the means or last values of all five."""
  config, c, batch = setup
  step_args = dict(graphdef=c.graphdef, masker=poisoned(c.masker, 2), tx=c.tx,
                   mask_config=config.masking,
                   learning_rate=optim.learning_rate_schedule(config.train))
  one_step = jax.jit(functools.partial(train_step, **step_args))
  in_window = jax.jit(functools.partial(step_lib.train_step_in_window, **step_args))
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    state = c.init_state(jax.random.key(0))
    per_step = []
    for _ in range(5):
      state, metrics = one_step(state, batch, jax.random.key(0))
      per_step.append(jax.device_get(metrics))
    state, window = c.init_state(jax.random.key(0)), step_lib.empty_window()
    for _ in range(5):
      state, window = in_window(state, batch, jax.random.key(0), window)
  logged = step_lib.window_means(jax.device_get(window))

  good = [m for i, m in enumerate(per_step) if i != 2]
  assert not np.isfinite(per_step[2]["loss"]) and len(good) == 4
  for name in ("loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose(logged[name], np.mean([m[name] for m in good]), rtol=1e-5,
                               err_msg=name)
  np.testing.assert_allclose(logged["predictions_per_row"],
                             np.mean([m["predictions_per_row"] for m in per_step]), rtol=1e-6)
  assert logged["learning_rate"] == pytest.approx(float(per_step[-1]["learning_rate"]))
  assert logged["skipped_updates"] == 1 and logged["consecutive_skips"] == 0
  assert logged["window_steps"] == 5


def test_a_window_of_skipped_steps_logs_nan_not_zero():
  window = {**jax.device_get(step_lib.empty_window()), "steps": 3, "good_steps": 0}
  assert np.isnan(step_lib.window_means(window)["loss"])


def test_too_many_consecutive_skips_stop_the_run(setup):
  config, _, _ = setup
  loop.check_consecutive_skips(19, 100, config)  # under the limit: nothing happens
  with pytest.raises(RuntimeError, match="20 consecutive updates up to step 100"):
    loop.check_consecutive_skips(20, 100, config)


def test_step_makes_no_hidden_host_transfers(setup):
  config, c, batch = setup
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    state = c.init_state(jax.random.key(0))
    step = state_lib.jit_train_step(config, c)
    key = jax.random.key(0)
    batch = partition.global_batch(jax.device_get(batch), c.mesh)
    empty = state_lib.empty_window(c)
    state, window = step(state, batch, key, empty)  # compile outside the guard
    with jax.transfer_guard("disallow"):  # the loop's steps: the window stays on the device
      for _ in range(2):
        state, window = step(state, batch, key, window)
      state, window = step(state, batch, key, empty)  # a new window: no transfer either
  assert np.isfinite(float(window["loss"])) and int(window["steps"]) == 1


def test_scan_layers_builds_and_trains_through_the_loop(setup):
  """scan_layers stacks parameters on a 'layers' axis that the default rules leave unsharded."""
  config, _, batch = setup
  config = config.copy_and_resolve_references()
  config.model.update(scan_layers=True, num_layers=2)
  c = state_lib.build(config, masking.VocabTables.from_vocab(VOCAB), len(VOCAB), 0)
  stacked = c.abstract_state.params["bert"]["encoder"]["layers"]
  assert all(leaf.shape[0] == 2 and leaf.sharding.spec[:1] in ((), (None,))
             for leaf in jax.tree.leaves(stacked))
  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    state = c.init_state(jax.random.key(0))
    step = state_lib.jit_train_step(config, c)
    state, m = step(state, partition.global_batch(jax.device_get(batch), c.mesh),
                    jax.random.key(0), state_lib.empty_window(c))
  assert np.isfinite(float(m["loss"])) and int(state.step) == 1


def test_mlm_loss_equals_optax_in_value_and_gradient():
  """The one-pass loss (log-sum-exp sharing the max with accuracy) is the usual cross-entropy."""
  from mlmjax.train.step import mlm_loss
  import optax
  logits = jax.random.normal(jax.random.key(0), (3, 5, 40)) * 4
  labels = jax.random.randint(jax.random.key(1), (3, 5), 0, 40)
  weights = (jnp.arange(15).reshape(3, 5) % 4 != 0).astype(jnp.float32)

  def reference(logits):
    per_slot = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(per_slot * weights) / jnp.sum(weights)

  ours = lambda logits: mlm_loss(logits, labels, weights)[0]
  np.testing.assert_allclose(ours(logits), reference(logits), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits), atol=1e-6)
  _, _, correct = mlm_loss(logits, labels, weights)
  np.testing.assert_array_equal(correct, jnp.argmax(logits, -1) == labels)  # no ties here


def test_a_schedule_that_would_clip_the_budget_is_refused_with_the_number(setup):
  """16-token rows, 4 slots: a cosine schedule starting at 50% asks for round(0.5 * 14) = 7."""
  config, c, _ = setup
  config = config.copy_and_resolve_references()
  config.masking.schedule.update(kind="cosine", start=0.5, end=0.02, steps=10)
  with pytest.raises(ValueError, match="Set --config.masking.max_predictions=7"):
    state_lib.build(config, c.tables, len(VOCAB), 0)
  config.masking.max_predictions = 7
  state_lib.build(config, c.tables, len(VOCAB), 0)  # sized: accepted


def test_contextual_masks_follow_the_models_own_hidden_states(setup):
  """Contextual masking scores tokens with the model's hidden states of the unmasked rows: two
  models give two sets of masks, one model the same masks, and a train step runs with them."""
  config, _, _ = setup
  config = ml_collections.ConfigDict(config.to_dict())
  config.masking.update(strategy="contextual", rate=0.3, max_predictions=8)
  config.masking.contextual.sharpness = 50.0  # nearly deterministic: the scores decide
  tables = masking.VocabTables.from_vocab(VOCAB)
  c = state_lib.build(config, tables, len(VOCAB), 0)
  ids = np.random.default_rng(1).integers(5, len(VOCAB), (8, 16)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 2, 3
  batch = {"input_ids": jnp.asarray(ids)}
  assert masking.reads_hidden(c.mask_config)
  assert step_lib.masking_hidden(c.graphdef, None, setup[0].masking, batch) is None  # no cost

  @jax.jit
  def masks(params):
    hidden = step_lib.masking_hidden(c.graphdef, params, c.mask_config, batch)
    return c.masker(jax.random.key(0), batch, 0, None, hidden).positions

  with partition.mesh_context(c.mesh, config.mesh.axis_rules):
    one, two = c.init_state(jax.random.key(0)), c.init_state(jax.random.key(1))
    np.testing.assert_array_equal(masks(one.params), masks(one.params))
    assert (np.asarray(masks(one.params)) != np.asarray(masks(two.params))).any(1).sum() >= 4
    state, window = state_lib.jit_train_step(config, c)(one, batch, jax.random.key(0),
                                                        state_lib.empty_window(c))
    assert np.isfinite(float(window["loss"])) and int(state.step) == 1
