"""The quickstart's held-out demo: one content word masked per sentence, true word vs top-k."""

from helpers import write_corpus
from mlmjax import inference, masking
from mlmjax.data import tokenizer as tokenizer_lib


def test_cloze_sentences_mask_one_content_word(tmp_path):
  docs = write_corpus(tmp_path / "c.txt").read_text().split("\n\n")
  tok = tokenizer_lib.train_tokenizer(docs, 200, lowercase=True)
  questions = inference.cloze_sentences(docs, tok, 30, seed=3)
  assert len(questions) == 30
  assert questions == inference.cloze_sentences(docs, tok, 30, seed=3)  # reproducible
  sentences = {" ".join(s.split()).lower() for d in docs for s in d.replace(". ", ".\n").split("\n")}
  for q in questions:
    assert q.text.count("[MASK]") == 1 and len(q.answer) >= 3
    assert q.answer not in masking.tables.DEFAULT_FUNCTION_WORDS
    assert tok.encode(q.answer, add_special_tokens=False).ids == [tok.token_to_id(q.answer)]
    assert q.text.replace("[MASK]", q.answer).lower() in sentences  # the sentence, one word out


def test_format_cloze_reports_first_and_top_k_shares():
  answered = [inference.Cloze("a [MASK] b", "list", ("list", "x", "y", "z", "w")),
              inference.Cloze("c [MASK] d", "file", ("x", "file", "y", "z", "w")),
              inference.Cloze("e [MASK] f", "path", ("x", "y", "z", "w", "v")),
              inference.Cloze("g [MASK] h", "name", ("x", "y", "z", "w", "v"))]
  text = inference.format_cloze(answered, shown=2)
  assert "true: list" in text and "(in the top 5)" in text
  assert text.endswith("Of 4 held-out masked content words, 25.0% are the model's first guess "
                       "and 50.0% are in its top 5.")
  assert len(text.splitlines()) == 1 + 2 * 2 + 1


def test_a_trained_model_loads_its_parameters_alone(tiny, tmp_path):
  """load_trained restores only the parameters (checkpoint.restore_params: the AdamW moments
  stay on disk), and they are the full state's parameters, bit for bit."""
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  from flax import nnx
  from mlmjax.train import loop
  tiny.train.update(steps=2, checkpoint_every=2, eval_every=0)
  workdir = tmp_path / "run"
  loop.train_and_evaluate(tiny, str(workdir))
  model, _, _ = inference.load_trained(str(workdir))
  manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "data", "meta"))
  full = manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  assert set(full) >= {"params", "opt_state"}  # what the checkpoint holds besides
  ours = jax.tree.leaves(nnx.state(model, nnx.Param))
  saved = jax.tree.leaves(full["params"])
  assert len(ours) == len(saved)
  for a, b in zip(ours, saved):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
