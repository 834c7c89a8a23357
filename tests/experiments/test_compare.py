"""The masking comparison end to end: a miniature run, its files, identical masks, the cache."""

import csv
import os

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from data import labelled_fixture
from helpers import ROOT
from mlmjax import masking
from mlmjax.data import annotate, stats, token_tables, tokenizer as tokenizer_lib
from mlmjax.experiments import compare, evaluate, probes
from mlmjax.train import loop

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table_rows(markdown: str) -> list[list[str]]:
  """The cells of the first Markdown table in `markdown` (header first, separator dropped)."""
  lines = markdown.split("\n")
  start = next(i for i, line in enumerate(lines) if line.startswith("| trained with"))
  rows = []
  for line in lines[start:]:
    if not line.startswith("|"):
      break
    if not line.startswith("|---"):
      rows.append([cell.strip() for cell in line.strip("|").split("|")])
  return rows


def test_miniature_comparison_writes_every_output(comparison):
  config, workdir, matrix = comparison
  strategies, maskings = config.compare.strategies, config.compare.eval_maskings
  for name in compare.OUTPUTS.values():
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  for name in ("loss_curves.png", "accuracy_heatmap.png"):
    with open(os.path.join(workdir, name), "rb") as f:
      assert f.read(8) == PNG_MAGIC

  # Markdown: one row per training strategy plus the baseline row, one column per masking.
  with open(os.path.join(workdir, "results.md"), encoding="utf-8") as f:
    rows = _table_rows(f.read())
  assert rows[0] == ["trained with \\ evaluated on", *maskings]
  assert [r[0] for r in rows[1:]] == [*strategies, "*always `" + matrix.setup["baseline_token"]
                                      + "`*"]
  assert all(len(r) == 1 + len(maskings) for r in rows)
  assert not any("n/a" in cell or "no model" in cell for r in rows for cell in r)

  # CSV: one row per (strategy, masking), every cell evaluated on every batch.
  with open(os.path.join(workdir, "results.csv"), encoding="utf-8") as f:
    records = list(csv.DictReader(f))
  assert [(r["train_strategy"], r["eval_masking"]) for r in records] == [
      (s, m) for s in strategies for m in maskings]
  for r in records:
    assert r["status"] == "ok"
    assert int(r["batches"]) == config.compare.eval_batches
    assert float(r["accuracy_low"]) <= float(r["accuracy"]) <= float(r["accuracy_high"])
    assert float(r["loss"]) > 0 and int(r["train_step"]) == config.train.steps

  # Each run trained for the budget and left its validation curve.
  for s in strategies:
    assert matrix.runs[s]["step"] == config.train.steps
    assert [step for step, _ in matrix.runs[s]["curve"]] == [3, 6]
  assert len(os.listdir(os.path.join(workdir, compare.CELLS))) == len(strategies) * len(maskings)


def test_probe_stage_columns_and_labels_from_the_annotator(comparison, monkeypatch, tmp_path):
  config, workdir, matrix = comparison
  strategies, tasks = config.compare.strategies, config.compare.probes
  assert tasks == probes.TASKS and matrix.setup["annotator"] == "rules-v2"
  for s in strategies:
    assert set(matrix.probes[s]) == set(tasks)
    assert all(0.0 <= v <= 1.0 for values in matrix.probes[s].values() for v in values)
  with open(os.path.join(workdir, "probes.csv"), encoding="utf-8") as f:
    records = list(csv.DictReader(f))
  assert [(r["train_strategy"], r["task"]) for r in records] == [
      (s, t) for s in strategies for t in tasks]
  with open(os.path.join(workdir, "results.md"), encoding="utf-8") as f:
    text = f.read()
  table = _table_rows(text[text.index("## Probes"):])
  assert table[0] == ["trained with", *[report_header(t) for t in tasks]]
  assert [r[0] for r in table[1:]] == list(strategies)
  with open(os.path.join(workdir, "probes.png"), "rb") as f:
    assert f.read(8) == PNG_MAGIC

  # The labels the probes learn are the annotator's: with the rules, pos_class is the
  # vocabulary's classes of the held-out words and the entities are the rules' spans.
  seen = {}
  real = probes.token_task
  monkeypatch.setattr(probes, "token_task", lambda states, labels, where, *a: seen.setdefault(
      len(seen), (labels, where)) and real(states, labels, where, *a))
  data_dir = os.path.join(workdir, "data")
  rows = probes.probe_rows(data_dir, config.compare.probe_rows)
  model = compare.inference.load_trained(os.path.join(workdir, "runs", "random"))[0]
  tokenizer = tokenizer_lib.get_tokenizer(config.data, workdir)
  tables = stats.vocab_tables(tokenizer, data_dir)
  probes.run(*compare.nnx.split(model), rows, tables, None, config)
  (syntax, words), (entities, _) = seen[0], seen[1]
  expected = annotate.vocab_pos_classes(rows["input_ids"], token_tables.from_tokenizer(tokenizer))
  np.testing.assert_array_equal(syntax[words], expected[words])
  np.testing.assert_array_equal(entities, rows["entity_ids"] > 0)
  assert words.sum() > 100 and set(np.unique(syntax[words])) >= {1, 2}

  # The file probes learn the files' gold labels, one per word on its first token.
  files = probes.labelled_rows(config.compare.probe_files, tokenizer, config.data.seq_len,
                               config.compare.probe_rows)
  assert set(files) == {"upos", "deprel", "ner"}
  truth = labelled_fixture.write_conllu(tmp_path / "same.conllu")  # the same sentences
  upos = files["upos"]
  assert [[upos.names[i] for i in row[row >= 0]] for row in upos.labels] == [
      [u for _, u, _ in sentence] for sentence in truth]
  ner = files["ner"]
  assert ner.names[0] == "O" and set(ner.names) == {"O", "PER", "LOC"}


def test_a_task_given_by_two_files_is_refused(tiny_compare):
  paths = tiny_compare.compare.probe_files.split(",")
  with pytest.raises(ValueError, match="both .* give upos labels; keep one"):
    probes.labelled_rows(f"{paths[0]},{paths[0]}", None, 32, 8)


def report_header(task):
  from mlmjax.experiments import report
  return report.PROBE_HEADERS[task]


def test_evaluation_masks_are_identical_across_models(comparison):
  config, workdir, matrix = comparison
  # Recomputed here from the key, the rows and the tables alone, with a fresh masker.
  tokenizer = tokenizer_lib.get_tokenizer(config.data, workdir)
  tables = stats.vocab_tables(tokenizer, os.path.join(workdir, "data"))
  rows = evaluate.eval_rows(config, os.path.join(workdir, "data"))
  for m in config.compare.eval_maskings:
    cells = [matrix.cells[s, m] for s in config.compare.strategies]
    assert len({c["mask_sha256"] for c in cells}) == 1, m
    assert {c["rows_sha256"] for c in cells} == {evaluate.rows_sha256(rows)}
    # Same masks, same number of predictions per batch for every model.
    assert len({tuple(c["predictions"]) for c in cells}) == 1
  hashes = {}
  for m in ("random", "span"):
    masked = evaluate.draw_masks(evaluate.eval_masking_config(config, m), tables, rows,
                                evaluate.eval_key(config.compare.eval_seed))
    hashes[m] = evaluate.masks_sha256(masked)
    assert matrix.cells["random", m]["mask_sha256"] == hashes[m]
  # The hash tells maskings apart (it is not a constant), and models differ in what they answer.
  assert hashes["random"] != hashes["span"]
  assert matrix.cells["random", "random"]["loss"] != matrix.cells["span", "random"]["loss"]


def test_rerun_reuses_runs_and_cells(comparison, monkeypatch):
  config, workdir, matrix = comparison

  def must_not_run(*args, **kwargs):
    raise AssertionError("a cached run or cell was computed again")

  monkeypatch.setattr(loop, "train_and_evaluate", must_not_run)
  monkeypatch.setattr(compare.inference, "load_trained", must_not_run)
  again = compare.compare(config, workdir)
  assert again.cells == matrix.cells


def test_changed_config_in_the_same_workdir_is_refused(comparison):
  config, workdir, _ = comparison
  changed = config.copy_and_resolve_references()
  changed.masking.rate = 0.3
  with pytest.raises(ValueError, match=r"masking\.rate.*new --workdir"):
    compare.train_run(changed, config.compare.strategies[0], workdir)


def test_execution_settings_do_not_invalidate_a_finished_run(comparison):
  config, workdir, matrix = comparison
  changed = config.copy_and_resolve_references()
  changed.train.log_every = 1  # how the run logs, not what it trains
  record = compare.train_run(changed, config.compare.strategies[0], workdir)
  assert record["step"] == config.train.steps and record["error"] is None


def test_a_run_that_fails_is_reported_and_the_others_go_on(tiny_compare, tmp_path,
                                                           monkeypatch):
  def refuse(config, workdir):
    raise ValueError(f"{config.masking.strategy} needs something this data lacks")

  monkeypatch.setattr(loop, "train_and_evaluate", refuse)
  record = compare.train_run(tiny_compare, "span", str(tmp_path / "w"))
  assert record["error"] == "span needs something this data lacks"
  assert not os.path.exists(tmp_path / "w" / "runs" / "span" / compare.RUN_RECORD)


def test_a_preempted_run_stops_the_comparison_uncached(tiny_compare, tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "train_and_evaluate",
                      lambda config, workdir: {"step": 3, "preempted": True})
  with pytest.raises(compare.Preempted, match="step 3.*again to resume"):
    compare.train_run(tiny_compare, "span", str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "runs" / "span" / compare.RUN_RECORD)


def test_a_masking_the_data_cannot_support_is_unavailable(tiny_compare):
  tables = masking.VocabTables.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a",
                                           "b", "##c"])
  ids = np.array([[2, 5, 6, 7, 5, 6, 3, 0]] * 4, np.int32)
  rows = [{"input_ids": ids, "segment_ids": (ids != 0).astype(np.int32)}] * 2
  info = evaluate.evaluation_masks(tiny_compare, "entity", tables, rows, baseline_token=5)
  assert info["batches"] is None
  assert "entity_ids" in info["error"] and "config.data.annotations" in info["error"]
  fine = evaluate.evaluation_masks(tiny_compare, "whole_word", tables, rows, baseline_token=5)
  assert fine["error"] is None and fine["predictions"] > 0 and fine["in_entities"] is None


@pytest.mark.parametrize("key,value,message", [
    ("strategies", ("random", "no_such_strategy"), "no_such_strategy.*choose from"),
    ("strategies", (), "empty"),
    ("eval_maskings", ("span", "span"), "repeats"),
    ("eval_maskings", ("random", "contextual"), "depend on the model"),
])
def test_bad_comparison_configs_are_refused(tiny_compare, key, value, message):
  tiny_compare.compare[key] = value
  with pytest.raises(ValueError, match=message):
    compare.check_config(tiny_compare)


def test_stop_after_is_refused(tiny_compare):
  tiny_compare.train.stop_after = 3
  with pytest.raises(ValueError, match="stop_after"):
    compare.check_config(tiny_compare)


def test_run_config_sets_only_the_strategy(tiny_compare):
  run = compare.run_config(tiny_compare, "span")
  assert run.masking.strategy == "span"
  assert "compare" not in run and "scale" not in run
  assert compare.config_diff(
      compare.run_config(tiny_compare, "random").to_dict(), run.to_dict()) == [
          "masking.strategy"]


def test_scale_preset_then_command_line_overrides():
  """`--config=configs/compare.py:smoke` is the file's get_config("smoke"); overrides win."""
  path = f"{ROOT / 'configs' / 'compare.py'}:smoke"
  argv = ["prog", f"--config={path}", "--config.train.steps=7"]
  values = flags.FlagValues()
  # The override flags are made from the argv the config flag is defined with.
  config_flags.DEFINE_config_file("config", path, flag_values=values, sys_argv=argv)
  values(argv)
  config = values.config
  assert config.scale == "smoke" and config.model.num_layers == 1  # the preset
  assert config.train.steps == 7  # the command line wins over it
  assert config.compare.strategies == ("random", "dynamic", "whole_word", "span", "entity", "pmi",
                                       "frequency", "syntax", "semantic")


def test_f1_is_micro_over_the_labels_inside():
  truth, guess = np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 1])
  # 3 words inside, 4 guessed inside, 2 right types: F1 = 2 * 2 / (4 + 3).
  assert probes.f1(guess, truth) == pytest.approx(4 / 7)
  assert probes.f1(np.array([True, False]), np.array([True, True])) == pytest.approx(2 / 3)
  assert np.isnan(probes.f1(np.zeros(3, int), np.zeros(3, int)))
