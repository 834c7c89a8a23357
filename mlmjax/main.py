"""Command-line entry points (absl apps): train, prepare, export, fill-mask, quickstart.

This file holds flags only; the work lives in libraries that tests and notebooks import.

    mlmjax-train --config=configs/quickstart.py --workdir=DIR [--config.train.steps=200 ...]
"""

import logging as std_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

QUICKSTART_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "configs", "quickstart.py")
DEMO_SENTENCES = (  # docstring-like sentences, since the embedded corpus is Python's docs
    "Return true if the object is [MASK], false otherwise.",
    "If the argument is omitted, the default value is [MASK].",
    "Raise a [MASK] if the key is not found.",
    "This module provides functions for working with files and [MASK].",
)

FLAGS = flags.FLAGS


def _define_config_and_workdir() -> None:
  config_flags.DEFINE_config_file(
      "config", QUICKSTART_CONFIG, "Python config file returning a ConfigDict.",
      lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for data, checkpoints and logs.")
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (cluster "
                    "auto-detection: Cloud TPU pods, SLURM, GKE); implied by JAX_NUM_PROCESSES>1 "
                    "or a multi-task SLURM job.")
  flags.DEFINE_integer("dry_run", 0, "Plan only: print the sharding and per-device memory of "
                       "the parameters and optimizer state on a mesh of this many devices "
                       "(abstract: no device is needed), then exit.")
  flags.mark_flag_as_required("workdir")


def _maybe_initialize_distributed() -> None:
  """Joins JAX's multi-controller runtime when this is one of several processes.

  Decided from the environment only (touching a JAX backend first would make initialisation
  fail): JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID as set by
  `launch/local.py` or any launcher; a multi-task SLURM job; or `--distributed` to force
  JAX's own cluster detection (Cloud TPU pods, GKE, MPI).
  """
  env = os.environ
  if int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
    # Collectives between CPU processes go through gloo over loopback/TCP.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env["JAX_PROCESS_ID"]))
  elif int(env.get("SLURM_NTASKS", "1")) > 1 or FLAGS.distributed:
    jax.distributed.initialize()


def _train(_) -> None:
  from mlmjax.train import loop, partition
  if FLAGS.dry_run:
    print(partition.format_plan(FLAGS.config, FLAGS.dry_run))
    return
  _maybe_initialize_distributed()
  results = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if results.get("preempted"):
    print(f"Preempted: checkpoint saved at step {results['step']}; rerun the same command "
          "to resume.")
    return
  print(_format_results(results))


def _prepare(_) -> None:
  from mlmjax.data import prepare
  manifest = prepare.prepare(FLAGS.config.data, FLAGS.workdir)
  for split, entry in manifest["splits"].items():
    print(f"{split}: {entry['documents']} documents, {entry['tokens']:,} tokens, "
          f"{entry['rows']} rows of {manifest['seq_len']}")


def _export(_) -> None:
  from mlmjax.convert import hf
  out = hf.export_workdir(FLAGS.workdir, FLAGS.out, FLAGS.step)
  print(f"Exported a Hugging Face BertForMaskedLM to {out}")


def _fill_mask(argv) -> None:
  from mlmjax import inference
  texts = argv[1:] or list(DEMO_SENTENCES)
  workdir, step = FLAGS.workdir, FLAGS.step
  if FLAGS.checkpoint:  # WORKDIR/checkpoints/STEP
    checkpoint = os.path.abspath(FLAGS.checkpoint.rstrip("/"))
    if not os.path.basename(checkpoint).isdigit():
      raise ValueError(f"--checkpoint={FLAGS.checkpoint} is not a step directory "
                       "WORKDIR/checkpoints/STEP; pass --workdir=WORKDIR for the latest step")
    workdir, step = os.path.dirname(os.path.dirname(checkpoint)), int(os.path.basename(checkpoint))
  if not workdir:
    raise ValueError("Pass --workdir=DIR (latest checkpoint) or --checkpoint=DIR/checkpoints/N")
  model, tokenizer, _ = inference.load_trained(workdir, step)
  print(inference.format_predictions(texts, inference.fill_mask(model, tokenizer, texts,
                                                                 FLAGS.top_k)))


def _quickstart(_) -> None:
  from mlmjax import inference
  from mlmjax.convert import hf
  from mlmjax.train import loop
  results = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  out = hf.export_workdir(FLAGS.workdir, os.path.join(FLAGS.workdir, "hf"))
  model, tokenizer, _ = inference.load_trained(FLAGS.workdir)
  fits = lambda t: len(tokenizer.encode(t).ids) <= model.cfg.max_position_embeddings
  texts = [t for t in DEMO_SENTENCES if fits(t)]
  print(_format_results(results))
  print(f"\nHugging Face export: {out}  (AutoModelForMaskedLM.from_pretrained loads it)\n")
  print(inference.format_predictions(texts, inference.fill_mask(model, tokenizer, texts)))


def _format_results(r: dict) -> str:
  ratio = r["eval_accuracy"] / max(r["eval_baseline_accuracy"], 1e-9)
  return (f"step {r['step']}: held-out MLM loss {r['eval_loss']:.3f}, accuracy "
          f"{r['eval_accuracy']:.1%} vs {r['eval_baseline_accuracy']:.1%} for always predicting "
          f"{r['baseline_token']!r} ({ratio:.1f}x), on {int(r['eval_predictions'])} masked tokens")


class _QuietLibraries(std_logging.Filter):
  """Keeps mlmjax's own INFO lines but only warnings and errors of the checkpoint/data libraries."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("orbax", "grain", "jax"))
    return record.levelno >= std_logging.WARNING or not noisy


def _exit_on_bad_flags(fn, *args):
  """Runs flag definition/parsing; a bad flag or config key exits with one line, no traceback.

  (ml_collections reads `--config.*` overrides while the config flag is defined and parsed.)
  """
  try:
    return fn(*args)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    message = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split()).strip("'\"")
    if "Did you mean" in message:  # ml_collections' wording for an unknown key
      message = "unknown config key. " + message[message.index("Did you mean"):]
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    sys.exit(f"mlmjax: bad command line: {message}\n  config overrides given: {overrides}\n"
             "  Run with --helpfull to list flags; config keys are those of the --config file.")


def _user_errors_as_messages(main):
  """Errors a user can cause (bad corpus, config, workdir) end as one line naming the fix."""
  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError) as e:
      if FLAGS.verbosity >= 1:
        raise
      sys.exit(f"mlmjax: error: {e}\n  (run with --verbosity=1 for the traceback)")
  return wrapped


def run_app(main, define) -> None:
  """Defines flags with `define`, then runs `main` as an absl app with mlmjax's error handling."""
  _exit_on_bad_flags(define)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  jax.config.config_with_absl()
  app.run(_user_errors_as_messages(main),
          flags_parser=lambda argv: _exit_on_bad_flags(FLAGS, argv))


def run_train() -> None:
  run_app(_train, _define_config_and_workdir)


def run_prepare() -> None:
  run_app(_prepare, _define_config_and_workdir)


def run_quickstart() -> None:
  run_app(_quickstart, _define_config_and_workdir)


def run_export() -> None:
  def define():
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
    flags.DEFINE_string("out", None, "Output folder for the Hugging Face model.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.mark_flags_as_required(["workdir", "out"])
  run_app(_export, define)


def run_fill_mask() -> None:
  def define():
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_string("checkpoint", None, "A step directory WORKDIR/checkpoints/STEP, "
                        "instead of --workdir and --step.")
    flags.DEFINE_integer("top_k", 5, "Predictions shown per [MASK].")
  run_app(_fill_mask, define)


if __name__ == "__main__":
  sys.exit(run_train())
