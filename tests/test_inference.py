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
