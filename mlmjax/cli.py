"""Every command line of mlmjax: absl apps with ml_collections config files, a few lines each.

The work lives in the libraries (which tests and notebooks import); this file holds flags and
wiring only, and nothing imports it. Each console script of setup.py is a function here, and
`python -m mlmjax.cli COMMAND [flags]` runs one without installing the scripts (the benchmarks
are no product command: `bench/`, beside the package, runs them as `python -m bench.train`):

    mlmjax-train --config=configs/quickstart.py --workdir=DIR [--config.train.steps=200 ...]
    python -m mlmjax.cli fill-mask --workdir=DIR "Return the [MASK] of the list."

Every command has `--help`; a bad flag or config key, and the mistakes a user can make with a
corpus, config or workdir, end in one line naming the fix instead of a traceback.
"""

import logging as std_logging
import os
import sys
import tempfile
import time
import traceback

import jax
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from mlmjax import inference, pretrain, storage
from mlmjax.data import corpora
from mlmjax.data import prepare as prepare_lib
from mlmjax.experiments import compare as compare_lib
from mlmjax.experiments import report as compare_report
from mlmjax.experiments import show_masks
from mlmjax import masking
from mlmjax.train import host_memory, loop, partition

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
QUICKSTART_CONFIG = os.path.join(CONFIGS, "quickstart.py")
COMPARE_CONFIG = os.path.join(CONFIGS, "compare.py")
DEMO_QUESTIONS = 200  # held-out sentences the quickstart's demo asks the model about

FLAGS = flags.FLAGS
# Libraries whose INFO lines are hidden and whose tracebacks need --verbosity=1.
NOISY_LIBRARIES = ("orbax", "grain", "jax", "gcsfs", "fsspec", "tensorstore")


# ----------------------------------------------------------------------------- shared wiring


class _QuietLibraries(std_logging.Filter):
  """Keeps mlmjax's own INFO lines but only warnings and errors of the checkpoint/data libraries,
  and those as one line: their tracebacks (a writer thread that failed, a request retried) only
  with --verbosity=1, since the error that ends the run says what happened.

  (gcsfs's own logger is set to ERROR in `run_app`: it warns "Could not determine bucket type"
  for every bucket it cannot inspect, emulators and restricted buckets included, and goes on.)
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in NOISY_LIBRARIES)
    if noisy and FLAGS.verbosity < 1:
      record.exc_info, record.exc_text, record.stack_info = None, None, None
    return record.levelno >= std_logging.WARNING or not noisy


def _exit_on_bad_flags(fn, *args):
  """Runs flag definition/parsing; a bad flag or config key exits with one line, no traceback.

  (ml_collections reads `--config.*` overrides while the config flag is defined and parsed.)
  """
  try:
    return fn(*args)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    message = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
      message = message[1:-1]  # a KeyError's message comes quoted
    # ml_collections' wording for an unknown key; absl says "Unknown command line flag" for a
    # misspelt flag, with its own suggestion.
    if "Did you mean" in message and "Unknown command line flag" not in message:
      message = "unknown config key. " + message[message.index("Did you mean"):]
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    sys.exit(f"mlmjax: bad command line: {message}\n  config overrides given: {overrides}\n"
             "  Run with --helpfull to list flags; config keys are those of the --config file.")


def _user_errors_as_messages(main):
  """Errors a user can cause (bad corpus, config or workdir, a full disk, an unreachable
  bucket) end as one line naming the fix; the traceback comes with --verbosity=1."""
  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError, storage.StorageError) as e:
      _fail(str(e))
    except OSError as e:  # a full disk or a network where no step of mlmjax's said more
      _fail(f"no space left on the disk of {e.filename or 'the workdir'}; free some space (or "
            "move --workdir to a larger disk) and run the same command again."
            if storage.is_no_space(e) else f"{type(e).__name__}: {e}")
  return wrapped


def _fail(message: str) -> None:
  """Prints the error and ends the process at once, with exit code 1.

  At once (os._exit, not sys.exit): Orbax's and gcsfs's threads may still be retrying a write
  to a store that is gone, and would hold the process at exit for minutes. What was committed
  is on disk already; the workdir's lock goes with the process.
  """
  if FLAGS.verbosity >= 1:
    traceback.print_exc()
  else:
    message += "\n  (run with --verbosity=1 for the traceback)"
  sys.stdout.flush()
  print(f"mlmjax: error: {message}", file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access


def run_app(main, define) -> None:
  """Defines flags with `define`, then runs `main` as an absl app with mlmjax's error handling."""
  before = set(FLAGS)
  _exit_on_bad_flags(define)
  for name in set(FLAGS) - before:  # `--help` lists the command's own flags (absl shows those
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])  # of the main module)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  std_logging.getLogger("gcsfs").setLevel(std_logging.ERROR)  # see _QuietLibraries
  std_logging.getLogger("fsspec").setLevel(std_logging.WARNING)  # a line for every file opened
  jax.config.config_with_absl()
  app.run(_user_errors_as_messages(main),
          flags_parser=lambda argv: _exit_on_bad_flags(FLAGS, argv))


def _define_config(default: str, text: str) -> None:
  config_flags.DEFINE_config_file("config", default, text, lock_config=True)


def _define_config_and_workdir() -> None:
  _define_config(QUICKSTART_CONFIG, "Python config file returning a ConfigDict.")
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


def _format_results(r: dict) -> str:
  ratio = r["eval_accuracy"] / max(r["eval_baseline_accuracy"], 1e-9)
  return (f"step {r['step']}: held-out MLM loss {r['eval_loss']:.3f}, accuracy "
          f"{r['eval_accuracy']:.1%} vs {r['eval_baseline_accuracy']:.1%} for always predicting "
          f"{r['baseline_token']!r} ({ratio:.1f}x), on {int(r['eval_predictions'])} masked tokens")


def _in_workdir(*parts: str) -> str:
  """FLAGS.workdir/parts..., for a local workdir (made absolute) or a URL alike."""
  return os.fspath(storage.join(FLAGS.workdir, *parts))


def _quiet() -> None:
  logging.set_verbosity(logging.WARNING)  # no backend-probing chatter in the tools' output


# ----------------------------------------------------------------------------- training


def train() -> None:
  """mlmjax-train: prepares the data if needed, trains, resumes from the workdir."""
  def main(_):
    if FLAGS.dry_run:
      print(partition.format_plan(FLAGS.config, FLAGS.dry_run))
      return
    _maybe_initialize_distributed()
    results = pretrain.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if results.get("preempted"):
      print(f"Preempted: checkpoint saved at step {results['step']}; rerun the same command "
            "to resume.")
      return
    print(_format_results(results))
  host_memory.keep_freed_memory()  # many steps: see train/host_memory.py
  run_app(main, _define_config_and_workdir)


def prepare() -> None:
  """mlmjax-prepare: tokenizer and packed shards in the workdir (cached)."""
  def main(_):
    _maybe_initialize_distributed()  # several processes prepare their shards in parallel
    processes = {}
    if jax.process_count() > 1:
      processes = dict(process_index=jax.process_index(), process_count=jax.process_count(),
                       sync=multihost_utils.sync_global_devices)
    with loop.owned(_in_workdir()):  # not while a trainer or another preparation runs there
      manifest = prepare_lib.prepare(FLAGS.config.data, FLAGS.workdir, **processes)
    if jax.process_index():
      return
    for split, entry in manifest["splits"].items():
      print(f"{split}: {entry['documents']} documents, {entry['tokens']:,} tokens, "
            f"{entry['rows']} rows of {manifest['seq_len']}")
  run_app(main, _define_config_and_workdir)


def quickstart() -> None:
  """mlmjax-quickstart: train the small model, export it, show a fill-mask demo."""
  def main(_):
    results = pretrain.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    out = inference.export_workdir(FLAGS.workdir, _in_workdir("hf"))
    model, tokenizer, _ = inference.load_trained(FLAGS.workdir)
    _, held_out = corpora.load_splits(FLAGS.config.data)
    questions = inference.cloze_sentences(held_out, tokenizer, DEMO_QUESTIONS,
                                          seed=FLAGS.config.seed,
                                          max_tokens=model.cfg.max_position_embeddings)
    print(_format_results(results))
    print(f"\nHugging Face export: {out}  (AutoModelForMaskedLM.from_pretrained loads it)")
    print(f"Training curves: {_in_workdir('curves.png')}\n")
    print(inference.format_cloze(inference.answer_cloze(model, tokenizer, questions)))
  host_memory.keep_freed_memory()  # many steps: see train/host_memory.py
  run_app(main, _define_config_and_workdir)


# ----------------------------------------------------------------------------- trained models


def export() -> None:
  """mlmjax-export: a checkpoint as a Hugging Face folder of its family (BertForMaskedLM,
  RobertaForMaskedLM or ModernBertForMaskedLM)."""
  def define():
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
    flags.DEFINE_string("out", None, "Output folder for the Hugging Face model.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.mark_flags_as_required(["workdir", "out"])

  def main(_):
    out = inference.export_workdir(FLAGS.workdir, FLAGS.out, FLAGS.step)
    print(f"Exported a Hugging Face model to {out}")
  run_app(main, define)


def fill_mask() -> None:
  """mlmjax-fill-mask: the trained model's top predictions for each [MASK]."""
  def define():
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_string("checkpoint", None, "A step directory WORKDIR/checkpoints/STEP, "
                        "instead of --workdir and --step.")
    flags.DEFINE_integer("top_k", 5, "Predictions shown per [MASK].")

  def main(argv):
    texts = argv[1:]
    if not texts:
      raise ValueError('give a sentence with [MASK]: mlmjax-fill-mask --workdir=DIR '
                       '"Return the [MASK] of the list."')
    workdir, step = FLAGS.workdir, FLAGS.step
    if FLAGS.checkpoint:  # WORKDIR/checkpoints/STEP
      checkpoint = os.fspath(storage.path(FLAGS.checkpoint.rstrip("/")))  # local or a URL
      if not os.path.basename(checkpoint).isdigit():
        raise ValueError(f"--checkpoint={FLAGS.checkpoint} is not a step directory "
                         "WORKDIR/checkpoints/STEP; pass --workdir=WORKDIR for the latest step")
      workdir = os.path.dirname(os.path.dirname(checkpoint))
      step = int(os.path.basename(checkpoint))
    if not workdir:
      raise ValueError("Pass --workdir=DIR (latest checkpoint) or --checkpoint=DIR/checkpoints/N")
    model, tokenizer, _ = inference.load_trained(workdir, step)
    print(inference.format_predictions(
        texts, inference.fill_mask(model, tokenizer, texts, FLAGS.top_k)))
  run_app(main, define)


# ----------------------------------------------------------------------------- masking


def mask() -> None:
  """mlmjax-mask: what a masking strategy does to your sentences."""
  def define():
    _define_config(QUICKSTART_CONFIG, "Config file: its masking and data settings are used "
                   "(e.g. configs/masking.py:spanbert for a named recipe).")
    flags.DEFINE_string("workdir", os.path.join(tempfile.gettempdir(), "mlmjax_mask"),
                        "A run's workdir (its tokenizer, statistics, annotations, model), or a "
                        "folder where the config's data is prepared once with every annotation.")
    flags.DEFINE_enum("strategy", None, sorted(masking.SPECS), "masking strategy "
                      "(default: the config's)")
    flags.DEFINE_float("rate", None, "share of eligible tokens to predict (default: the config's)")
    flags.DEFINE_integer("steps", 1, "how many steps to show (dynamic masks change every step)")
    flags.DEFINE_integer("seed", 0, "PRNG seed")
    flags.DEFINE_float("mask_prob", None, "share of targets shown as [MASK] (default: config's)")
    flags.DEFINE_float("random_prob", None, "share of targets replaced at random (default: "
                       "the config's)")

  def main(argv):
    _quiet()
    texts = [t.strip() for t in argv[1:] if t.strip()]
    if not texts:
      raise ValueError('give a sentence: mlmjax-mask --strategy=span "The quick brown fox."')
    config, f = FLAGS.config, FLAGS
    for key in ("strategy", "rate", "mask_prob", "random_prob"):
      if f[key].value is not None:
        config.masking[key] = f[key].value
    print("\n".join(show_masks.mask_texts(config, f.workdir, texts, f.steps, f.seed)))
  run_app(main, define)


def compare() -> None:
  """mlmjax-compare: masking strategies trained side by side and cross-evaluated."""
  def define():
    _define_config(COMPARE_CONFIG, "Comparison config file (configs/compare.py).")
    flags.DEFINE_string("workdir", None, "Directory for the runs, caches and results.")
    flags.mark_flag_as_required("workdir")

  def main(_):
    if "scale" in config_flags.get_override_values(FLAGS["config"]):
      raise ValueError("a preset is chosen with the config file's argument, e.g. "
                       "--config=configs/compare.py:gpu; config.scale only records it")
    config = FLAGS.config
    start = time.perf_counter()
    try:
      matrix = compare_lib.compare(config, FLAGS.workdir)
    except compare_lib.Preempted as e:
      sys.exit(f"mlmjax-compare: {e}")
    print(compare_report.results_table(matrix))
    print(f"\n{len(matrix.cells)} cells in {(time.perf_counter() - start) / 60:.1f} min; "
          f"outputs in {os.fspath(storage.path(FLAGS.workdir))}: "
          f"{', '.join(compare_lib.OUTPUTS.values())}")
    missing = ([s for s, r in matrix.runs.items() if r.get("error")]
               + [m for m, info in matrix.masks.items() if info.get("error")])
    if missing:
      sys.exit(f"mlmjax-compare: {missing} could not be compared; results.md says why.")
  host_memory.keep_freed_memory()  # many steps: see train/host_memory.py
  run_app(main, define)


COMMANDS = {
    "train": train, "prepare": prepare, "quickstart": quickstart, "export": export,
    "fill-mask": fill_mask, "mask": mask, "compare": compare,
}


def main() -> None:
  """`python -m mlmjax.cli COMMAND [flags]`: any command without the console scripts."""
  if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    sys.exit(f"usage: python -m mlmjax.cli {{{','.join(COMMANDS)}}} [flags] (--help for each)")
  command = sys.argv.pop(1)
  sys.argv[0] = f"mlmjax-{command}"
  COMMANDS[command]()


if __name__ == "__main__":
  main()
