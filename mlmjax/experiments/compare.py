r"""Masking strategy comparison: one model per strategy on one budget, every model on every masking.

    mlmjax-compare --config=configs/compare.py[:gpu] --workdir=DIR

Each strategy in `compare.strategies` trains the same model (`pretrain.train_and_evaluate`):
same architecture, steps, batch and seed (so the same initial weights and the same data order);
only `masking.strategy` differs. Then every trained model is evaluated under every masking in
`compare.eval_maskings`, on the same held-out rows, with the masks drawn once per masking from a
fixed key: every model answers exactly the same questions (evaluate.py).

DIR holds:
  data/, tokenizer/                   prepared once; each run's data/ and tokenizer/ link here
  runs/<strategy>/                    a training workdir (checkpoints, tensorboard/metrics.jsonl)
  runs/<strategy>/compare.json        written when the run has finished: its config and results
  cells/<strategy>__<masking>.json    per-batch loss and accuracy of one model under one masking
  probes/<strategy>.json              per-group probe results of one model (probes.py)
  results.csv, probes.csv, results.md, loss_curves.png, accuracy_heatmap.png, probes.png

All of it is cached: run the command again and it resumes an interrupted run from its last
checkpoint, reuses finished runs and evaluated cells, and rewrites the tables and plots.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from mlmjax import inference, masking, pretrain, storage
from mlmjax import workdir as workdir_lib
from mlmjax.data import manifest as manifest_lib, prepare, stats, tokenizer as tokenizer_lib
from mlmjax.experiments import evaluate, probes, report
from mlmjax.train import loop
from mlmjax.train import state as state_lib

RUNS, CELLS, PROBES, RUN_RECORD = "runs", "cells", "probes", "compare.json"
OUTPUTS = {"csv": "results.csv", "probes_csv": "probes.csv", "markdown": "results.md",
           "curves": "loss_curves.png", "heatmap": "accuracy_heatmap.png",
           "probes": "probes.png"}
# Blocks of the comparison itself: they are not part of a run's training config.
COMPARISON_KEYS = ("compare", "scale")
# A finished run is reused when its config differs only in workdir.EXECUTION_KEYS (how a run
# executes or logs, not the model it trains) or in keys of a later mlmjax.


# ---------------------------------------------------------------------------- the config


class Preempted(Exception):
  """The scheduler took the machine back during a run; its checkpoint is saved."""


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises one ValueError naming the fix for a comparison that cannot run as configured."""
  known = sorted(masking.SPECS)
  unknown = [t for t in config.compare.probes if t not in probes.TASKS]
  if unknown:
    raise ValueError(f"config.compare.probes names {unknown}; choose from {probes.TASKS}.")
  for key in ("strategies", "eval_maskings"):
    names = tuple(config.compare[key])
    if not names:
      raise ValueError(f"config.compare.{key} is empty; name at least one of {known}.")
    unknown = [n for n in names if n not in masking.SPECS]
    if unknown:
      raise ValueError(f"config.compare.{key} names {unknown}, which masking.SPECS does "
                       f"not have; choose from {known}.")
    if len(set(names)) != len(names):
      raise ValueError(f"config.compare.{key} repeats a name: {list(names)}.")
  reads_model = [m for m in config.compare.eval_maskings
                 if masking.reads_model(evaluate.eval_masking_config(config, m))]
  if reads_model:
    raise ValueError(f"config.compare.eval_maskings has {reads_model}, whose masks depend on "
                     "the model being evaluated (adaptive: its running loss, contextual: its "
                     "embeddings), so the models would not see the same masks; use them as "
                     "training strategies only.")
  if config.train.stop_after:
    raise ValueError("config.train.stop_after must be 0 in a comparison: every run trains to "
                     "train.steps (interrupt the command and run it again to resume).")
  if jax.process_count() > 1:
    raise ValueError("mlmjax-compare runs in one process; train multi-host runs with "
                     "mlmjax-train and compare them on one host.")


def run_config(config: ml_collections.ConfigDict, strategy: str) -> ml_collections.ConfigDict:
  """The training config of one run: the shared config, `masking.strategy` set, no compare keys."""
  run = ml_collections.ConfigDict(config.to_dict())  # an unlocked deep copy
  for key in COMPARISON_KEYS:
    if key in run:
      del run[key]
  run.masking.strategy = strategy
  return run


def _flatten(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
  return out


def config_diff(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
  """Dotted keys whose values differ between two configs (as JSON dicts), but `ignore`d ones."""
  a, b = _flatten(old), _flatten(new)
  ignored = lambda k: any(k == i or (i.endswith(".") and k.startswith(i)) for i in ignore)
  return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not ignored(k))


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_json(path: str, value: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)  # a crash never leaves a half-written cache entry


def _sha256(value) -> str:
  if isinstance(value, dict):
    value = json.dumps(value, sort_keys=True)
  return hashlib.sha256(value.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ training


def link_shared_data(workdir: str, run_dir: str) -> None:
  """Points a run's data/ and tokenizer/ at the comparison's: one preparation, identical rows."""
  os.makedirs(run_dir, exist_ok=True)
  for name in (manifest_lib.DATA_DIR, tokenizer_lib.CACHE_DIR):
    target, link = os.path.join(workdir, name), os.path.join(run_dir, name)
    if os.path.exists(target) and not os.path.lexists(link):
      os.symlink(os.path.relpath(target, run_dir), link)  # relative: the workdir may move


def eval_curve(run_dir: str) -> list[list[float]]:
  """[[step, eval_loss], ...] from the run's metrics.jsonl; a resumed step keeps its last value."""
  metrics = workdir_lib.read_metrics(workdir_lib.metrics_file(run_dir))
  return [[int(step), float(loss)] for step, loss in metrics.get("eval_loss", [])]


def train_run(config: ml_collections.ConfigDict, strategy: str, workdir: str) -> dict:
  """Trains, resumes or reuses one strategy's model; returns its run record.

  A finished run (its compare.json holds this config, up to workdir_lib.EXECUTION_KEYS) is reused as
  is. A strategy that cannot be trained here (the loop refuses it with a ValueError, e.g. missing
  annotations or vocabulary statistics) gives a record with its "error": the other runs go on
  and the tables say why this row is missing.
  """
  run_dir = os.path.join(workdir, RUNS, strategy)
  run = run_config(config, strategy)
  wanted = json.loads(run.to_json_best_effort())
  record_path = os.path.join(run_dir, RUN_RECORD)
  saved = _read_json(record_path)
  if saved is not None:
    changed = config_diff(saved["config"], wanted, ignore=workdir_lib.EXECUTION_KEYS)
    if changed:
      raise ValueError(f"{run_dir} was trained with another config (differs in {changed}); "
                       "use a new --workdir or delete that folder to retrain it.")
    return {**saved, "curve": eval_curve(run_dir)}
  link_shared_data(workdir, run_dir)
  logging.info("Training %s in %s", strategy, run_dir)
  start = time.perf_counter()
  try:
    results = pretrain.train_and_evaluate(run, run_dir)  # init_from_hf too
  except ValueError as e:
    logging.error("Strategy %s cannot be trained: %s", strategy, e)
    return {"error": str(e), "step": None, "seconds": None, "curve": []}
  if results.get("preempted"):  # checkpointed, not finished: never cache it as a result
    raise Preempted(f"Preempted while training {strategy} (saved at step {results['step']}); "
                    "run the same command again to resume.")
  record = {"config": wanted, "config_sha256": _sha256(wanted), "results": results,
            "step": results["step"], "seconds": time.perf_counter() - start, "error": None}
  _write_json(record_path, record)
  return {**record, "curve": eval_curve(run_dir)}


# -------------------------------------------------------------------------- scoring cells


def cell_path(workdir: str, strategy: str, masking_name: str) -> str:
  return os.path.join(workdir, CELLS, f"{strategy}__{masking_name}.json")


def cross_evaluate(workdir: str, runs: dict, masks: dict, rows_hash: str) -> dict:
  """(strategy, masking) -> cell, from the cache when the model, masks and rows are unchanged.

  A model that cannot be loaded gets its run record's "error" set (its row then says why).
  """
  cells = {}
  for strategy, run in runs.items():
    if run.get("error"):
      continue
    todo = []
    for name, mask in masks.items():
      if mask["error"]:
        continue
      fingerprint = {"run": run["config_sha256"], "step": run["step"],
                     "masks": mask["sha256"], "rows": rows_hash}
      cached = _read_json(cell_path(workdir, strategy, name))
      if cached is not None and cached["fingerprint"] == fingerprint:
        cells[strategy, name] = cached
      else:
        todo.append((name, fingerprint))
    if not todo:
      continue
    try:
      model, _, _ = inference.load_trained(os.path.join(workdir, RUNS, strategy), run["step"])
    except ValueError as e:  # reported in the row, like a run that could not train
      logging.error("The %s model cannot be loaded for evaluation: %s", strategy, e)
      run["error"] = f"trained, but the model could not be loaded for evaluation: {e}"
      continue
    graphdef, params = nnx.split(model)
    for name, fingerprint in todo:
      logging.info("Evaluating %s under %s masking", strategy, name)
      scores = evaluate.score(graphdef, params, masks[name]["batches"])
      cell = {"strategy": strategy, "masking": name, "step": run["step"],
              "mask_sha256": masks[name]["sha256"], "rows_sha256": rows_hash,
              "fingerprint": fingerprint, **scores}
      _write_json(cell_path(workdir, strategy, name), cell)
      cells[strategy, name] = cell
  return cells


def probe_models(workdir: str, config: ml_collections.ConfigDict, runs: dict,
                 rows: dict[str, np.ndarray], tables, random_masks: list | None,
                 labelled: dict | None = None) -> dict:
  """strategy -> {task: per-group values}, from the cache when the model and rows are unchanged."""
  labelled = labelled or {}
  # What the probes read: the held-out rows, and each labelled file's rows and labels.
  rows_hash = evaluate.rows_sha256([rows] + [{"input_ids": array}
                                             for _, d in sorted(labelled.items())
                                             for array in (d.input_ids, d.labels)])
  settings = {k: config.compare[k] for k in ("probes", "probe_files", "probe_rows",
                                             "probe_steps", "probe_groups", "eval_seed")}
  results = {}
  for strategy, run in runs.items():
    if run.get("error"):
      continue
    fingerprint = {"run": run["config_sha256"], "step": run["step"], "rows": rows_hash,
                   "settings": json.loads(json.dumps(settings)), "version": probes.VERSION}
    path = os.path.join(workdir, PROBES, f"{strategy}.json")
    cached = _read_json(path)
    if cached is not None and cached["fingerprint"] == fingerprint:
      results[strategy] = cached["tasks"]
      continue
    logging.info("Probing the %s model", strategy)
    model, _, _ = inference.load_trained(os.path.join(workdir, RUNS, strategy), run["step"])
    graphdef, params = nnx.split(model)
    tasks = probes.run(graphdef, params, rows, tables, random_masks, config, labelled)
    _write_json(path, {"strategy": strategy, "fingerprint": fingerprint, "tasks": tasks})
    results[strategy] = tasks
  return results


# ---------------------------------------------------------------------------- the whole


def describe(config: ml_collections.ConfigDict, manifest: dict, rows: list) -> dict:
  """The setup lines printed above the results table."""
  train, data, model, ev = config.train, config.data, config.model, config.compare
  tokens = train.steps * train.batch_size * data.seq_len
  split = manifest["splits"]["train"]
  passes = tokens / max(split["rows"] * data.seq_len, 1)
  return {
      "training": (f"{train.steps} steps x {train.batch_size} rows x {data.seq_len} tokens per "
                   f"strategy ({tokens:,} token slots, {passes:.1f} passes over the training "
                   f"split); seed {config.seed}: same initial weights and data order for all"),
      "model": (f"BERT, {model.num_layers} layers, hidden {model.hidden_size}, "
                f"{model.num_heads} heads, vocabulary {manifest['tokenizer']['vocab_size']}"),
      "data": (f"{data.source}: {split['rows']} training rows ({split['tokens']:,} tokens), "
               f"{manifest['splits']['validation']['rows']} validation rows; annotations "
               f"{manifest.get('annotations')} by {manifest.get('annotator')}"),
      "evaluation": (f"{len(rows)} batches x {ev.eval_batch_size} validation rows; masks "
                     f"drawn once per masking (key fold_in(key({ev.eval_seed}), "
                     f"{loop.EVAL_STREAM}), batch i: fold_in(key, i)); rate "
                     f"{config.masking.rate}, chosen tokens -> [MASK] {ev.eval_mask_prob:.0%}, "
                     f"random {ev.eval_random_prob:.0%}, kept "
                     f"{1 - ev.eval_mask_prob - ev.eval_random_prob:.0%}"),
  }


def write_outputs(matrix: report.Matrix, workdir: str) -> dict[str, str]:
  """results.csv, results.md and the two plots in the workdir; returns their paths."""
  paths = {k: os.path.join(workdir, name) for k, name in OUTPUTS.items()}
  with open(paths["csv"], "w", encoding="utf-8") as f:
    f.write(report.to_csv(matrix))
  with open(paths["probes_csv"], "w", encoding="utf-8") as f:
    f.write(report.probes_csv(matrix))
  with open(paths["markdown"], "w", encoding="utf-8") as f:
    f.write(report.markdown(matrix))
  report.plot_curves(matrix, paths["curves"])
  report.plot_heatmap(matrix, paths["heatmap"])
  report.plot_probes(matrix, paths["probes"])
  return paths


def compare(config: ml_collections.ConfigDict, workdir: str) -> report.Matrix:
  """Runs (or resumes) the whole comparison in `workdir` and writes its outputs there."""
  if storage.is_url(workdir):  # before any work: runs share the data through symlinks
    raise ValueError(f"mlmjax-compare needs a local --workdir; {workdir} is a URL (the runs "
                     "link the shared data and cache their cells in local files). Run it in a "
                     "local folder and copy the results up afterwards (gsutil -m cp -r).")
  check_config(config)
  workdir = os.path.abspath(workdir)
  with workdir_lib.owned(workdir):  # one comparison a workdir; each run locks its own folder
    return _compare(config, workdir)


def _compare(config: ml_collections.ConfigDict, workdir: str) -> report.Matrix:
  start = time.perf_counter()

  # Data and evaluation masks first: they need no model, and a masking the data cannot
  # support is reported before any training time is spent.
  manifest = prepare.prepare(config.data, workdir)
  data_dir = os.path.join(workdir, manifest_lib.DATA_DIR)
  tokenizer = tokenizer_lib.get_tokenizer(config.data, workdir)
  tables = stats.vocab_tables(tokenizer, manifest)
  rows = evaluate.eval_rows(config, data_dir)
  baseline_token = state_lib.most_frequent_token(tables)
  masks = {m: evaluate.evaluation_masks(config, m, tables, rows, baseline_token)
           for m in config.compare.eval_maskings}
  labelled = (probes.labelled_rows(config.compare.probe_files, tokenizer, config.data.seq_len,
                                   config.compare.probe_rows, config.data.tfds_data_dir)
              if config.compare.probes else {})
  unlabelled = [t for t in config.compare.probes if t in probes.FILE_TASKS and t not in labelled]
  if unlabelled:  # a warning when files were given and lack them
    log = logging.warning if config.compare.probe_files else logging.info
    log("Probes %s left out: no file in compare.probe_files gives their labels "
        "(docs/COMPARISON.md, Probes).", unlabelled)

  runs = {s: train_run(config, s, workdir) for s in config.compare.strategies}
  cells = cross_evaluate(workdir, runs, masks, evaluate.rows_sha256(rows))
  probe_results = {}
  if config.compare.probes:
    # Rare-word accuracy reads the random evaluation masks (drawn here if not evaluated).
    random = masks.get("random") or evaluate.evaluation_masks(config, "random", tables, rows,
                                                              baseline_token)
    probe_results = probe_models(workdir, config, runs,
                                 probes.probe_rows(data_dir, config.compare.probe_rows), tables,
                                 random["batches"], labelled)

  setup = {"description": describe(config, manifest, rows),
           "annotator": manifest.get("annotator"),
           "probe_tasks": tuple(config.compare.probes),
           "probe_files": config.compare.probe_files,
           "baseline_token": tokenizer.id_to_token(baseline_token),
           "seconds": time.perf_counter() - start}
  matrix = report.Matrix(
      strategies=tuple(config.compare.strategies), maskings=tuple(config.compare.eval_maskings),
      cells=cells, runs={s: {k: v for k, v in r.items() if k != "config"}
                         for s, r in runs.items()},
      masks={m: {k: v for k, v in info.items() if k != "batches"} for m, info in masks.items()},
      setup=setup, probes=probe_results)
  write_outputs(matrix, workdir)
  return matrix
