r"""Show what a masking strategy does to a sentence.

    mlmjax-mask --strategy=span "The quick brown fox jumps over the lazy dog."
    mlmjax-mask --strategy=whole_word --steps=2 --rate=0.3 "She loves reading books."
    mlmjax-mask --strategy=entity --vocab=vocab.txt "Barack Obama was born in Hawaii."

Prints the original and the masked text, as the seed document shows its examples, then each
prediction target. Without --vocab, a small WordPiece vocabulary is trained on the input text
itself (nothing is downloaded). Capitalised words inside a sentence stand in for entities and
PMI n-grams; frequency and IDF statistics come from the input text; contextual masking uses
random embeddings here (in training it reads the model's own).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np

from mlmjax import masking

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer(text: str, vocab_path: str = "", vocab_size: int = 120) -> Any:
  """An uncased WordPiece tokenizer: loaded from vocab.txt, or trained on `text`."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
  if vocab_path:
    tok = Tokenizer(models.WordPiece.from_file(vocab_path, unk_token="[UNK]"))
  else:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  if not vocab_path:
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                        show_progress=False)
    tok.train_from_iterator([text], trainer)
  return tok


def encode(tok: Any, text: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
  """[1, S] ids "[CLS] text [SEP]" and each token's character span (specials: (0, 0))."""
  enc = tok.encode(text, add_special_tokens=False)
  ids = [tok.token_to_id("[CLS]")] + enc.ids + [tok.token_to_id("[SEP]")]
  return np.asarray([ids], np.int32), [(0, 0)] + list(enc.offsets) + [(0, 0)]


def capitalised_spans(text: str, offsets: list[tuple[int, int]]) -> np.ndarray:
  """[1, S] int32 span ids: runs of capitalised words (entity stand-in; 0 = none).

  A sentence's first word counts only when the next word is capitalised too ("Barack Obama").
  """
  words = list(re.finditer(r"\w+", text))
  caps = [w.group()[:1].isupper() for w in words]
  marked = []
  for i, w in enumerate(words):
    opens = i == 0 or text[words[i - 1].end():w.start()].strip()[-1:] in (".", "!", "?")
    follows = i + 1 < len(words) and caps[i + 1] and not text[w.end():words[i + 1].start()].strip()
    marked.append(caps[i] and (not opens or follows))
  span_of_char = np.zeros(len(text) + 1, np.int32)
  k = 0
  for i, w in enumerate(words):
    if marked[i]:
      joined = i > 0 and marked[i - 1] and not text[words[i - 1].end():w.start()].strip()
      k += 0 if joined else 1
      span_of_char[w.start():w.end()] = k
  return np.asarray([[span_of_char[a] if b > a else 0 for a, b in offsets]], np.int32)


def statistics(ids: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """[V] token counts and add-one IDF over the row's tokens (a stand-in for corpus statistics)."""
  counts = np.bincount(ids.ravel(), minlength=vocab_size).astype(np.float32)
  idf = np.log((2.0 + counts.max()) / (1.0 + counts)).astype(np.float32)
  return counts, idf


def render(text: str, ids: np.ndarray, new_ids: np.ndarray, offsets: list[tuple[int, int]],
           tok: Any) -> str:
  """The text with each changed token's characters replaced by its new token."""
  pieces, cursor = [], 0
  for i, (a, b) in enumerate(offsets):
    if a == b:
      continue
    pieces.append(text[cursor:a])
    pieces.append(text[a:b] if new_ids[i] == ids[i] else tok.id_to_token(int(new_ids[i])))
    cursor = b
  return "".join(pieces) + text[cursor:]


def mask_text(text: str, strategy: str, rate: float, steps: int, seed: int,
              mask_prob: float = 0.8, random_prob: float = 0.1, vocab_path: str = "",
              vocab_size: int = 120) -> list[str]:
  """Lines showing `strategy` applied to `text` at steps 0..steps-1."""
  tok = build_tokenizer(text, vocab_path, vocab_size)
  ids, offsets = encode(tok, text)
  counts, idf = statistics(ids, tok.get_vocab_size())
  tables = masking.VocabTables.from_tokenizer(tok, frequency=counts + 1.0, idf=idf)
  config = masking.default_config()
  config.strategy, config.rate = strategy, rate
  config.mask_prob, config.random_prob = mask_prob, random_prob
  config.max_predictions = ids.shape[1]
  config.mixture.strategies = ("dynamic", "span", "whole_word")
  spans = capitalised_spans(text, offsets)
  batch = {"input_ids": ids, "entity_ids": spans, "ngram_ids": spans}
  masker = jax.jit(masking.make_masker(config, tables))
  state = masking.init_state(config, tables)
  embeddings = jax.random.normal(jax.random.key(seed), (tables.vocab_size, 16))
  lines = [f'Original: "{text}"']
  for step in range(steps):
    out = masker(jax.random.key(seed), batch, step, state, embeddings)
    new_ids = np.asarray(out.input_ids)[0]
    label = f"Masked (step {step}):" if steps > 1 else "Masked:  "
    lines.append(f'{label} "{render(text, ids[0], new_ids, offsets, tok)}"')
    targets = []
    for pos, w in zip(np.asarray(out.positions)[0], np.asarray(out.weights)[0]):
      if w > 0:
        a, b = offsets[pos]
        how = ("[MASK]" if new_ids[pos] == tables.mask_id else
               "kept" if new_ids[pos] == ids[0, pos] else
               f"random: {tok.id_to_token(int(new_ids[pos]))}")
        targets.append(f"{text[a:b]} ({how})")
    lines.append("  predict: " + (", ".join(targets) or "nothing (budget 0)"))
  return lines
