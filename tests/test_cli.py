"""The command line: mistakes a user can make end in one clear line, not a traceback."""

import subprocess
import sys

from helpers import ROOT, TINY_OVERRIDES


def run_cli(entry: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
  code = f"import sys; sys.argv[0] = {entry!r}; from mlmjax import cli; cli.{entry[7:].replace('-', '_')}()"
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        cwd=cwd or ROOT, timeout=300, check=False)


def test_unknown_config_key_names_the_nearest_key(tmp_path):
  out = run_cli("mlmjax-train", f"--workdir={tmp_path}", "--config.train.stepz=3")
  assert out.returncode != 0
  assert 'unknown config key. Did you mean "steps"' in out.stderr
  assert "Traceback" not in out.stderr


def test_unknown_flag_is_not_called_a_config_key(tmp_path):
  out = run_cli("mlmjax-train", f"--workdir={tmp_path}", "--stepz=3")
  assert out.returncode != 0
  assert "Unknown command line flag 'stepz'" in out.stderr
  assert "unknown config key" not in out.stderr and "Traceback" not in out.stderr


def test_missing_corpus_path_is_one_line(tmp_path):
  out = run_cli("mlmjax-train", f"--workdir={tmp_path}", "--config.data.source=files",
                f"--config.data.paths={tmp_path}/nothing/*.txt")
  assert out.returncode != 0
  assert "mlmjax: error:" in out.stderr and "nothing" in out.stderr
  assert "Traceback" not in out.stderr


def test_empty_corpus_is_one_line(tmp_path):
  (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
  out = run_cli("mlmjax-prepare", f"--workdir={tmp_path / 'w'}", "--config.data.source=files",
                f"--config.data.paths={tmp_path}/empty.txt")
  assert out.returncode != 0
  assert "mlmjax: error:" in out.stderr and "empty" in out.stderr.lower()
  assert "Traceback" not in out.stderr


QUICKSTART_OVERRIDES = (*TINY_OVERRIDES, "--config.train.steps=4",
                        "--config.train.checkpoint_every=2")


def test_quickstart_trains_exports_and_demos(tmp_path):
  from helpers import write_corpus
  corpus = write_corpus(tmp_path / "corpus.txt")
  workdir = tmp_path / "run"
  out = run_cli("mlmjax-quickstart", f"--workdir={workdir}", f"--config.data.paths={corpus}",
                *QUICKSTART_OVERRIDES)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "held-out MLM loss" in out.stdout and "held-out masked content words" in out.stdout
  assert "true: " in out.stdout and "guesses: " in out.stdout
  assert (workdir / "hf" / "model.safetensors").exists()
  assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"  # the README shows one

  # The export predicts, in the transformers fill-mask pipeline, what mlmjax-fill-mask prints.
  import transformers
  from mlmjax import inference
  text = "the parser [MASK] a new string."
  ours = inference.fill_mask(*inference.load_trained(str(workdir))[:2], [text])[0][0]
  fill = transformers.pipeline("fill-mask", model=str(workdir / "hf"), device="cpu")
  theirs = fill(text, top_k=5)
  assert [t["token_str"] for t in theirs] == [tok for tok, _ in ours]
  for t, (_, p) in zip(theirs, ours):
    assert abs(t["score"] - p) < 1e-4

  cli = run_cli("mlmjax-fill-mask", f"--checkpoint={workdir}/checkpoints/4", text)
  assert cli.returncode == 0, cli.stderr[-2000:]
  assert f"[MASK]: {ours[0][0]} ({ours[0][1]:.2f})" in cli.stdout

  # mlmjax-mask on the run: its tokenizer and data; contextual masking reads its trained model.
  cli = run_cli("mlmjax-mask", f"--workdir={workdir}", f"--config.data.paths={corpus}",
                *QUICKSTART_OVERRIDES, "--strategy=contextual", "the parser returns a string.")
  assert cli.returncode == 0, cli.stderr[-2000:]
  assert f"hidden states: the trained model in {workdir}" in cli.stdout
  assert "Masked:" in cli.stdout and "[MASK]" in cli.stdout


def test_fill_mask_without_a_checkpoint_says_what_to_do(tmp_path):
  out = run_cli("mlmjax-fill-mask", f"--workdir={tmp_path}", "a [MASK] b")
  assert out.returncode != 0
  assert "No checkpoint" in out.stderr and "mlmjax-train" in out.stderr
  assert "Traceback" not in out.stderr


def test_help_lists_the_commands_own_flags():
  out = run_cli("mlmjax-mask", "--help")
  assert "--strategy" in out.stdout and "--rate" in out.stdout  # (absl exits 1 after --help)
  out = run_cli("mlmjax-train", "--help")
  assert "--workdir" in out.stdout and "--config" in out.stdout
