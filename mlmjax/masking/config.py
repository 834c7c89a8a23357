"""The masking config: the shared options with their defaults, and each strategy's own options
(registered with it in strategies.py) under its name, in one ConfigDict."""

from __future__ import annotations

import ml_collections

from mlmjax.masking import registry

COUNT_MODES = ("exact", "ceil", "prob_round", "bernoulli", "per_unit")
RANDOM_SOURCES = ("non_special", "full_vocab", "unigram")
FILLS = ("auto", "skip", "truncate", "whole")


def default_config() -> ml_collections.ConfigDict:
  """Defaults: dynamic random masking of 15% of eligible tokens, 80/10/10, 20 predictions."""
  c = ml_collections.ConfigDict()
  c.strategy = "dynamic"  # a name in masking.SPECS
  c.rate = 0.15  # share of eligible tokens to predict (the constant schedule's rate)
  c.max_predictions = 20  # P: prediction slots per row; size it for the schedule's highest rate
  c.count_mode = "exact"  # exact round(rate*n) | ceil | prob_round (fairseq) | bernoulli (HF)
  #   | per_unit: each unit drawn on its own with probability rate (ERNIE; no length bias)
  c.count_specials = False  # n counts [CLS]/[SEP] too (BERT: 19 at length 128); PAD never counts
  c.min_one = False  # at least one prediction per row that has an eligible token (BERT)
  c.mask_prob = 0.8  # share of chosen tokens replaced by [MASK]
  c.random_prob = 0.1  # share replaced by a random id; the rest (0.1) keep the original
  c.replace_per = "auto"  # mask/random/keep per "token" (BERT), "unit" (SpanBERT); auto: per
  #   unit for span and pmi (as SpanBERT and PMI-Masking), per token otherwise (as BERT)
  c.random_source = "non_special"  # non_special (uniform) | full_vocab (BERT/HF) | unigram (freq.)
  c.units = "token"  # units of the weight-based strategies: "token" or "word"
  c.fill = "auto"  # a unit over the budget: "skip" it, go on (BERT; long units drawn less),
  #   "truncate" it (SpanBERT, exact budget) or take it "whole" (PMI-Masking's "until 15% are
  #   selected": every length drawn alike, the row may overshoot); auto: truncate for span,
  #   skip otherwise
  c.segment_aware = True  # no unit crosses a document boundary (needs batch segment_ids)
  c.boundary_objective = False  # SpanBERT's span boundary objective (SBO): each masked token
  #   is also predicted from the tokens around its span (a training head; not exported to HF)

  c.dynamic = d = ml_collections.ConfigDict()
  d.mode = "auto"  # "every_step": new masks each step (RoBERTa); "static": masks fixed per
  #   example, dupe_factor copies (BERT); auto: static for "random", every_step otherwise
  d.dupe_factor = 10  # static: distinct masks per example, copy epoch % dupe_factor (BERT: 10)
  d.steps_per_epoch = 0.0  # static: steps in one pass over the data; 0: the trainer sets it
  #   from the prepared data (elsewhere 0 means one copy: the masks never change)

  c.schedule = s = ml_collections.ConfigDict()
  s.kind = "constant"  # constant (uses rate) | linear | cosine (time-variant masking, MRD)
  s.start = 0.32  # linear/cosine: rate at step 0 (MRD: 2 * 0.15 + 0.02)
  s.end = 0.02  # linear/cosine: rate from `steps` on
  s.steps = 100_000  # linear/cosine: steps from start to end

  # Each strategy's own options, registered with it (strategies.py): config.span.p, ...
  for name, spec in registry.SPECS.items():
    if spec.options is not None:
      c[name] = spec.options()
  return c


def is_static(config: ml_collections.ConfigDict) -> bool:
  """Whether masks are fixed per example (BERT's static masking) rather than new every step.

  "auto" follows the strategy's source, as its registration says (`static`): `random` is
  BERT's recipe (static, dupe_factor copies), `dynamic` is RoBERTa's (new masks every time a
  row is seen), and every later strategy was published with dynamic masks.
  """
  if config.dynamic.mode == "auto":
    return registry.spec(config.strategy).static
  return config.dynamic.mode == "static"


def boundary_objective(config: ml_collections.ConfigDict) -> bool:
  """Whether training adds SpanBERT's span boundary objective (False for configs saved before
  the option existed)."""
  return bool(config.get("boundary_objective", False))


def with_epoch_length(config: ml_collections.ConfigDict,
                      steps_per_epoch: float) -> ml_collections.ConfigDict:
  """`config` with `dynamic.steps_per_epoch` set, when static masks need it and it is unset.

  The trainer knows how long a pass over its data is; a user's value is kept.
  """
  if not is_static(config) or config.dynamic.steps_per_epoch > 0 or steps_per_epoch <= 0:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.dynamic.steps_per_epoch = float(steps_per_epoch)
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the fix for a config no masker can run."""
  checks = [
      (0.0 <= config.rate <= 1.0, f"rate={config.rate} must lie in [0, 1]"),
      (config.max_predictions >= 1, "max_predictions must be at least 1"),
      (config.count_mode in COUNT_MODES, f"count_mode must be one of {COUNT_MODES}"),
      (config.mask_prob >= 0 and config.random_prob >= 0
       and config.mask_prob + config.random_prob <= 1.0 + 1e-9,
       "mask_prob and random_prob must be >= 0 and sum to at most 1 (the rest is kept)"),
      (config.replace_per in ("auto", "token", "unit"), "replace_per must be auto, token or unit"),
      (config.random_source in RANDOM_SOURCES, f"random_source must be one of {RANDOM_SOURCES}"),
      (config.units in ("token", "word"), "units must be 'token' or 'word'"),
      (config.fill in FILLS, f"fill must be one of {FILLS}"),
      (config.dynamic.mode in ("auto", "every_step", "static"),
       "dynamic.mode must be 'auto', 'every_step' or 'static'"),
      (config.dynamic.steps_per_epoch >= 0, "dynamic.steps_per_epoch must be >= 0"),
      (config.dynamic.dupe_factor >= 1, "dynamic.dupe_factor must be at least 1"),
      (config.schedule.kind in ("constant", "linear", "cosine"),
       "schedule.kind must be constant, linear or cosine"),
  ]
  for ok, message in checks:
    if not ok:
      raise ValueError(f"masking config: {message}")
  # The options of the strategies it runs, as each registered its check (an unknown name is
  # left to make_masker, which lists the known ones).
  for name in dict.fromkeys((config.strategy,) + registry.components(config)):
    check = registry.SPECS[name].check if name in registry.SPECS else None
    if check is not None:
      check(config)
