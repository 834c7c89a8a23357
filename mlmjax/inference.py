"""A trained workdir as a model: load it, predict `[MASK]` tokens, export it to Hugging Face."""

import dataclasses
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mlmjax import checkpoint, masking, storage
from mlmjax import workdir as workdir_lib
from mlmjax.convert import hf
from mlmjax.data import rules
from mlmjax.data import stats as data_stats
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.model import MaskedLM
from mlmjax.train import state as state_lib


def load_trained(workdir: str, step: int | None = None):
  """(model, tokenizer, meta) from the checkpoint at `step` (latest when None), on one device.

  The checkpoint may come from any mesh: it is restored onto the shardings of a 1-device mesh.
  `workdir` is a local folder or an object-store URL (gs://bucket/run).
  """
  manager = checkpoint.open_for_reading(workdir)
  if manager is not None:
    step = manager.latest_step() if step is None else step
  if manager is None or step is None or step not in manager.all_steps():
    raise FileNotFoundError(f"No checkpoint {'' if step is None else step} in {workdir}: train "
                            f"first (mlmjax-train --workdir={workdir}); available steps: "
                            f"{list(manager.all_steps()) if manager else []}")
  meta = checkpoint.read_meta(manager, step)
  config = ml_collections.ConfigDict(meta["config"])
  config.mesh.shape = (1, 1, 1)
  tokenizer = tokenizer_lib.get_tokenizer(config.data, workdir)
  data_dir = os.fspath(storage.join(workdir, workdir_lib.DATA))
  if storage.join(data_dir, "token_stats.npz").exists():  # the training run's tables
    tables = data_stats.vocab_tables(tokenizer, data_dir)
  else:  # a workdir copied without its data: the masker then lacks corpus statistics
    tables = masking.VocabTables.from_tokenizer(tokenizer)
  pad_id = tokenizer_lib.special_roles(tokenizer)["pad"]
  c = state_lib.build(config, tables, tokenizer.get_vocab_size(), pad_id,
                 devices=jax.devices()[:1])
  params = checkpoint.restore_params(manager, step, c.abstract_state.params)
  return nnx.merge(c.graphdef, params), tokenizer, meta


def export_workdir(workdir: str, out_dir: str, step: int | None = None) -> str:
  """Exports the checkpoint at `step` (latest when None) as a Hugging Face folder.

  `workdir` and `out_dir` may each be a local folder or an object-store URL."""
  model, tokenizer, meta = load_trained(workdir, step)
  return hf.export(nnx.state(model, nnx.Param), model.cfg, tokenizer, out_dir,
                   lowercase=meta["config"]["data"]["lowercase"])


def fill_mask(model: MaskedLM, tokenizer, texts: list[str], top_k: int = 5,
              ) -> list[list[list[tuple[str, float]]]]:
  """For each text, for each mask token (`[MASK]`, or `<mask>`...) in it: the top-k
  (token, probability) pairs."""
  mask_token = tokenizer_lib.special_tokens(tokenizer)["mask"]
  mask_id = tokenizer.token_to_id(mask_token)
  pad_id = model.cfg.pad_token_id
  encodings = [tokenizer.encode(t).ids for t in texts]
  for text, ids in zip(texts, encodings):
    if mask_id not in ids:
      raise ValueError(f"No {mask_token} in {text!r}")
    if len(ids) > model.cfg.max_position_embeddings:
      raise ValueError(f"{text!r} is {len(ids)} tokens; the model takes at most "
                       f"{model.cfg.max_position_embeddings}")
  seq = max(len(ids) for ids in encodings)
  slots = max(ids.count(mask_id) for ids in encodings)
  input_ids = np.full((len(texts), seq), pad_id, np.int32)
  positions = np.zeros((len(texts), slots), np.int32)
  for row, ids in enumerate(encodings):
    input_ids[row, : len(ids)] = ids
    where = [i for i, t in enumerate(ids) if t == mask_id]
    positions[row, : len(where)] = where
  logits = model(jnp.asarray(input_ids), jnp.asarray(positions))[..., : model.cfg.vocab_size]
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  results = []
  for row, ids in enumerate(encodings):
    per_mask = []
    for slot in range(ids.count(mask_id)):
      best = np.argsort(-probs[row, slot])[:top_k]
      per_mask.append([(tokenizer.id_to_token(int(t)), float(probs[row, slot, t])) for t in best])
    results.append(per_mask)
  return results


def format_predictions(texts: list[str], predictions) -> str:
  lines = []
  for text, per_mask in zip(texts, predictions):
    lines.append(text)
    for i, top in enumerate(per_mask):
      shown = ", ".join(f"{tok} ({p:.2f})" for tok, p in top)
      lines.append(f"  [MASK]{'' if len(per_mask) == 1 else ' #' + str(i + 1)}: {shown}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- held-out cloze

_WORD = re.compile(r"[A-Za-z]+")


@dataclasses.dataclass(frozen=True)
class Cloze:
  """A held-out sentence with one content word masked, and the model's guesses."""
  text: str  # the sentence with the word replaced by the mask token
  answer: str  # the word, as the tokenizer writes it (lowercased by an uncased one)
  top: tuple[str, ...] = ()  # the model's top-k, best first


def cloze_sentences(documents: list[str], tokenizer, count: int, seed: int = 0,
                    max_tokens: int = 64) -> list[Cloze]:
  """Up to `count` sentences of `documents`, each with one content word masked.

  The word is drawn at random among the sentence's words that are one token of the vocabulary
  (so one [MASK] stands for it), at least three letters and not closed-class words: a
  question about content, which a model can only answer from the context.
  """
  mask = tokenizer_lib.special_tokens(tokenizer)["mask"]
  rng = np.random.default_rng(seed)
  sentences = []
  for doc in documents:
    bounds = [0, *rules.sentence_starts(doc), len(doc)]
    sentences += [" ".join(doc[a:b].split()) for a, b in zip(bounds, bounds[1:])]
  sentences = [s for s in sentences if 30 <= len(s) <= 300]
  out = []
  for i in rng.permutation(len(sentences)):
    text = sentences[i]
    words = []
    for m in _WORD.finditer(text):
      ids = tokenizer.encode(m.group(), add_special_tokens=False).ids
      token = tokenizer.id_to_token(ids[0]) if len(ids) == 1 else ""
      if (len(m.group()) >= 3 and token.lower() == m.group().lower()
          and token.lower() not in masking.tables.DEFAULT_FUNCTION_WORDS):
        words.append((m, token))
    if not words:
      continue
    m, token = words[rng.integers(len(words))]
    masked = text[:m.start()] + mask + text[m.end():]
    if len(tokenizer.encode(masked).ids) <= max_tokens:
      out.append(Cloze(masked, token))
    if len(out) == count:
      break
  return out


def answer_cloze(model: MaskedLM, tokenizer, questions: list[Cloze], top_k: int = 5,
                 batch: int = 64) -> list[Cloze]:
  """The questions with the model's top-k guesses filled in."""
  answered = []
  for start in range(0, len(questions), batch):
    chunk = questions[start:start + batch]
    predictions = fill_mask(model, tokenizer, [q.text for q in chunk], top_k)
    answered += [dataclasses.replace(q, top=tuple(t for t, _ in p[0]))
                 for q, p in zip(chunk, predictions)]
  return answered


def format_cloze(answered: list[Cloze], shown: int = 5) -> str:
  """A few examples (true word beside the top-k) and the shares of first and top-k hits."""
  if not answered:
    return "No held-out sentence with a content word that is one token of the vocabulary."
  k = len(answered[0].top)
  lines = [f"Held-out sentences, one content word masked (the true word, the model's top {k}):"]
  for q in answered[:shown]:
    mark = f"  (in the top {k})" if q.answer in q.top else ""
    lines.append(f"  {q.text}\n    true: {q.answer:<12} guesses: {', '.join(q.top)}{mark}")
  first = np.mean([q.top[:1] == (q.answer,) for q in answered])
  top = np.mean([q.answer in q.top for q in answered])
  lines.append(f"Of {len(answered)} held-out masked content words, {first:.1%} are the model's "
               f"first guess and {top:.1%} are in its top {k}.")
  return "\n".join(lines)

