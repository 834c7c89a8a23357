"""Export to and import from a Hugging Face `BertForMaskedLM` folder (safetensors, no pickle).

Our parameter paths are HF's module names (see `mlmjax/model/bert.py`), so the mapping is a
renaming of leaves plus kernel transposes:

    <module>/kernel [in, out]      <->  <module>.weight [out, in]
    <module>/embedding             <->  <module>.weight
    <LayerNorm>/scale              <->  <LayerNorm>.weight
    .../bias                       <->  .../bias

Our layers are stacked (`bert/encoder/layers/<...>` with a leading [num_layers] axis): export
indexes the stack into `bert.encoder.layer.{i}.<...>`, import stacks the HF layers back.

The vocabulary is padded to a multiple of 128 inside mlmjax; export slices it back, import pads.
The decoder is tied to the word embeddings, so `cls.predictions.decoder.*` is not written
(transformers re-ties it on load, as its own `save_pretrained` does).
"""

import json
import os
import tempfile

import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from mlmjax import storage
from mlmjax.model.bert import ACTIVATIONS, BertConfig, BertForMaskedLM

# Our path's last component -> HF's parameter name, and whether the array is transposed.
_LEAF_TO_HF = {"kernel": ("weight", True), "embedding": ("weight", False),
               "scale": ("weight", False), "bias": ("bias", False)}
_VOCAB_ROWS = ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias")
_STACKED = "bert/encoder/layers/"  # scanned layout: one leaf per parameter, layers stacked
_LISTED = "bert/encoder/layer/{}/"  # HF layout: one subtree per layer


# Parameters of training-only heads (SpanBERT's boundary objective): left out of an export,
# freshly initialised on an import.
TRAINING_ONLY = ("sbo/",)


def flatten_params(params) -> dict[str, np.ndarray]:
  """nnx.State -> {"bert/embeddings/...": float32 numpy array}."""
  return {"/".join(str(k) for k in path): np.asarray(v[...], np.float32)
          for path, v in nnx.to_flat_state(params)}


def unstack_layers(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Scanned layout -> HF layout: `layers/<p>` [L, ...] becomes `layer/{i}/<p>` for each i."""
  out = {}
  for path, value in flat.items():
    if path.startswith(_STACKED):
      rest = path[len(_STACKED):]
      out.update({_LISTED.format(i) + rest: v for i, v in enumerate(value)})
    else:
      out[path] = value
  return out


def stack_layers(flat: dict[str, np.ndarray], template: dict[str, np.ndarray],
                 ) -> dict[str, np.ndarray]:
  """HF layout -> the layout of `template`; stacks `layer/{i}/<p>` where it holds `layers/<p>`."""
  out = {}
  for path, like in template.items():
    if path.startswith(_STACKED):
      rest = path[len(_STACKED):]
      out[path] = np.stack([flat[_LISTED.format(i) + rest] for i in range(like.shape[0])])
    else:
      out[path] = flat[path]
  return out


def to_hf_tensors(flat: dict[str, np.ndarray], vocab_size: int) -> dict[str, np.ndarray]:
  """Our flat params (either layout) -> `BertForMaskedLM` tensors (vocab padding removed)."""
  tensors = {}
  for path, value in unstack_layers(flat).items():
    if path.startswith(TRAINING_ONLY):  # no place in HF's BertForMaskedLM
      continue
    *modules, leaf = path.split("/")
    name, transpose = _LEAF_TO_HF[leaf]
    key = ".".join(modules + [name])
    value = value.T if transpose else value
    if key in _VOCAB_ROWS:
      value = value[:vocab_size]
    tensors[key] = np.ascontiguousarray(value)
  return tensors


def from_hf_tensors(tensors: dict[str, np.ndarray], template: dict[str, np.ndarray],
                    ) -> dict[str, np.ndarray]:
  """`BertForMaskedLM` tensors -> our flat params, laid out like `template` (padded vocab)."""
  flat = {}
  for path, like in unstack_layers(template).items():
    key = next(iter(to_hf_tensors({path: like}, like.shape[0])))
    if key not in tensors:
      raise ValueError(f"The Hugging Face checkpoint has no tensor {key!r}; only BERT "
                       "(BertForMaskedLM or BertModel) checkpoints can be imported.")
    value = tensors[key].T if path.endswith("/kernel") else tensors[key]
    if key in _VOCAB_ROWS:
      padded = np.zeros(like.shape, np.float32)
      padded[: value.shape[0]] = value
      value = padded
    if value.shape != like.shape:
      raise ValueError(f"{key}: shape {value.shape} does not match the model's {like.shape}")
    flat[path] = value.astype(np.float32)
  return stack_layers(flat, template)


def hf_config(cfg: BertConfig) -> dict:
  """The `config.json` of a `BertForMaskedLM` with our hyperparameters."""
  return {
      "architectures": ["BertForMaskedLM"],
      "model_type": "bert",
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "intermediate_size": cfg.intermediate_size,
      "hidden_act": cfg.hidden_act,
      "hidden_dropout_prob": cfg.hidden_dropout,
      "attention_probs_dropout_prob": cfg.attention_dropout,
      "max_position_embeddings": cfg.max_position_embeddings,
      "type_vocab_size": cfg.type_vocab_size,
      "initializer_range": cfg.initializer_range,
      "layer_norm_eps": 1e-12,
      "pad_token_id": cfg.pad_token_id,
      "tie_word_embeddings": True,
      "torch_dtype": "float32",
  }


def write_tokenizer(tokenizer, out_dir: str, *, lowercase: bool, max_length: int) -> None:
  """tokenizer.json, vocab.txt and the configs `AutoTokenizer` reads, for a WordPiece vocab."""
  tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
  vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
  with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
    f.writelines(token + "\n" for token, _ in vocab)
  specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
              "cls_token": "[CLS]", "mask_token": "[MASK]"}
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
    json.dump(specials, f, indent=2)
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
               "model_max_length": max_length, **specials}, f, indent=2)


def export(params, cfg: BertConfig, tokenizer, out_dir: str, *, lowercase: bool) -> str:
  """Writes an HF `BertForMaskedLM` folder: config.json, model.safetensors, tokenizer files.

  `out_dir` is a local folder, or an object-store URL (gs://bucket/hf): the folder is then
  written to a local temporary folder first and uploaded.
  """
  if storage.is_url(out_dir):
    storage.path(out_dir)  # an unsupported scheme or a missing backend fails before the work
    with tempfile.TemporaryDirectory(prefix="mlmjax_hf_") as local:
      export(params, cfg, tokenizer, local, lowercase=lowercase)
      storage.upload(local, out_dir)
    return out_dir
  os.makedirs(out_dir, exist_ok=True)
  tensors = to_hf_tensors(flatten_params(params), cfg.vocab_size)
  save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config(cfg), f, indent=2)
  write_tokenizer(tokenizer, out_dir, lowercase=lowercase, max_length=cfg.max_position_embeddings)
  return out_dir


def _check_local(hf_dir) -> None:
  """Import (with_hf_architecture, load_params: both start with config_from_hf) reads a local
  folder only."""
  if storage.is_url(hf_dir):
    raise ValueError(f"{hf_dir}: a Hugging Face model to import must be a local folder; copy "
                     f"it to this machine first (e.g. gsutil -m cp -r {hf_dir} /tmp/) and "
                     "pass the local copy")


def read_hf_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  """The safetensors weights of a local HF folder (a PyTorch .bin is refused: no pickle)."""
  _check_local(hf_dir)
  path = os.path.join(hf_dir, "model.safetensors")
  if not os.path.exists(path):
    if os.path.exists(os.path.join(hf_dir, "pytorch_model.bin")):
      raise ValueError(f"{hf_dir} holds only pytorch_model.bin; mlmjax reads safetensors only "
                       "(no pickle). Convert it: BertForMaskedLM.from_pretrained(dir)"
                       ".save_pretrained(dir, safe_serialization=True).")
    raise FileNotFoundError(f"No model.safetensors in {hf_dir}")
  tensors = load_file(path)
  # BertModel checkpoints have no "bert." prefix.
  if not any(k.startswith("bert.") for k in tensors):
    tensors = {f"bert.{k}": v for k, v in tensors.items()}
  return tensors


def config_from_hf(hf_dir: str, **overrides) -> BertConfig:
  """Our `BertConfig` from a local HF `config.json` (BERT only)."""
  _check_local(hf_dir)
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"No config.json in {hf_dir}: pass a local Hugging Face model folder")
  with open(path, encoding="utf-8") as f:
    hf = json.load(f)
  if hf.get("model_type") != "bert":
    raise ValueError(f"{hf_dir} holds a {hf.get('model_type')!r} model; mlmjax imports BERT "
                     "(model_type 'bert') only.")
  if hf.get("hidden_act", "gelu") not in ACTIVATIONS:
    raise ValueError(f"{hf_dir}: hidden_act={hf['hidden_act']!r} is not supported; mlmjax runs "
                     f"{sorted(ACTIVATIONS)}")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{hf_dir}: only absolute position embeddings are supported")
  values = dict(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
      intermediate_size=hf["intermediate_size"],
      max_position_embeddings=hf["max_position_embeddings"],
      type_vocab_size=hf.get("type_vocab_size", 2),
      hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout=hf.get("attention_probs_dropout_prob", 0.0),
      initializer_range=hf.get("initializer_range", 0.02),
      pad_token_id=hf.get("pad_token_id") or 0, hidden_act=hf.get("hidden_act", "gelu"))
  values.update(overrides)
  return BertConfig(**values)


def import_params(tensors: dict[str, np.ndarray], cfg: BertConfig):
  """HF tensors -> (graphdef, nnx.State) for `cfg`. A `BertModel` gets a fresh MLM head."""
  with nnx.use_eager_sharding(False):
    fresh = BertForMaskedLM(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(fresh)
  flat_state = list(nnx.to_flat_state(state))
  template = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in flat_state}
  if not any(k.startswith("cls.") for k in tensors):  # BertModel: keep the initialised head
    tensors = {**to_hf_tensors({k: v for k, v in template.items() if k.startswith("cls/")},
                               cfg.vocab_size), **tensors}
  fresh_heads = {k: v for k, v in template.items() if k.startswith(TRAINING_ONLY)}
  flat = {**from_hf_tensors(tensors, {k: v for k, v in template.items()
                                      if k not in fresh_heads}), **fresh_heads}
  new_state = nnx.from_flat_state(
      [(p, v.replace(value=flat["/".join(map(str, p))])) for p, v in flat_state])
  return graphdef, new_state


def with_hf_architecture(config):
  """A copy of the run `config` whose model shape and tokenizer are `config.init_from_hf`'s."""
  hf_dir = config.init_from_hf
  hf_cfg = config_from_hf(hf_dir)
  config = config.copy_and_resolve_references()
  config.model.update(
      hidden_size=hf_cfg.hidden_size, num_layers=hf_cfg.num_layers, num_heads=hf_cfg.num_heads,
      intermediate_size=hf_cfg.intermediate_size,
      max_position_embeddings=hf_cfg.max_position_embeddings,
      type_vocab_size=hf_cfg.type_vocab_size, hidden_act=hf_cfg.hidden_act)
  if not config.data.tokenizer_path:
    for name in ("tokenizer.json", "vocab.txt"):
      if os.path.exists(os.path.join(hf_dir, name)):
        config.data.tokenizer_path = os.path.join(hf_dir, name)
        break
    else:
      raise FileNotFoundError(f"{hf_dir} has neither tokenizer.json nor vocab.txt; set "
                              "config.data.tokenizer_path to the model's tokenizer")
  return config


def load_params(hf_dir: str, cfg: BertConfig) -> dict[str, np.ndarray]:
  """The weights of a local HF BERT folder as our flat params {"bert/...": array} for `cfg`."""
  hf_cfg = config_from_hf(hf_dir)
  if hf_cfg.vocab_size != cfg.vocab_size:
    raise ValueError(f"{hf_dir} has a vocabulary of {hf_cfg.vocab_size} but the run's "
                     f"tokenizer has {cfg.vocab_size} tokens; point config.data.tokenizer_path "
                     "at the model's own tokenizer.")
  _, imported = import_params(read_hf_tensors(hf_dir), cfg)
  return flatten_params(imported)
