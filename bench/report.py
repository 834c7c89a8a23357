r"""The Markdown table of benchmark records (`harness.py` says what a record holds).

    python -m bench.report [--title=TITLE] [--json_out=ALL.json] a.json b.json ...

Train and masking records are rows, ours first; a train row's last column compares it with the
same-card reference (HF at the same model and S, or, for a variant "mlmjax, ...", the unchanged
step), a masking row's with the train step at its shape. A record of the largest-batch search
(`fit.py`) is a line under the table. `bench/gpu_report.sh` prints its report with this.
"""

from __future__ import annotations

from absl import app, flags

from bench import harness

HEADER = ("run", "model", "B×S", "tokens/s", "step ms", "host ms", "TFLOP/s", "MFU",
          "compile s", "peak GiB", "vs reference")


def _fmt(value, spec: str, scale: float = 1.0) -> str:
  return "n/a" if value is None else format(value * scale, spec)


def _find(records: list[dict], **match) -> dict | None:
  for r in records:
    if all(r.get(k) == v for k, v in match.items()):
      return r
  return None


def _reference(r: dict, records: list[dict]) -> str:
  """The same-card ratio shown beside a train record."""
  if r["name"].startswith("HF"):
    return ""
  if r["name"].startswith("mlmjax, "):  # a variant: compared with the unchanged run
    ref = _find(records, kind="train", name="mlmjax", model=r["model"], seq_len=r["seq_len"])
    if ref and ref.get("tokens_per_s") and r.get("tokens_per_s"):
      return f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}× mlmjax"
  for name in ("HF torch.compile", "HF eager"):
    ref = _find(records, kind="train", name=name, model=r["model"], seq_len=r["seq_len"])
    if ref and ref.get("tokens_per_s") and r.get("tokens_per_s"):
      return f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}× {name}"
  return ""


def _row(r: dict, records: list[dict], base_step_ms: float | None) -> list[str]:
  shape = f"{r['batch']}×{r['seq_len']}"
  if r["kind"] == "masking":
    share = r.get("share_of_step")
    if share is None and base_step_ms:
      share = r["step_ms"] / base_step_ms
    return [f"masking: {r['name']}", r["model"], shape, _fmt(r.get("tokens_per_s"), ",.0f"),
            _fmt(r["step_ms"], ".3f"), "", "", "", _fmt(r.get("compile_s"), ".1f"), "",
            "n/a" if share is None else f"{share:.2%} of the step"]
  tflops = r.get("tflops")
  return [r["name"], r["model"], shape, _fmt(r.get("tokens_per_s"), ",.0f"),
          _fmt(r.get("step_ms"), ".1f"), _fmt(r.get("host_ms"), ".2f"),
          _fmt(tflops, ".0f" if (tflops or 0) >= 10 else ".3f"),
          _fmt(r.get("mfu"), ".1%"),
          _fmt(r.get("compile_s"), ".1f"), _fmt(r.get("peak_gib"), ".1f"),
          _reference(r, records)]


def fit_line(r: dict) -> str:
  """One line of a largest-batch record: what trained, what did not, XLA's plan beyond."""
  found = str(r.get("largest_batch"))
  if r.get("limit_reached"):
    found = f"≥ {found} (the search's limit)"
  elif not r.get("done", True):
    found = f"≥ {found} (the search was cut short)"
  estimate = r.get("plan_estimate")
  return (f"- BERT-{r['model']} s{r['seq_len']}, remat={r.get('remat')}: largest batch that "
          f"trains = {found}; first batch out of memory: {r.get('first_oom') or 'none tried'}"
          + (f"; XLA's memory plan extrapolates to ~{estimate}" if estimate else ""))


def _order(r: dict) -> tuple:
  """Train rows by model, then sequence length, ours first; masking rows after them."""
  models = {"tiny": 0, "dispatch": 0, "mini": 0, "base": 1, "large": 2}
  names = {"mlmjax": 0, "HF torch.compile": 1, "HF eager": 2}
  return (r["kind"] == "masking", models.get(r["model"], 3), r["seq_len"],
          names.get(r["name"], 3))


def report(records: list[dict], title: str = "") -> str:
  """The Markdown table of all train and masking records, then a line per fit record."""
  runs = sorted((r for r in records if r["kind"] in ("train", "masking")), key=_order)
  base = _find(records, kind="train", name="mlmjax")
  lines = [f"### {title}", ""] if title else []
  if runs:
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in runs:
      lines.append("| " + " | ".join(_row(r, records, base and base.get("step_ms"))) + " |")
    lines.append("")
  devices = sorted({r["device"] for r in records if r.get("device")})
  software = sorted({f"{k} {r[k]}" for r in records for k in ("jax", "torch", "transformers")
                     if r.get(k)})
  lines.append(f"Device: {', '.join(devices) or 'unknown'}"
               + (f"; {', '.join(software)}." if software else "."))
  return "\n".join(lines + [fit_line(r) for r in records if r["kind"] == "fit"])


def main(argv):
  records = harness.load_records(argv[1:])
  harness.write_records(flags.FLAGS.json_out, records)
  print(report(records, flags.FLAGS.title))


if __name__ == "__main__":
  flags.DEFINE_string("title", "", "the table's heading")
  flags.DEFINE_string("json_out", "", "also write every record read here, as one JSON list")
  app.run(main)
