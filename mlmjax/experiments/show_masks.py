r"""Show what a masking strategy does to your sentences, with the annotations training uses.

    mlmjax-mask --strategy=span "The quick brown fox jumps over the lazy dog."
    mlmjax-mask --config=configs/masking.py:ernie "Barack Obama was born in Hawaii."
    mlmjax-mask --workdir=/tmp/mlmjax_quickstart --strategy=contextual "A list is sorted."

The sentences go through the path training data goes through (`new_texts.to_rows`): the
workdir's tokenizer and corpus statistics, its annotator (an installed spaCy pipeline, or the
rules), the vocabulary part-of-speech fallback and the PMI n-gram vocabulary. A workdir that
holds prepared data (a training run's) is used as it is; otherwise the config's data is
prepared there once, with every annotation. Contextual masking reads the run's trained model
when the workdir has a checkpoint, else a freshly initialised one (said in the output).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mlmjax import inference, storage
from mlmjax import workdir as workdir_lib
from mlmjax import masking
from mlmjax.data import annotate
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import new_texts
from mlmjax.data import prepare
from mlmjax.data import stats as data_stats
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.model import ModelConfig, make_model
from mlmjax.model import layers as model_layers

# What the annotations are called in the output.
SPAN_NAMES = {annotate.ENTITY: "entities", annotate.PHRASE: "phrases",
              annotate.NGRAM: "PMI n-grams"}
CLASS_NAMES = {annotate.POS_UNKNOWN: "", annotate.POS_CONTENT: "content",
               annotate.POS_FUNCTION: "function", annotate.POS_PREDICATE: "predicate",
               annotate.POS_ARGUMENT: "argument"}


def prepared_data(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, Any]:
  """(manifest, tokenizer) of the workdir's prepared data; prepared with every annotation
  from `config.data` when the workdir has none."""
  manifest = manifest_lib.read(os.fspath(storage.join(workdir, manifest_lib.DATA_DIR)))
  if manifest is None:
    data = ml_collections.ConfigDict(config.data.to_dict())
    data.annotations = annotate.ANNOTATIONS
    manifest = prepare.prepare(data, workdir)
    return manifest, tokenizer_lib.get_tokenizer(data, workdir)
  tok = tokenizer_lib.existing_tokenizer(ml_collections.ConfigDict(manifest["data_config"]),
                                         workdir)
  if tok is None:
    raise FileNotFoundError(f"{workdir} holds prepared data but not its tokenizer; prepare it "
                            "again (mlmjax-prepare) or pass another --workdir")
  return manifest, tok


def masking_model(config: ml_collections.ConfigDict, workdir: str, tok: Any, ids: np.ndarray,
                  seed: int) -> tuple[BertForMaskedLM, str]:
  """The model whose hidden states contextual masking reads: the workdir's trained one (its
  latest checkpoint), or an untrained one of the config's shape; and a phrase saying which."""
  if storage.join(workdir, workdir_lib.CHECKPOINTS).is_dir():
    model, _, meta = inference.load_trained(workdir)
    del meta
    source = f"the trained model in {workdir} (its latest checkpoint)"
    if ids.shape[1] > model.cfg.max_position_embeddings:
      raise ValueError(f"a sentence is {ids.shape[1]} tokens with [CLS] and [SEP]; the model "
                       f"reads at most {model.cfg.max_position_embeddings}: give shorter ones")
  else:
    model_config = ml_collections.ConfigDict(config.model.to_dict())
    model_config.max_position_embeddings = max(model_config.max_position_embeddings,
                                               ids.shape[1])
    model_cfg = ModelConfig.from_config(model_config, vocab_size=tok.get_vocab_size(),
                                       pad_token_id=tokenizer_lib.special_roles(tok)["pad"])
    with nnx.use_eager_sharding(False):  # one device, no mesh: no sharding to place
      model = make_model(model_cfg, nnx.Rngs(seed))
    source = "an untrained model (no checkpoint in the workdir)"
  return model, source


def describe(text: str, offsets: list[tuple[int, int]], rows: dict[str, np.ndarray],
             fields: tuple[str, ...], r: int) -> list[str]:
  """Lines naming the annotations the strategy reads, on the text's own words."""
  lines = []
  for field in fields:
    values = rows[field][r]
    if field == annotate.POS:  # per word: the pieces of a word touch and share its class
      words, end = [], -1
      for (a, b), c in zip(offsets, values):
        label = CLASS_NAMES.get(int(c), str(c))
        if b > a and a == end and words and words[-1][2] == label:
          words[-1] = (words[-1][0], b, words[-1][2])
        elif b > a:
          words.append((a, b, label))
        end = b if b > a else end
      lines.append("  classes: " + " ".join(f"{text[a:b]}/{c}" for a, b, c in words if c))
      continue
    spans = []
    for k in range(1, int(values.max(initial=0)) + 1):
      inside = [offsets[i] for i in np.flatnonzero(values == k)]
      spans.append(text[inside[0][0]:inside[-1][1]])
    lines.append(f"  {SPAN_NAMES[field]}: " + (", ".join(repr(s) for s in spans) or "none"))
  return lines


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


def mask_texts(config: ml_collections.ConfigDict, workdir: str, texts: list[str],
               steps: int = 1, seed: int = 0) -> list[str]:
  """Lines showing `config.masking` applied to each text at steps 0..steps-1."""
  manifest, tok = prepared_data(config, workdir)
  mask_config = ml_collections.ConfigDict(config.masking.to_dict())
  fields = masking.batch_fields(mask_config)
  missing = [f for f in fields if f not in manifest["annotations"]]
  if missing:
    raise ValueError(f"{mask_config.strategy} masking reads {missing}, which the data in "
                     f"{workdir} was prepared without; use another --workdir (prepared "
                     "afresh with every annotation) or prepare this one with "
                     f"--config.data.annotations including {missing}")
  rows = new_texts.to_rows(tok, texts, manifest)
  ids = rows["input_ids"]
  mask_config.max_predictions = ids.shape[1]
  tables = data_stats.vocab_tables(tok, manifest)
  masker = jax.jit(masking.make_masker(mask_config, tables))
  state = masking.init_state(mask_config, tables)
  lines = [f"annotator: {manifest['annotator']}  (workdir {workdir})"]
  hidden = None
  if masking.reads_hidden(mask_config):
    model, source = masking_model(config, workdir, tok, ids, seed)
    hidden = model_layers.hidden_states(*nnx.split(model), jnp.asarray(ids))
    lines.append(f"hidden states: {source}")
  for r, text in enumerate(texts):
    offsets = [(0, 0)] + list(tok.encode(text, add_special_tokens=False).offsets) + [(0, 0)]
    offsets += [(0, 0)] * (ids.shape[1] - len(offsets))  # the row's padding
    lines.append(f'Original: "{text}"')
    lines += describe(text, offsets, rows, fields, r)
    for step in range(steps):
      out = masker(jax.random.key(seed), rows, step, state, hidden)
      new_ids = np.asarray(out.input_ids)[r]
      label = f"Masked (step {step}):" if steps > 1 else "Masked:  "
      lines.append(f'{label} "{render(text, ids[r], new_ids, offsets, tok)}"')
      targets = []
      for pos, w in zip(np.asarray(out.positions)[r], np.asarray(out.weights)[r]):
        if w > 0:
          a, b = offsets[pos]
          how = ("[MASK]" if new_ids[pos] == tables.mask_id else
                 "kept" if new_ids[pos] == ids[r, pos] else
                 f"random: {tok.id_to_token(int(new_ids[pos]))}")
          targets.append(f"{text[a:b]} ({how})")
      lines.append("  predict: " + (", ".join(targets) or "nothing (budget 0)"))
  return lines
