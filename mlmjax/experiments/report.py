"""Tables and plots of a masking comparison: 95% intervals, CSV, Markdown, loss curves, heatmap.

Pure functions of a `Matrix` (what `compare.py` measured); nothing here trains or evaluates.
Plots go to files: matplotlib `Figure`s rendered by its Agg canvas (no pyplot, no display).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend, no display, thread-safe

Z_975 = 1.959963984540054
# Student t 0.975 quantiles where the expansion below is not yet accurate to 1e-4.
_T_975_SMALL = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105,
                5: 2.570581836, 6: 2.446911851}

CSV_FIELDS = ("train_strategy", "eval_masking", "status", "accuracy", "accuracy_low",
              "accuracy_high", "loss", "loss_low", "loss_high", "batches", "predictions",
              "train_step", "mask_sha256", "note")


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over evaluation batches and its 95% confidence interval."""
  mean: float
  low: float
  high: float
  n: int  # batches

  @property
  def half_width(self) -> float:
    return (self.high - self.low) / 2


@dataclasses.dataclass(frozen=True)
class Matrix:
  """Everything one comparison measured.

  cells: (strategy, masking) -> {"loss", "accuracy", "predictions": per-batch lists,
    "mask_sha256", "rows_sha256", "step"}; absent when the run failed or the masking is
    unavailable (the reason is in `runs[s]["error"]` / `masks[m]["error"]`).
  runs: strategy -> {"step", "seconds", "error", "curve": [[step, eval_loss], ...]}.
  masks: masking -> {"sha256", "predictions", "in_entities", "in_ngrams", "run_length",
    "baseline_accuracy", "error"}.
  setup: what was compared (sizes, data, evaluation), shown above the table.
  probes: strategy -> {task: per-group values} (experiments/probes.py); {} when not run.
  """
  strategies: tuple[str, ...]
  maskings: tuple[str, ...]
  cells: dict
  runs: dict
  masks: dict
  setup: dict
  probes: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------------ statistics


def t_quantile_975(df: int) -> float:
  """The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95%).

  Tabulated for df <= 6, beyond them the Cornish-Fisher expansion (Abramowitz & Stegun
  26.7.5), whose relative error there is below 5e-5: no scipy needed.
  """
  if df < 1:
    raise ValueError(f"degrees of freedom must be >= 1, got {df}")
  if df in _T_975_SMALL:
    return _T_975_SMALL[df]
  z = Z_975
  g = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
       (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
       (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
  return z + sum(gi / df**(i + 1) for i, gi in enumerate(g))


def mean_interval(values: Sequence[float]) -> Interval:
  """Mean and 95% t interval of per-batch values (n - 1 degrees of freedom; nan for n < 2)."""
  x = np.asarray(values, np.float64)
  n = len(x)
  if n == 0:
    return Interval(math.nan, math.nan, math.nan, 0)
  mean = float(x.mean())
  if n < 2:
    return Interval(mean, math.nan, math.nan, 1)
  half = t_quantile_975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
  return Interval(mean, mean - half, mean + half, n)


def cell_stats(cell: dict) -> tuple[Interval, Interval]:
  """(accuracy, loss) intervals of a cell, over its batches."""
  return mean_interval(cell["accuracy"]), mean_interval(cell["loss"])


def ranking(matrix: Matrix, masking: str) -> list[tuple[str, float]]:
  """The strategies with a cell in this column, best accuracy first."""
  scored = [(s, float(np.mean(matrix.cells[s, masking]["accuracy"])))
            for s in matrix.strategies if (s, masking) in matrix.cells]
  return sorted(scored, key=lambda item: -item[1])


def paired_gap(matrix: Matrix, strategy: str, masking: str, metric: str,
               reference: str) -> Interval | None:
  """`metric` of `strategy` minus that of `reference`, batch by batch, with its 95% interval.

  Every model is scored on the same masked batches, so the difference is taken per batch (a
  paired interval): batch-to-batch difficulty cancels, and the interval is far tighter than two
  independent ones would suggest. None when either cell is missing.
  """
  if (strategy, masking) not in matrix.cells or (reference, masking) not in matrix.cells:
    return None
  diff = (np.asarray(matrix.cells[strategy, masking][metric])
          - np.asarray(matrix.cells[reference, masking][metric]))
  return mean_interval(diff)


# -------------------------------------------------------------------------------- tables


def csv_rows(matrix: Matrix) -> list[dict]:
  """One row per (training strategy, evaluation masking), in table order."""
  rows = []
  for s in matrix.strategies:
    for m in matrix.maskings:
      row = dict.fromkeys(CSV_FIELDS, "")
      row.update(train_strategy=s, eval_masking=m)
      if (s, m) in matrix.cells:
        cell = matrix.cells[s, m]
        acc, loss = cell_stats(cell)
        row.update(status="ok", accuracy=acc.mean, accuracy_low=acc.low,
                   accuracy_high=acc.high, loss=loss.mean, loss_low=loss.low,
                   loss_high=loss.high, batches=acc.n, predictions=int(sum(cell["predictions"])),
                   train_step=cell["step"], mask_sha256=cell["mask_sha256"])
      elif matrix.runs[s].get("error"):
        row.update(status="no_model", note=matrix.runs[s]["error"])
      else:
        row.update(status="unavailable", note=matrix.masks[m]["error"])
      rows.append(row)
  return rows


def to_csv(matrix: Matrix) -> str:
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
  writer.writeheader()
  writer.writerows(csv_rows(matrix))
  return out.getvalue()


PROBE_HEADERS = {"syntax": "syntax: pos_class acc.", "entities": "entities: F1",
                 "frequency": "rare words: MLM acc.", "semantic": "continuation: acc.",
                 "upos": "gold UPOS: acc.", "deprel": "gold deprel: acc.",
                 "ner": "gold NER: F1"}
PROBES_CSV_FIELDS = ("train_strategy", "task", "value", "low", "high", "groups")


def probe_tasks(matrix: Matrix) -> list[str]:
  """The probe tasks some model has a value for, in the configured order."""
  done = {t for tasks in matrix.probes.values() for t in tasks}
  return [t for t in matrix.setup.get("probe_tasks", PROBE_HEADERS) if t in done]


def probes_csv(matrix: Matrix) -> str:
  """probes.csv: one row per (strategy, task), the mean over groups and its 95% interval."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=PROBES_CSV_FIELDS, lineterminator="\n")
  writer.writeheader()
  for s in matrix.strategies:
    for task in probe_tasks(matrix):
      if task in matrix.probes.get(s, {}):
        i = mean_interval(matrix.probes[s][task])
        writer.writerow({"train_strategy": s, "task": task, "value": i.mean, "low": i.low,
                         "high": i.high, "groups": i.n})
  return out.getvalue()


def probes_table(matrix: Matrix) -> str:
  """Strategies x probe tasks: value % ±95% half-width over groups; bold: best of a column."""
  tasks = probe_tasks(matrix)
  stats = {(s, t): mean_interval(matrix.probes[s][t]) for s in matrix.strategies
           for t in tasks if t in matrix.probes.get(s, {})}
  best = {t: max((i.mean for (s, u), i in stats.items() if u == t and not math.isnan(i.mean)),
                 default=None) for t in tasks}
  lines = ["| trained with | " + " | ".join(PROBE_HEADERS.get(t, t) for t in tasks) + " |",
           "|---" * (len(tasks) + 1) + "|"]
  for s in matrix.strategies:
    texts = []
    for t in tasks:
      if (s, t) not in stats:
        texts.append("—")
        continue
      i = stats[s, t]
      value = f"{100 * i.mean:.1f}"
      texts.append(f"{f'**{value}**' if i.mean == best[t] else value} ±{100 * i.half_width:.1f}")
    lines.append(f"| {s} | " + " | ".join(texts) + " |")
  return "\n".join(lines)


def _cell_text(matrix: Matrix, s: str, m: str, best: float | None) -> str:
  if (s, m) not in matrix.cells:
    return "no model" if matrix.runs[s].get("error") else "n/a"
  acc, loss = cell_stats(matrix.cells[s, m])
  accuracy = f"{100 * acc.mean:.1f}"
  if acc.mean == best:  # ties are all bold
    accuracy = f"**{accuracy}**"
  return f"{accuracy} ±{100 * acc.half_width:.1f} · {loss.mean:.2f} ±{loss.half_width:.2f}"


def results_table(matrix: Matrix) -> str:
  """The matrix as Markdown: rows training strategy, columns evaluation masking.

  A cell reads "accuracy % ±half-width · loss ±half-width" (95% over batches); the best
  accuracy of each column is bold (ties: all of them). A last row gives the baseline of
  always predicting the most frequent training token, on the same masks.
  """
  best = {m: (ranking(matrix, m) or [(None, None)])[0][1] for m in matrix.maskings}
  lines = ["| trained with \\ evaluated on | " + " | ".join(matrix.maskings) + " |",
           "|---" * (len(matrix.maskings) + 1) + "|"]
  for s in matrix.strategies:
    cells = [_cell_text(matrix, s, m, best[m]) for m in matrix.maskings]
    lines.append(f"| {s} | " + " | ".join(cells) + " |")
  token = matrix.setup.get("baseline_token", "?")
  baseline = [("n/a" if matrix.masks[m].get("error")
               else f"{100 * matrix.masks[m]['baseline_accuracy']:.1f}") for m in matrix.maskings]
  lines.append(f"| *always `{token}`* | " + " | ".join(baseline) + " |")
  return "\n".join(lines)


def masks_table(matrix: Matrix) -> str:
  """What each evaluation masking predicts, measured on the masks every model saw."""
  lines = ["| evaluation masking | predicted tokens | in entity spans | in PMI n-grams | "
           "mean masked run (tokens) | masks sha256 |", "|---|---|---|---|---|---|"]
  for m in matrix.maskings:
    info = matrix.masks[m]
    if info.get("error"):
      lines.append(f"| {m} | unavailable: {info['error']} | | | | |")
      continue
    share = lambda key: "—" if info[key] is None else f"{100 * info[key]:.1f}%"
    lines.append(f"| {m} | {info['predictions']:,} | {share('in_entities')} | "
                 f"{share('in_ngrams')} | {info['run_length']:.2f} | `{info['sha256'][:12]}` |")
  return "\n".join(lines)


def paired_table(matrix: Matrix, metric: str) -> str:
  """Each strategy against the first one (the reference, e.g. random): paired 95% intervals.

  Loss in nats, accuracy in points; bold where the interval excludes 0.
  """
  reference = matrix.strategies[0]
  scale, digits = (100, 2) if metric == "accuracy" else (1, 3)
  lines = [f"| {metric}: trained with − {reference} \\ evaluated on | "
           + " | ".join(matrix.maskings) + " |", "|---" * (len(matrix.maskings) + 1) + "|"]
  for s in matrix.strategies[1:]:
    texts = []
    for m in matrix.maskings:
      gap = paired_gap(matrix, s, m, metric, reference)
      if gap is None:
        texts.append("—")
        continue
      text = (f"{scale * gap.mean:+.{digits}f} [{scale * gap.low:+.{digits}f}, "
              f"{scale * gap.high:+.{digits}f}]")
      texts.append(f"**{text}**" if gap.low > 0 or gap.high < 0 else text)
    lines.append(f"| {s} | " + " | ".join(texts) + " |")
  return "\n".join(lines)


def markdown(matrix: Matrix) -> str:
  """results.md: what was compared, the matrix, the maskings, paired gaps, and failures."""
  setup = matrix.setup
  lines = ["# Masking strategy comparison", ""]
  lines += [f"- {key}: {value}" for key, value in setup.get("description", {}).items()]
  lines += ["", "Cells: held-out MLM accuracy % ±95% half-width · loss ±95% half-width, "
            "over evaluation batches. Every model saw the same masks on the same rows in a "
            "column. Bold: best accuracy in the column. The intervals cover the choice of "
            "evaluation batches, not training noise: each strategy was trained once, with one "
            "seed (rerun with --config.seed to see how much that moves).", "",
            results_table(matrix), "",
            "## Evaluation maskings", "", masks_table(matrix)]
  if len(matrix.strategies) > 1:
    lines += ["", f"## Against `{matrix.strategies[0]}`, paired over the same batches", "",
              f"Each cell: the strategy's value minus `{matrix.strategies[0]}`'s on the same "
              "masked batches, mean and 95% interval. Lower loss and higher accuracy are "
              "better; bold: the interval excludes 0.", "", paired_table(matrix, "loss"), "",
              paired_table(matrix, "accuracy")]
  if probe_tasks(matrix):
    lines += ["", "## Probes", "",
              "Frozen features of held-out rows, labels from the annotator the data was "
              f"prepared with (`{setup.get('annotator')}`). syntax: a linear probe's accuracy on "
              "each word's pos_class; entities: its F1 on in-entity words; rare words: the "
              "model's MLM accuracy on masked tokens rarer than the median masked token; "
              "continuation: a linear probe telling a document's second half from another "
              "document's. The gold columns read the sentences of the labelled files given "
              f"(`{setup.get('probe_files') or 'none'}`): a linear probe's accuracy on each "
              "word's UPOS tag and dependency relation, its micro F1 on the entity types of "
              "in-entity words. Value % ±95% half-width over held-out groups "
              "(experiments/probes.py).", "", probes_table(matrix)]
  failures = [f"- `{s}` has no model: {r['error']}" for s, r in matrix.runs.items()
              if r.get("error")]
  failures += [f"- `{m}` unavailable: {info['error']}" for m, info in matrix.masks.items()
               if info.get("error")]
  if failures:
    lines += ["", "## Missing", "", *failures]
  runs = [f"{s} {r['seconds'] / 60:.1f} min" for s, r in matrix.runs.items()
          if r.get("seconds") is not None]
  if runs:
    lines += ["", f"Training wall time per run on this machine (the session that finished "
              f"it): {', '.join(runs)}."]
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- plots


def plot_curves(matrix: Matrix, path: str) -> None:
  """Validation loss against step, one line per training strategy (each under its own masking)."""
  fig = Figure(figsize=(7, 4.5))
  ax = fig.subplots()
  for s in matrix.strategies:
    curve = matrix.runs[s].get("curve") or []
    if curve:
      steps, losses = zip(*curve)
      ax.plot(steps, losses, marker="o", markersize=3, label=s)
  ax.set_xlabel("training step")
  ax.set_ylabel("validation MLM loss")
  ax.set_title("Validation loss, each run under its own training masking\n"
               "(levels differ by masking difficulty; the matrix compares on equal masks)",
               fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def accuracy_grid(matrix: Matrix) -> np.ndarray:
  """[strategies, maskings] mean accuracy, nan where there is no cell."""
  grid = np.full((len(matrix.strategies), len(matrix.maskings)), np.nan)
  for i, s in enumerate(matrix.strategies):
    for j, m in enumerate(matrix.maskings):
      if (s, m) in matrix.cells:
        grid[i, j] = np.mean(matrix.cells[s, m]["accuracy"])
  return grid


def plot_heatmap(matrix: Matrix, path: str) -> None:
  """Accuracy matrix; colour = points above or below the column's mean, text = accuracy %.

  Coloured relative to each column because the maskings differ in difficulty far more than the
  models do: raw accuracy would colour columns, not the differences between strategies.
  """
  grid = accuracy_grid(matrix)
  with np.errstate(invalid="ignore"):
    relative = 100 * (grid - np.nanmean(grid, axis=0, keepdims=True)) if grid.size else grid
  bound = max(float(np.nanmax(np.abs(relative))) if np.isfinite(relative).any() else 0.0, 0.5)
  fig = Figure(figsize=(1.6 + 1.3 * len(matrix.maskings), 1.4 + 0.55 * len(matrix.strategies)))
  ax = fig.subplots()
  image = ax.imshow(np.ma.masked_invalid(relative), cmap="RdBu", vmin=-bound, vmax=bound,
                    aspect="auto")
  for i in range(grid.shape[0]):
    for j in range(grid.shape[1]):
      text = "n/a" if np.isnan(grid[i, j]) else f"{100 * grid[i, j]:.1f}"
      ax.text(j, i, text, ha="center", va="center", fontsize=9)
  ax.set_xticks(range(len(matrix.maskings)), matrix.maskings, rotation=20)
  ax.set_yticks(range(len(matrix.strategies)), matrix.strategies)
  ax.set_xlabel("evaluated on")
  ax.set_ylabel("trained with")
  ax.set_title("Held-out MLM accuracy % (colour: points vs column mean)", fontsize=9)
  fig.colorbar(image, ax=ax, label="points vs column mean")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def plot_probes(matrix: Matrix, path: str) -> None:
  """Each strategy's profile across the probe tasks: grouped bars with 95% intervals."""
  tasks = probe_tasks(matrix)
  if not tasks:
    return
  strategies = [s for s in matrix.strategies if matrix.probes.get(s)]
  width = 0.8 / max(len(strategies), 1)
  fig = Figure(figsize=(1.8 + 1.9 * len(tasks), 3.8))
  ax = fig.subplots()
  for k, s in enumerate(strategies):
    stats = [mean_interval(matrix.probes[s].get(t, [])) for t in tasks]
    means = np.array([100 * i.mean for i in stats])
    errors = np.array([100 * i.half_width for i in stats])
    ax.bar(np.arange(len(tasks)) + (k - (len(strategies) - 1) / 2) * width, means, width,
           yerr=np.nan_to_num(errors), capsize=2, label=s)
  ax.set_xticks(range(len(tasks)), [PROBE_HEADERS.get(t, t) for t in tasks], fontsize=8)
  ax.set_ylabel("% (95% interval over held-out groups)")
  ax.set_title(f"Probes of each trained model (labels: {matrix.setup.get('annotator')})",
               fontsize=9)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8, ncol=min(len(strategies), 5))
  fig.tight_layout()
  fig.savefig(path, dpi=120)

