"""The comparison's statistics, tables and plots, on hand-made matrices (no training)."""

import math

import numpy as np
import pytest

from mlmjax.experiments import report


def _cell(accuracy, loss):
  return {"accuracy": list(accuracy), "loss": list(loss), "predictions": [10] * len(accuracy),
          "mask_sha256": "ab" * 32, "step": 6}


def _matrix(cells, runs=None, masks=None):
  strategies, maskings = ("random", "span", "pmi"), ("random", "span")
  runs = runs or {s: {"step": 6, "seconds": 60.0, "error": None, "curve": [[3, 5.0], [6, 4.0]]}
                  for s in strategies}
  masks = masks or {m: {"sha256": "cd" * 32, "predictions": 40, "in_entities": 0.1,
                        "in_ngrams": None, "run_length": 1.5, "baseline_accuracy": 0.05,
                        "error": None} for m in maskings}
  return report.Matrix(strategies, maskings, cells, runs, masks,
                       {"baseline_token": ".", "description": {"training": "6 steps"}})


def test_t_quantile_matches_scipy():
  scipy_stats = pytest.importorskip("scipy.stats")
  for df in list(range(1, 40)) + [60, 120, 1000]:
    assert report.t_quantile_975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-4)


def test_mean_interval():
  interval = report.mean_interval([1.0, 2.0, 3.0])
  assert interval.mean == 2.0 and interval.n == 3
  assert interval.half_width == pytest.approx(4.302652730 / math.sqrt(3))
  assert math.isnan(report.mean_interval([1.0]).low)


def test_table_shape_bold_best_and_missing_cells():
  runs = {"random": {"step": 6, "seconds": 60.0, "error": None, "curve": []},
          "span": {"step": 6, "seconds": 60.0, "error": None, "curve": []},
          "pmi": {"step": None, "seconds": None, "error": "pmi needs ngram_ids", "curve": []}}
  masks = {"random": {"sha256": "cd" * 32, "predictions": 40, "in_entities": None,
                      "in_ngrams": 0.2, "run_length": 1.0, "baseline_accuracy": 0.05,
                      "error": None},
           "span": {"error": "span needs something", "baseline_accuracy": None}}
  cells = {("random", "random"): _cell([0.2, 0.3], [4.0, 4.2]),
           ("span", "random"): _cell([0.3, 0.4], [3.9, 4.1])}
  matrix = _matrix(cells, runs, masks)
  lines = report.results_table(matrix).split("\n")
  assert lines[0] == "| trained with \\ evaluated on | random | span |"
  assert len(lines) == 2 + 3 + 1  # header, separator, strategies, baseline
  assert lines[2].startswith("| random | 25.0 ±")
  assert lines[3].startswith("| span | **35.0** ±") and lines[3].endswith("| n/a |")
  assert lines[4] == "| pmi | no model | no model |"
  assert lines[5] == "| *always `.`* | 5.0 | n/a |"
  statuses = [(r["train_strategy"], r["eval_masking"], r["status"])
              for r in report.csv_rows(matrix)]
  assert statuses == [("random", "random", "ok"), ("random", "span", "unavailable"),
                      ("span", "random", "ok"), ("span", "span", "unavailable"),
                      ("pmi", "random", "no_model"), ("pmi", "span", "no_model")]
  text = report.markdown(matrix)
  assert "`pmi` has no model: pmi needs ngram_ids" in text
  assert "`span` unavailable: span needs something" in text


def test_paired_gaps_use_batch_differences():
  # span is better than random on every batch by 1 point, although the batches vary a lot.
  base = np.array([0.1, 0.5, 0.3, 0.7])
  cells = {("random", "random"): _cell(base, base), ("span", "random"): _cell(base + 0.01, base),
           ("pmi", "random"): _cell(base - 0.02, base + 0.1 * np.array([1, -1, 1, -1]))}
  gap = report.paired_gap(_matrix(cells), "span", "random", "accuracy", "random")
  assert gap.mean == pytest.approx(0.01) and gap.low > 0  # clear, paired
  assert report.mean_interval(base + 0.01).low < report.mean_interval(base).high  # unpaired: not
  assert report.paired_gap(_matrix(cells), "span", "span", "loss", "random") is None
  lines = report.paired_table(_matrix(cells), "accuracy").split("\n")
  assert lines[0] == "| accuracy: trained with − random \\ evaluated on | random | span |"
  assert lines[2] == "| span | **+1.00 [+1.00, +1.00]** | — |"
  assert lines[3].startswith("| pmi | **-2.00")
  loss = report.paired_table(_matrix(cells), "loss").split("\n")
  assert loss[3].startswith("| pmi | +0.000 [")  # +-0.1 per batch: the interval holds 0


def test_plots_are_written(tmp_path):
  pytest.importorskip("matplotlib")
  cells = {("random", "random"): _cell([0.2, 0.3], [4.0, 4.2]),
           ("span", "span"): _cell([0.1, 0.2], [5.0, 5.2])}  # the other cells missing: n/a
  matrix = _matrix(cells)
  report.plot_curves(matrix, str(tmp_path / "curves.png"))
  report.plot_heatmap(matrix, str(tmp_path / "heatmap.png"))
  for name in ("curves.png", "heatmap.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
