"""Probes of a trained model: does a masking teach what the seed says it teaches?

Each task reads held-out (validation) rows and the annotations the data was prepared with, so
its labels come from the annotator in use: a spaCy pipeline when one is installed (silver
labels), else the rules (`manifest["annotator"]` names it).

  syntax     each word's `pos_class` (content / function word, and with a dependency parse
             predicate / core argument) from the frozen last hidden state of its first token:
             a linear probe, accuracy.
  entities   whether a word lies in an entity (`entity_ids`): a linear probe, F1 of "entity".
  frequency  the model's own MLM accuracy on rare words: masked tokens (the comparison's
             `random` evaluation masks) whose training count is below the median count of all
             masked tokens; no probe.
  semantic   is B the continuation of A? A and B are the two halves of a row's first document,
             encoded apart; a negative pairs A with another row's B. A linear probe on
             [mean(h_A) * mean(h_B), |mean(h_A) - mean(h_B)|], accuracy.

With gold labels a user points to (`compare.probe_files`: CoNLL-U, CoNLL column files, a
Hugging Face dataset on disk or a prepared TFDS dataset; data/labelled.py), three more tasks
read those sentences instead of the corpus:

  upos       each word's Universal POS tag (17 classes): a linear probe, accuracy.
  deprel     each word's dependency relation to its head: a linear probe, accuracy.
  ner        each word's entity type (PER, ORG, ... or outside): a linear probe, micro F1 over
             the words inside entities (a word counts when its type is right).

Every probe is the same linear layer trained the same way for every model (Adam, full batch,
`compare.probe_steps` steps, standardised features) on a fixed half of the rows and scored on
the other half; the held-out rows are cut into `compare.probe_groups` groups, and the mean over
groups with its 95% t interval is reported (the evaluation batches play that part for
`frequency`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from mlmjax import masking
from mlmjax.data import annotate
from mlmjax.data import labelled as labelled_lib
from mlmjax.data import pipeline
from mlmjax.model import layers as model_layers
from mlmjax.train import step as step_lib

# Tasks on the corpus's held-out rows, and tasks on a labelled file's sentences (their metric).
CORPUS_TASKS = ("syntax", "entities", "frequency", "semantic")
FILE_TASKS = {"upos": "accuracy", "deprel": "accuracy", "ner": "f1"}
TASKS = CORPUS_TASKS + tuple(FILE_TASKS)
VERSION = 1  # of what the tasks compute: cached results of another version are recomputed
# What each corpus task reads besides input_ids (the prepared data must hold it).
NEEDS = {"syntax": annotate.POS, "entities": annotate.ENTITY, "frequency": None,
         "semantic": None}
MIN_HALF = 8  # tokens in each half of a semantic pair


# ------------------------------------------------------------------------------- the data


def probe_rows(data_dir: str, count: int) -> dict[str, np.ndarray]:
  """The first `count` validation rows, every prepared field."""
  rows = pipeline.PackedRows(data_dir, "validation")
  return rows.rows(0, min(count, len(rows)))


def split_rows(n: int, groups: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
  """(training rows, held-out rows in `groups` groups): a fixed random half each."""
  order = np.random.default_rng(seed).permutation(n)
  return np.sort(order[: n // 2]), [np.sort(g) for g in np.array_split(order[n // 2:], groups)]


def word_positions(ids: np.ndarray, tables: masking.VocabTables) -> np.ndarray:
  """bool [N, S]: the first token of each word that is not special or punctuation-only."""
  special = np.asarray(tables.is_special)[ids]
  return np.asarray(tables.is_word_start)[ids] & ~special


def labelled_rows(paths: str, tok, seq_len: int, limit: int, tfds_data_dir: str = ""
                  ) -> dict[str, labelled_lib.LabelledRows]:
  """task -> the first `limit` sentences of the file giving its labels, as labelled rows, for the
  comma-separated files, folders and tfds:NAME datasets `paths`; two giving one task is an
  error."""
  found, origin = {}, {}
  for path in [p.strip() for p in paths.split(",") if p.strip()]:
    sentences = labelled_lib.read(path, tfds_data_dir)
    for task in sentences.labels:
      if task in origin:
        raise labelled_lib.LabelledFileError(
            f"compare.probe_files: both {origin[task]} and {path} give {task} labels; keep one.")
      origin[task], found[task] = path, sentences
  return {task: labelled_lib.rows_with_labels(sentences, task, tok, seq_len, limit)
          for task, sentences in found.items()}


def semantic_pairs(rows: dict[str, np.ndarray], tables: masking.VocabTables
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(first halves [M, S], second halves [M, S], their rows [M]) of each row's first document,
  each half as its own row "[CLS] half [SEP]" then padding; rows whose document is shorter
  than 2 * MIN_HALF tokens give none."""
  ids, seg = rows["input_ids"], rows["segment_ids"]
  special = np.asarray(tables.is_special)[ids]
  cls_id, pad_id = int(ids[0, 0]), int(tables.pad_id)
  # [SEP] ends every document: the commonest special token inside the rows after [CLS].
  inner = special & (seg > 0)
  inner[:, 0] = False
  sep_id = int(np.bincount(ids[inner]).argmax())
  firsts, seconds, owners = [], [], []
  for r in range(ids.shape[0]):
    body = ids[r][(seg[r] == 1) & ~special[r]]
    if len(body) < 2 * MIN_HALF:
      continue
    half = len(body) // 2
    for part, out in ((body[:half], firsts), (body[half:], seconds)):
      row = np.full(ids.shape[1], pad_id, np.int32)
      row[: len(part) + 2] = np.concatenate([[cls_id], part, [sep_id]])
      out.append(row)
    owners.append(r)
  return np.array(firsts), np.array(seconds), np.array(owners, np.int64)


# ------------------------------------------------------------------------------- the model


@functools.partial(jax.jit, static_argnums=0)
def _states(graphdef: nnx.GraphDef, params, ids: jax.Array) -> jax.Array:
  return model_layers.hidden_states(graphdef, params, ids).astype(jnp.float32)


def row_states(graphdef: nnx.GraphDef, params, ids: np.ndarray, batch: int = 32) -> np.ndarray:
  """[N, S, D] float32 frozen last-layer states of the rows (`model.layers.hidden_states`), computed
  `batch` rows at a time."""
  out = [np.asarray(_states(graphdef, params, jnp.asarray(ids[i:i + batch])))
         for i in range(0, len(ids), batch)]
  return np.concatenate(out)


def mean_pool(states: np.ndarray, ids: np.ndarray, tables: masking.VocabTables) -> np.ndarray:
  """[N, D] the mean state over each row's non-special tokens."""
  keep = (~np.asarray(tables.is_special)[ids])[..., None]
  return (states * keep).sum(1) / np.maximum(keep.sum(1), 1)


@functools.partial(jax.jit, static_argnums=0)
def _slot_correct(graphdef: nnx.GraphDef, params, masked: dict) -> jax.Array:
  logits = nnx.merge(graphdef, params)(masked["input_ids"], masked["positions"])
  return step_lib.mlm_loss(logits, masked["labels"], masked["weights"])[2]


# ------------------------------------------------------------------------------- the probe


def train_probe(x: np.ndarray, y: np.ndarray, classes: int, steps: int, seed: int):
  """A linear softmax classifier on standardised features; returns predict(x) -> labels."""
  mean, std = x.mean(0), x.std(0) + 1e-6
  x = jnp.asarray((x - mean) / std)
  y = jnp.asarray(y, jnp.int32)
  params = {"w": 0.01 * jax.random.normal(jax.random.key(seed), (x.shape[1], classes)),
            "b": jnp.zeros((classes,))}
  tx = optax.adamw(1e-2, weight_decay=1e-4)

  def loss(p):
    logits = x @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def fit(params):
    def update(_, carry):
      p, state = carry
      grads = jax.grad(loss)(p)
      updates, state = tx.update(grads, state, p)
      return optax.apply_updates(p, updates), state
    return jax.lax.fori_loop(0, steps, update, (params, tx.init(params)))[0]

  params = fit(params)
  return lambda z: np.asarray(jnp.argmax(jnp.asarray((z - mean) / std) @ params["w"]
                                         + params["b"], axis=-1))


def f1(predicted: np.ndarray, truth: np.ndarray, outside: int = 0) -> float:
  """Micro F1 over the labels other than `outside` (for two classes, F1 of the positive one): a
  hit is a right label on a word inside; nan when no word is inside, guessed or true."""
  tp = float(np.sum((predicted == truth) & (truth != outside)))
  denominator = float(np.sum(predicted != outside) + np.sum(truth != outside))
  return 2 * tp / denominator if denominator else float("nan")


def token_task(states: np.ndarray, labels: np.ndarray, where: np.ndarray, train: np.ndarray,
               groups: list[np.ndarray], metric: str, steps: int, seed: int) -> list[float]:
  """Per held-out group: the metric of a probe trained on the training rows' tokens."""
  classes = int(labels.max(initial=0)) + 1
  predict = train_probe(states[train][where[train]], labels[train][where[train]], max(classes, 2),
                        steps, seed)
  values = []
  for g in groups:
    if not where[g].any():
      continue
    guess, truth = predict(states[g][where[g]]), labels[g][where[g]]
    value = float(np.mean(guess == truth)) if metric == "accuracy" else f1(guess, truth)
    if not np.isnan(value):  # F1 of a group with no entity, guessed or true, is undefined
      values.append(value)
  return values


# ------------------------------------------------------------------------------- the tasks


def run(graphdef: nnx.GraphDef, params, rows: dict[str, np.ndarray],
        tables: masking.VocabTables, random_masks: list[dict] | None,
        config: ml_collections.ConfigDict,
        labelled: dict[str, labelled_lib.LabelledRows] | None = None) -> dict[str, list[float]]:
  """task -> per-group values of one model, for the tasks in `compare.probes` its data allows
  (a task whose annotation was not prepared, or that no labelled file gives, is left out)."""
  settings = config.compare
  ids = rows["input_ids"]
  train, groups = split_rows(len(ids), settings.probe_groups, settings.eval_seed)
  tasks = [t for t in settings.probes
           if t in (labelled or {}) or (t in NEEDS and (NEEDS[t] is None or NEEDS[t] in rows))]
  out = {}
  for task in [t for t in tasks if t in FILE_TASKS]:
    data = labelled[task]
    file_train, file_groups = split_rows(len(data.input_ids), settings.probe_groups,
                                         settings.eval_seed)
    out[task] = token_task(row_states(graphdef, params, data.input_ids), data.labels,
                           data.labels >= 0, file_train, file_groups, FILE_TASKS[task],
                           settings.probe_steps, settings.eval_seed)
  if {"syntax", "entities"} & set(tasks):
    states = row_states(graphdef, params, ids)
    words = word_positions(ids, tables)
    if "syntax" in tasks:
      out["syntax"] = token_task(states, rows[annotate.POS].astype(np.int64), words, train,
                                 groups, "accuracy", settings.probe_steps, settings.eval_seed)
    if "entities" in tasks:
      out["entities"] = token_task(states, (rows[annotate.ENTITY] > 0).astype(np.int64), words,
                                   train, groups, "f1", settings.probe_steps, settings.eval_seed)
  if "frequency" in tasks and random_masks is not None:
    out["frequency"] = rare_word_accuracy(graphdef, params, random_masks, tables)
  if "semantic" in tasks:
    out["semantic"] = continuation(graphdef, params, rows, tables, train, groups, settings)
  return out


def rare_word_accuracy(graphdef: nnx.GraphDef, params, masked: list[dict],
                       tables: masking.VocabTables) -> list[float]:
  """Per evaluation batch: MLM accuracy on the masked tokens rarer than the median masked
  token (by training count; the same threshold for every model)."""
  counts = np.asarray(tables.frequency)
  threshold = np.median(np.concatenate([counts[m["labels"][m["weights"] > 0]] for m in masked]))
  values = []
  for m in masked:
    correct = np.asarray(_slot_correct(graphdef, params, m))
    rare = (m["weights"] > 0) & (counts[m["labels"]] < threshold)
    if rare.any():
      values.append(float(correct[rare].mean()))
  return values


def continuation(graphdef: nnx.GraphDef, params, rows: dict[str, np.ndarray],
                 tables: masking.VocabTables, train: np.ndarray, groups: list[np.ndarray],
                 settings: ml_collections.ConfigDict) -> list[float]:
  """Per held-out group: accuracy of telling a document's true second half from another's."""
  firsts, seconds, owner = semantic_pairs(rows, tables)
  a = mean_pool(row_states(graphdef, params, firsts), firsts, tables)
  b = mean_pool(row_states(graphdef, params, seconds), seconds, tables)

  def pairs(members: np.ndarray):
    """(features, labels) of the pairs of these rows: each A with its B, and with the next
    member's B (another document)."""
    index = np.flatnonzero(np.isin(owner, members))
    if len(index) < 2:
      return np.zeros((0, 2 * a.shape[1])), np.zeros(0, np.int64)
    other = np.roll(index, 1)
    feats = [np.concatenate([a[index] * b[j], np.abs(a[index] - b[j])], 1) for j in (index, other)]
    return np.concatenate(feats), np.repeat([1, 0], len(index))

  x, y = pairs(train)
  predict = train_probe(x, y, 2, settings.probe_steps, settings.eval_seed)
  values = []
  for g in groups:
    xg, yg = pairs(g)
    if len(yg):
      values.append(float(np.mean(predict(xg) == yg)))
  return values
