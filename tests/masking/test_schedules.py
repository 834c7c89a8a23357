"""Tests of mask-rate and mixture-weight schedules: values, traced steps, no recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlmjax import masking
from mlmjax.masking import schedules


def _config(kind, **sched):
  cfg = masking.default_config()
  cfg.schedule.kind = kind
  cfg.schedule.update(sched)
  return cfg


def test_constant_uses_rate():
  cfg = _config("constant")
  cfg.rate = 0.4
  assert float(schedules.mask_rate(cfg, 123)) == pytest.approx(0.4)
  assert schedules.max_rate(cfg) == pytest.approx(0.4)


def test_linear_from_start_to_end_then_flat():
  cfg = _config("linear", start=0.4, end=0.1, steps=100)
  got = [float(schedules.mask_rate(cfg, s)) for s in (0, 50, 100, 1000)]
  np.testing.assert_allclose(got, [0.4, 0.25, 0.1, 0.1], rtol=1e-6)
  assert schedules.max_rate(cfg) == pytest.approx(0.4)


def test_cosine_is_masking_ratio_decay():
  """Yang et al. (2023): p (1 + cos(pi t / T)) + 0.02, with p = 0.15 (0.32 -> 0.02)."""
  cfg = _config("cosine", start=0.32, end=0.02, steps=1000)
  steps = np.array([0, 100, 250, 500, 750, 1000, 5000])
  got = np.array([float(schedules.mask_rate(cfg, s)) for s in steps])
  t = np.minimum(steps / 1000, 1.0)
  np.testing.assert_allclose(got, 0.15 * (1 + np.cos(np.pi * t)) + 0.02, rtol=1e-5, atol=1e-7)


def test_schedule_is_traced_not_recompiled():
  cfg = _config("cosine", start=0.32, end=0.02, steps=1000)
  f = jax.jit(lambda step: schedules.mask_rate(cfg, step))
  rates = [float(f(jnp.int32(s))) for s in range(0, 1001, 100)]
  assert f._cache_size() == 1  # pylint: disable=protected-access
  assert all(a > b for a, b in zip(rates, rates[1:]))


def test_mixture_weights_interpolate():
  w = [np.asarray(schedules.mixture_weights((1.0, 0.0), (0.0, 2.0), 10, s)) for s in (0, 5, 20)]
  np.testing.assert_allclose(w, [[1.0, 0.0], [0.5, 1.0], [0.0, 2.0]])
  np.testing.assert_allclose(schedules.mixture_weights((1.0, 3.0), (), 10, 7), [1.0, 3.0])


def test_bad_schedule_kind_is_refused(tables):
  with pytest.raises(ValueError, match="schedule.kind"):
    masking.make_masker(_config("exponential"), tables)


def test_required_predictions_follow_the_highest_rate_and_count_mode():
  config = masking.default_config()
  assert schedules.required_predictions(config, 128) == 19  # round(0.15 * 126): BERT's P=20 fits
  config.schedule.update(kind="cosine", start=0.32, end=0.02)
  assert schedules.required_predictions(config, 128) == 40  # round(0.32 * 126) at step 0
  config.count_mode = "ceil"
  assert schedules.required_predictions(config, 128) == 41
  config.count_specials = True
  assert schedules.required_predictions(config, 128) == 41  # ceil(0.32 * 128)
