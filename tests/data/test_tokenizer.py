"""Tests of mlmjax.data.tokenizer: training, the workdir cache, loading vocab.txt/tokenizer.json."""

import json
import os

import pytest
import tokenizers

from mlmjax.data import tokenizer as tokenizer_lib

_SAMPLES = [
    "The Model learns WORDS from context.",
    "Héllo wörld, naïve café! 中文字 ok?",
    "json.dumps(obj, indent=2) -> str; x[0] += 1",
    "zzqx unseenword ☃",
    "Fill the [MASK] in, then [SEP] it.",
]


@pytest.fixture
def trained(make_documents):
  return tokenizer_lib.train_tokenizer(make_documents(50), vocab_size=150, lowercase=True)


def test_train_bert_wordpiece(trained):
  assert tokenizer_lib.special_ids(trained) == {
      "[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
  assert trained.get_vocab_size() == 150
  assert any(t.startswith("##") for t in trained.get_vocab())
  encoding = trained.encode("The MODEL predicts")
  assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
  assert encoding.ids == trained.encode("the model predicts").ids  # lowercased
  assert trained.decode(encoding.ids) == "the model predicts"


def test_training_is_deterministic(trained, make_documents):
  # The trainer alone numbers tokens in hash-map order (huggingface/tokenizers#1794); a second
  # training in the same process would catch that.
  again = tokenizer_lib.train_tokenizer(make_documents(50), vocab_size=150, lowercase=True)
  assert tokenizer_lib.tokenizer_hash(again) == tokenizer_lib.tokenizer_hash(trained)


def test_special_tokens_in_text(trained):
  ids = trained.encode("a [MASK] b", add_special_tokens=False).ids
  assert tokenizer_lib.special_ids(trained)["[MASK]"] in ids
  assert json.loads(trained.to_str())["added_tokens"][4]["content"] == "[MASK]"
  assert len(json.loads(trained.to_str())["added_tokens"]) == 5


def test_get_tokenizer_trains_once_then_loads_cache(tmp_path, data_config, make_documents,
                                                    monkeypatch):
  config = data_config(vocab_size=120)
  docs = make_documents(40)
  first = tokenizer_lib.get_tokenizer(config, str(tmp_path), documents=docs)
  cache = tmp_path / "tokenizer"
  assert {"tokenizer.json", "vocab.txt", "spec.json"} <= set(os.listdir(cache))

  def no_training(*args, **kwargs):
    raise AssertionError("trained again instead of loading the cache")

  with monkeypatch.context() as m:
    m.setattr(tokenizer_lib, "train_tokenizer", no_training)
    second = tokenizer_lib.get_tokenizer(config, str(tmp_path), documents=docs)
  assert tokenizer_lib.tokenizer_hash(second) == tokenizer_lib.tokenizer_hash(first)
  # Without documents (after prepare, at inference) the cache is used without the corpus.
  with monkeypatch.context() as m:
    m.setattr(tokenizer_lib, "train_tokenizer", no_training)
    m.setattr(tokenizer_lib.corpora, "load_documents", no_training)
    third = tokenizer_lib.get_tokenizer(config, str(tmp_path))
  assert tokenizer_lib.tokenizer_hash(third) == tokenizer_lib.tokenizer_hash(first)
  # Other documents retrain.
  retrained = tokenizer_lib.get_tokenizer(config, str(tmp_path), documents=make_documents(40, 9))
  assert json.loads((cache / "spec.json").read_text())["documents_sha256"] == (
      tokenizer_lib.corpora.documents_hash(make_documents(40, 9)))
  assert retrained.get_vocab_size() == 120
  # Other training inputs invalidate the cache.
  bigger = tokenizer_lib.get_tokenizer(data_config(vocab_size=160), str(tmp_path), documents=docs)
  assert bigger.get_vocab_size() == 160
  cased = tokenizer_lib.get_tokenizer(data_config(vocab_size=160, lowercase=False),
                                      str(tmp_path), documents=docs)
  assert cased.encode("The").ids != cased.encode("the").ids


def test_get_tokenizer_defaults_to_the_training_split(tmp_path, files_config):
  tok = tokenizer_lib.get_tokenizer(files_config, str(tmp_path))
  assert tok.get_vocab_size() == files_config.vocab_size


def test_vocab_txt_matches_hugging_face_bert(tmp_path, trained):
  transformers = pytest.importorskip("transformers")
  tokenizer_lib.save_tokenizer(trained, str(tmp_path))
  vocab = str(tmp_path / "vocab.txt")
  for lowercase in (True, False):
    ours = tokenizer_lib.load_tokenizer(vocab, lowercase=lowercase)
    # The pure-Python BertTokenizer: an implementation independent of the tokenizers library.
    theirs = transformers.BertTokenizer(vocab, do_lower_case=lowercase)
    for text in _SAMPLES:
      assert ours.encode(text).ids == theirs(text)["input_ids"], (lowercase, text)


def test_tokenizer_json_round_trip(tmp_path, trained):
  tokenizer_lib.save_tokenizer(trained, str(tmp_path))
  loaded = tokenizer_lib.load_tokenizer(str(tmp_path / "tokenizer.json"))
  assert tokenizer_lib.tokenizer_hash(loaded) == tokenizer_lib.tokenizer_hash(trained)
  from_vocab = tokenizer_lib.load_tokenizer(str(tmp_path / "vocab.txt"))
  for text in _SAMPLES:
    assert loaded.encode(text).ids == trained.encode(text).ids == from_vocab.encode(text).ids


def test_tokenizer_json_lowercase_mismatch_is_logged(tmp_path, trained, caplog):
  tokenizer_lib.save_tokenizer(trained, str(tmp_path))
  tokenizer_lib.load_tokenizer(str(tmp_path / "tokenizer.json"), lowercase=True)
  assert "data.lowercase" not in caplog.text
  tokenizer_lib.load_tokenizer(str(tmp_path / "tokenizer.json"), lowercase=False)
  assert "set data.lowercase to match it" in caplog.text


def test_tokenizer_path_in_config(tmp_path, trained, data_config):
  tokenizer_lib.save_tokenizer(trained, str(tmp_path / "saved"))
  config = data_config(tokenizer_path=str(tmp_path / "saved" / "vocab.txt"))
  tok = tokenizer_lib.get_tokenizer(config, str(tmp_path / "work"))
  assert tok.get_vocab() == trained.get_vocab()
  assert not (tmp_path / "work" / "tokenizer").exists()  # nothing trained


def test_hash_tells_tokenizers_apart(trained, make_documents):
  other = tokenizer_lib.train_tokenizer(make_documents(50), vocab_size=140, lowercase=True)
  assert tokenizer_lib.tokenizer_hash(other) != tokenizer_lib.tokenizer_hash(trained)
  assert len(tokenizer_lib.tokenizer_hash(trained)) == 64


def test_load_errors(tmp_path):
  (tmp_path / "nospecial.txt").write_text("hello\nworld\n")
  (tmp_path / "dup.txt").write_text("[PAD]\nhello\nhello\n")
  (tmp_path / "broken.json").write_text(json.dumps({"model": 3}))
  (tmp_path / "vocab.model").write_text("x")
  (tmp_path / "vocab.bin").write_text("x")
  (tmp_path / "vocab.json").write_text(json.dumps({"[PAD]": 0, "a": 1}))
  (tmp_path / "list.json").write_text("[1, 2]")
  cases = [
      (tmp_path / "missing.txt", "does not exist"),
      (tmp_path, "is a directory"),
      (tmp_path / "nospecial.txt", r"lacks the special tokens \[.\[PAD\] or <pad>"),
      (tmp_path / "dup.txt", r"dup.txt:3: duplicate token"),
      (tmp_path / "broken.json", "not a valid tokenizer file"),
      (tmp_path / "vocab.model", "not a SentencePiece model"),
      (tmp_path / "vocab.bin", "expected a tokenizer.json, a WordPiece vocab.txt"),
      (tmp_path / "vocab.json", "merges.txt is missing"),
      (tmp_path / "list.json", "neither a tokenizer.json"),
  ]
  for path, message in cases:
    with pytest.raises(tokenizer_lib.TokenizerError, match=message):
      tokenizer_lib.load_tokenizer(str(path))


_SP_TEXTS = ["New York City is big.", "  Hello   [MASK] world!  Ünïcode ﬁne ",
             "the quick brown fox, 42 times", "zzqx ☃ unseen"]


def test_sentencepiece_model_encodes_as_sentencepiece(tmp_path, make_documents):
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top  (test extra)
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(make_documents(200) + _SP_TEXTS[:1] * 20), encoding="utf-8")
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=120,
      user_defined_symbols=["<mask>"], pad_id=0, unk_id=1, bos_id=2, eos_id=3,
      minloglevel=2)
  tok = tokenizer_lib.load_tokenizer(str(tmp_path / "sp.model"))
  reference = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
  for text in _SP_TEXTS + make_documents(10, seed=3):
    assert tok.encode(text).ids == reference.encode(text), text
  assert tokenizer_lib.special_roles(tok) == {"pad": 0, "unk": 1, "cls": 2, "sep": 3,
                                              "mask": 4}
  assert tok.encode("a <mask> b").ids.count(4) == 1  # the mask is one atomic token


def test_byte_level_bpe_from_vocab_and_merges(tmp_path, make_documents):
  trainer = tokenizers.ByteLevelBPETokenizer()
  trainer.train_from_iterator(make_documents(100), vocab_size=300, show_progress=False,
                              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
  trainer.save_model(str(tmp_path))
  tok = tokenizer_lib.load_tokenizer(str(tmp_path / "vocab.json"))
  for text in ["The model predicts words.", " two  spaces", "émoji ☃ <mask> x"]:
    assert tok.encode(text).ids == trainer.encode(text).ids, text
  assert tokenizer_lib.special_tokens(tok) == {"pad": "<pad>", "unk": "<unk>", "cls": "<s>",
                                               "sep": "</s>", "mask": "<mask>"}
  assert tok.decode(tok.encode("The model predicts words.").ids) == "The model predicts words."
