r"""The largest batch that trains: a doubling-then-bisecting search over real train steps.

    python -m bench.fit --config=configs/bert_large.py:512                  # remat as configured
    python -m bench.fit --config=configs/bert_large.py:512 --config.model.remat_policy=full \
        --fit_start=256 --fit_limit=4096

Each try builds and compiles the train step at that global batch and runs two steps
(`train.bench_train`); only an XLA out-of-memory error counts as "does not fit", anything else
is raised. XLA's memory plan of each batch that fits is kept, and extrapolated to the device's
memory as a second opinion (`plan_estimate`).
"""

from __future__ import annotations

import gc
import time
from typing import Callable

import jax
import ml_collections
from absl import app, flags, logging

from bench import harness, report, train

FLAGS = flags.FLAGS

OOM_MARKERS = ("resource_exhausted", "out of memory")


def is_oom(error: BaseException) -> bool:
  """An XLA out-of-memory error (raised at compile time or when the step runs)."""
  return any(m in str(error).lower() for m in OOM_MARKERS)


def search_batch(fits: Callable[[int], bool], start: int, limit: int, refine: int = 2,
                 multiple: int = 8, on_try: Callable[[dict], None] | None = None) -> dict:
  """Doubles the batch from `start` until `fits` fails or `limit` is passed, then bisects.

  `refine` bisection steps narrow the gap between the largest batch that fit and the first
  that did not, to multiples of `multiple`. Returns largest_batch (None if even `start` failed),
  first_oom (None if none failed), limit_reached and tried (batch -> fit). `on_try` sees the
  result so far after every try (a long search that is cut short still leaves its answer).
  """
  tried: dict[int, bool] = {}
  found = {"largest_batch": None, "first_oom": None}

  def attempt(batch: int) -> bool:
    tried[batch] = fits(batch)
    key = "largest_batch" if tried[batch] else "first_oom"
    found[key] = batch
    if on_try:
      on_try(result(done=False))
    return tried[batch]

  def result(done: bool) -> dict:
    return {**found, "limit_reached": done and found["first_oom"] is None,
            "tried": {str(k): v for k, v in tried.items()}, "done": done}

  batch = start
  while batch <= limit and attempt(batch):
    batch *= 2
  for _ in range(refine):
    good, bad = found["largest_batch"], found["first_oom"]
    if good is None or bad is None:
      break
    mid = (good + bad) // 2 // multiple * multiple
    if mid <= good:
      break
    attempt(mid)
  return result(done=True)


def fits_in_memory(config: ml_collections.ConfigDict, batch: int, plans: dict[int, float],
                   steps: int = 2) -> bool:
  """Whether `steps` train steps run at this global batch; frees everything afterwards.

  A batch that trains leaves XLA's memory plan for its step (GiB) in `plans[batch]`.
  """
  config = config.copy_and_resolve_references()
  config.train.batch_size = batch
  start = time.perf_counter()
  try:
    r = train.bench_train(train.setup(config), steps=steps, warmup=1, windows=1)
    plans[batch] = r.get("planned_gib")
    peak = r.get("peak_gib")
    print(f"batch {batch}: trains (peak {'n/a' if peak is None else f'{peak:.1f}'} GiB, "
          f"{time.perf_counter() - start:.0f} s)", flush=True)
    ok = True
  except Exception as error:  # pylint: disable=broad-except
    if not is_oom(error):
      raise
    print(f"batch {batch}: out of memory ({str(error).splitlines()[0][:160]})", flush=True)
    ok = False
  jax.clear_caches()
  gc.collect()
  return ok


def plan_estimate(plans: dict[int, float], limit_gib: float | None) -> int | None:
  """The batch at which XLA's plan would fill `limit_gib`, extrapolated linearly.

  Activations grow with the batch; parameters and optimizer state do not. Two planned batches
  give both parts; one alone counts all of its plan as growing (an underestimate).
  """
  known = sorted((b, g) for b, g in plans.items() if g)
  if not known or not limit_gib:
    return None
  (b0, g0), (b1, g1) = known[0], known[-1]
  per_row = (g1 - g0) / (b1 - b0) if b1 > b0 else g1 / b1
  return int(b1 + (limit_gib - g1) / per_row) if per_row > 0 else None


def bench_fit(config: ml_collections.ConfigDict, start: int, limit: int, refine: int,
              model: str = "", on_try: Callable[[dict], None] | None = None) -> dict:
  """The largest global batch that trains at config's shape, remat as configured.

  `on_try` receives the record so far after every try.
  """
  plans: dict[int, float] = {}

  def record(found: dict) -> dict:
    memory = train.device_memory()
    return {"kind": "fit", "name": "mlmjax", "model": model, "seq_len": config.data.seq_len,
            "batch": found["largest_batch"], "remat": config.model.remat_policy, **found,
            "planned_gib": {str(b): g for b, g in plans.items()},
            "plan_estimate": plan_estimate(plans, memory["limit_gib"]), **memory,
            "device": jax.devices()[0].device_kind, "jax": jax.__version__}

  found = search_batch(lambda b: fits_in_memory(config, b, plans), start, limit, refine,
                       on_try=on_try and (lambda partial: on_try(record(partial))))
  return record(found)


def main(_):
  logging.set_verbosity(logging.WARNING)
  f, config = FLAGS, FLAGS.config
  r = bench_fit(config, f.fit_start or config.train.batch_size, f.fit_limit, f.fit_refine,
                train.print_header(config),
                on_try=lambda partial: harness.write_records(f.json_out, [partial]))
  print(report.fit_line(r))
  harness.write_records(f.json_out, [r])


if __name__ == "__main__":
  train.define_config_flag()
  flags.DEFINE_integer("fit_start", 0, "first batch tried (0: config.train.batch_size)")
  flags.DEFINE_integer("fit_limit", 4096, "largest batch tried")
  flags.DEFINE_integer("fit_refine", 2, "bisection steps after the doubling")
  flags.DEFINE_string("json_out", "", "the record, rewritten after every try, goes here")
  app.run(main)
