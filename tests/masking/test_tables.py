"""Tests of VocabTables: specials, word-start conventions, function words, tokenizer adapters."""

import jax
import numpy as np
import pytest

from mlmjax import masking
from mlmjax.masking import tables as tables_lib

TEXT = ["The quick brown fox jumps over the lazy dog.",
        "Foxes are quicker than dogs, and the dogs are lazier than foxes.",
        "A jumping fox is quick; a sleeping dog is lazy."] * 4


def test_from_vocab_fields_and_pytree():
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "##est", "fox"]
  t = masking.VocabTables.from_vocab(vocab, frequency=np.arange(9.0))
  np.testing.assert_array_equal(t.is_special, [1, 1, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(t.is_word_start, [1, 1, 1, 1, 1, 1, 1, 0, 1])
  np.testing.assert_array_equal(t.function_word, [0, 0, 0, 0, 0, 1, 0, 0, 0])
  assert (t.mask_id, t.pad_id, t.vocab_size) == (4, 0, 9)
  assert t.frequency.dtype == np.float32 and t.idf.shape == (9,)
  leaves, treedef = jax.tree.flatten(t)
  assert len(leaves) == 5  # mask_id, pad_id, vocab_size are static
  assert jax.tree.unflatten(treedef, leaves).mask_id == 4


def test_from_vocab_errors_name_the_fix():
  with pytest.raises(ValueError, match="not in the vocabulary"):
    masking.VocabTables.from_vocab(["a", "b"])
  with pytest.raises(ValueError, match="one value per id"):
    masking.VocabTables.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], frequency=[1])


@pytest.mark.parametrize("convention,vocab,starts", [
    ("wordpiece", ["[MASK]", "play", "##ing", "##s", "x"], [1, 1, 0, 0, 1]),
    ("sentencepiece", ["[MASK]", "\u2581play", "ing", "\u2581x", "s"], [1, 1, 0, 1, 0]),
    ("byte_level", ["[MASK]", "\u0120play", "ing", "\u0120x", ","], [1, 1, 0, 1, 0]),
])
def test_word_start_conventions_detected(convention, vocab, starts):
  assert tables_lib.detect_convention(vocab[1:]) == convention
  t = masking.VocabTables.from_vocab(vocab, special_tokens=["[MASK]"], mask_token="[MASK]")
  np.testing.assert_array_equal(t.is_word_start, starts)


def test_mapping_vocab_with_holes_marks_holes_special():
  t = masking.VocabTables.from_vocab({"[MASK]": 0, "a": 1, "b": 3}, special_tokens=[],
                                     mask_token="[MASK]")
  np.testing.assert_array_equal(t.is_special, [1, 0, 1, 0])


def _trained(kind):
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers, decoders
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  if kind == "wordpiece":
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
  elif kind == "byte_level":
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  else:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="[UNK]")
  tok.train_from_iterator(TEXT, trainer)
  return tok


@pytest.mark.parametrize("kind", ["wordpiece", "byte_level", "sentencepiece"])
def test_from_tokenizer_three_families(kind):
  tok = _trained(kind)
  t = masking.VocabTables.from_tokenizer(tok)
  assert t.vocab_size == tok.get_vocab_size()
  assert t.mask_id == tok.token_to_id("[MASK]") and t.pad_id == tok.token_to_id("[PAD]")
  assert int(np.asarray(t.is_special).sum()) == 5
  # Every word of an encoded sentence starts with exactly one word-start token.
  enc = tok.encode("the quickest foxes jumping")
  starts = np.asarray(t.is_word_start)[enc.ids]
  assert starts.sum() == len(set(w for w in enc.word_ids if w is not None))


def test_from_transformers_tokenizer():
  from transformers import PreTrainedTokenizerFast
  tok = _trained("wordpiece")
  hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                               cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
  a = masking.VocabTables.from_tokenizer(hf)
  b = masking.VocabTables.from_tokenizer(tok)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert (a.mask_id, a.pad_id) == (b.mask_id, b.pad_id)
