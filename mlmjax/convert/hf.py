"""Export to and import from a Hugging Face masked-LM folder (safetensors, no pickle): BERT,
RoBERTa / XLM-R and ModernBERT, one table each (`convert/families.py`).

Our parameter paths follow HF's module names, so the mapping is a renaming of leaves plus
kernel transposes, then the family's prefix renames:

    <module>/kernel [in, out]      <->  <module>.weight [out, in]
    <module>/embedding             <->  <module>.weight
    <LayerNorm>/scale              <->  <LayerNorm>.weight
    .../bias                       <->  .../bias

Our layers are stacked (e.g. `bert/encoder/layers/<...>` with a leading [num_layers] axis):
export indexes the stack into HF's per-layer names, import stacks the HF layers back.

The vocabulary is padded to a multiple of 128 inside mlmjax; export slices it back, import pads.
The decoder is tied to the word embeddings, so its weight is not written (transformers re-ties
it on load, as its own `save_pretrained` does).
"""

import json
import os
import tempfile

import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from mlmjax import storage
from mlmjax.convert.families import FAMILIES, Family, family_of_model_type
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.model import ModelConfig, make_model

# Our path's last component -> HF's parameter name, and whether the array is transposed.
_LEAF_TO_HF = {"kernel": ("weight", True), "embedding": ("weight", False),
               "scale": ("weight", False), "bias": ("bias", False)}

# Parameters of training-only heads (SpanBERT's boundary objective): left out of an export,
# freshly initialised on an import.
TRAINING_ONLY = ("sbo/",)


def flatten_params(params) -> dict[str, np.ndarray]:
  """nnx.State -> {"bert/embeddings/...": float32 numpy array}."""
  return {"/".join(str(k) for k in path): np.asarray(v[...], np.float32)
          for path, v in nnx.to_flat_state(params)}


def unstack_layers(flat: dict[str, np.ndarray], family: str = "bert") -> dict[str, np.ndarray]:
  """Scanned layout -> HF layout: `layers/<p>` [L, ...] becomes `layer/{i}/<p>` for each i."""
  f = FAMILIES[family]
  out = {}
  for path, value in flat.items():
    if path.startswith(f.stacked):
      rest = path[len(f.stacked):]
      out.update({f.listed.format(i) + rest: v for i, v in enumerate(value)})
    else:
      out[path] = value
  return out


def stack_layers(flat: dict[str, np.ndarray], template: dict[str, np.ndarray],
                 family: str = "bert") -> dict[str, np.ndarray]:
  """HF layout -> the layout of `template`; stacks `layer/{i}/<p>` where it holds `layers/<p>`."""
  f = FAMILIES[family]
  out = {}
  for path, like in template.items():
    if path.startswith(f.stacked):
      rest = path[len(f.stacked):]
      out[path] = np.stack([flat[f.listed.format(i) + rest] for i in range(like.shape[0])])
    else:
      out[path] = flat[path]
  return out


def _hf_name(path: str, family: Family) -> tuple[str, bool]:
  """Our unstacked path -> (HF tensor name, whether it is transposed)."""
  *modules, leaf = path.split("/")
  name, transpose = _LEAF_TO_HF[leaf]
  key = ".".join(modules + [name])
  for ours, theirs in family.renames:
    if key.startswith(ours):
      key = theirs + key[len(ours):]
      break
  return key, transpose


def to_hf_tensors(flat: dict[str, np.ndarray], vocab_size: int,
                  family: str = "bert") -> dict[str, np.ndarray]:
  """Our flat params (either layout) -> the family's HF tensors (vocab padding removed)."""
  f = FAMILIES[family]
  tensors = {}
  for path, value in unstack_layers(flat, family).items():
    if path.startswith(TRAINING_ONLY):  # no place in HF's masked LM
      continue
    key, transpose = _hf_name(path, f)
    if key in f.absent:
      continue
    value = value.T if transpose else value
    if key in f.vocab_rows:
      value = value[:vocab_size]
    tensors[key] = np.ascontiguousarray(value)
  return tensors


def from_hf_tensors(tensors: dict[str, np.ndarray], template: dict[str, np.ndarray],
                    family: str = "bert") -> dict[str, np.ndarray]:
  """The family's HF tensors -> our flat params, laid out like `template` (padded vocab).
  Tensors HF does not have (`Family.absent`) keep the template's values."""
  f = FAMILIES[family]
  flat = {}
  for path, like in unstack_layers(template, family).items():
    key, transpose = _hf_name(path, f)
    if key in f.absent:
      flat[path] = like
      continue
    if key not in tensors:
      raise ValueError(f"The Hugging Face checkpoint has no tensor {key!r}; it is not a "
                       f"{f.architecture} (or its body alone).")
    value = tensors[key].T if transpose else tensors[key]
    if key in f.vocab_rows:
      padded = np.zeros(like.shape, np.float32)
      padded[: value.shape[0]] = value
      value = padded
    if value.shape != like.shape:
      raise ValueError(f"{key}: shape {value.shape} does not match the model's {like.shape}")
    flat[path] = value.astype(np.float32)
  return stack_layers(flat, template, family)


def hf_config(cfg: ModelConfig, specials: dict[str, int]) -> dict:
  """The `config.json` of the family's HF masked LM with our hyperparameters; `specials`:
  {role: id} of the tokenizer's special tokens (`data.tokenizer.special_roles`)."""
  return FAMILIES[cfg.family].to_hf(cfg, specials)


def write_tokenizer(tokenizer, out_dir: str, *, lowercase: bool, max_length: int) -> None:
  """tokenizer.json and the configs `AutoTokenizer` reads; a WordPiece vocabulary also gets
  vocab.txt and HF's BertTokenizer class, any other (byte-level BPE, SentencePiece) the
  tokenizer.json-backed fast tokenizer."""
  tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
  roles = tokenizer_lib.special_tokens(tokenizer)
  specials = {f"{role}_token": token for role, token in roles.items()}
  settings = {"model_max_length": max_length, **specials}
  if json.loads(tokenizer.to_str())["model"]["type"] == "WordPiece":
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
      f.writelines(token + "\n" for token, _ in vocab)
    settings.update(tokenizer_class="BertTokenizer", do_lower_case=lowercase)
  else:
    settings.update(tokenizer_class="PreTrainedTokenizerFast")
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
    json.dump(specials, f, indent=2)
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump(settings, f, indent=2)


def export(params, cfg: ModelConfig, tokenizer, out_dir: str, *, lowercase: bool) -> str:
  """Writes the family's HF masked-LM folder (`BertForMaskedLM`, `RobertaForMaskedLM` or
  `ModernBertForMaskedLM`): config.json, model.safetensors, tokenizer files.

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
  tensors = to_hf_tensors(flatten_params(params), cfg.vocab_size, cfg.family)
  save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config(cfg, tokenizer_lib.special_roles(tokenizer)), f, indent=2)
  write_tokenizer(tokenizer, out_dir, lowercase=lowercase, max_length=cfg.max_sequence_length)
  return out_dir


def _check_local(hf_dir) -> None:
  """Import (with_hf_architecture, load_params: both start with config_from_hf) reads a local
  folder only."""
  if storage.is_url(hf_dir):
    raise ValueError(f"{hf_dir}: a Hugging Face model to import must be a local folder; copy "
                     f"it to this machine first (e.g. gsutil -m cp -r {hf_dir} /tmp/) and "
                     "pass the local copy")


def read_hf_tensors(hf_dir: str, family: str = "bert") -> dict[str, np.ndarray]:
  """The safetensors weights of a local HF folder (a PyTorch .bin is refused: no pickle)."""
  _check_local(hf_dir)
  path = os.path.join(hf_dir, "model.safetensors")
  if not os.path.exists(path):
    if os.path.exists(os.path.join(hf_dir, "pytorch_model.bin")):
      raise ValueError(f"{hf_dir} holds only pytorch_model.bin; mlmjax reads safetensors only "
                       "(no pickle). Convert it: AutoModelForMaskedLM.from_pretrained(dir)"
                       ".save_pretrained(dir, safe_serialization=True).")
    raise FileNotFoundError(f"No model.safetensors in {hf_dir}")
  tensors = load_file(path)
  # A checkpoint of the body alone (BertModel, RobertaModel, ModernBertModel) lacks its prefix.
  body = FAMILIES[family].body
  if not any(k.startswith(body) for k in tensors):
    tensors = {body + k: v for k, v in tensors.items()}
  return tensors


def read_hf_config(hf_dir: str) -> dict:
  """A local HF folder's config.json."""
  _check_local(hf_dir)
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"No config.json in {hf_dir}: pass a local Hugging Face model folder")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def config_from_hf(hf_dir: str, **overrides) -> ModelConfig:
  """Our `ModelConfig` from a local HF `config.json` (BERT, RoBERTa / XLM-R, ModernBERT)."""
  hf = read_hf_config(hf_dir)
  try:
    values = FAMILIES[family_of_model_type(hf.get("model_type"))].from_hf(hf)
  except ValueError as e:
    raise ValueError(f"{hf_dir}: {e}") from e
  values.update(overrides)
  return ModelConfig(**values)


def import_params(tensors: dict[str, np.ndarray], cfg: ModelConfig):
  """HF tensors -> (graphdef, nnx.State) for `cfg`. A body-only checkpoint (`BertModel`, ...)
  gets a fresh MLM head."""
  family = FAMILIES[cfg.family]
  with nnx.use_eager_sharding(False):
    fresh = make_model(cfg, nnx.Rngs(0))
  graphdef, state = nnx.split(fresh)
  flat_state = list(nnx.to_flat_state(state))
  template = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in flat_state}
  fresh_heads = {k: v for k, v in template.items() if k.startswith(TRAINING_ONLY)}
  ours = {k: v for k, v in template.items() if k not in fresh_heads}
  if not any(k.startswith(family.head) for k in tensors):  # the body alone: keep a fresh head
    fresh_tensors = to_hf_tensors(ours, cfg.vocab_size, cfg.family)
    tensors = {**{k: v for k, v in fresh_tensors.items()
                  if not k.startswith(family.body)}, **tensors}
  flat = {**from_hf_tensors(tensors, ours, cfg.family), **fresh_heads}
  new_state = nnx.from_flat_state(
      [(p, v.replace(value=flat["/".join(map(str, p))])) for p, v in flat_state])
  return graphdef, new_state


# The model keys an HF folder decides when a run continues from it.
ARCHITECTURE_KEYS = ("family", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "hidden_act",
                     "layer_norm_eps", "local_attention", "global_attn_every_n_layers",
                     "global_rope_theta", "local_rope_theta")
# Tokenizer files of an HF folder, in the order they are preferred.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "vocab.json")


def with_hf_architecture(config):
  """A copy of the run `config` whose model shape and tokenizer are `config.init_from_hf`'s."""
  hf_dir = config.init_from_hf
  hf_cfg = config_from_hf(hf_dir)
  config = config.copy_and_resolve_references()
  config.model.update({k: getattr(hf_cfg, k) for k in ARCHITECTURE_KEYS})
  if not config.data.tokenizer_path:
    for name in TOKENIZER_FILES:
      if os.path.exists(os.path.join(hf_dir, name)):
        config.data.tokenizer_path = os.path.join(hf_dir, name)
        break
    else:
      raise FileNotFoundError(f"{hf_dir} has none of {list(TOKENIZER_FILES)}; set "
                              "config.data.tokenizer_path to the model's tokenizer")
  return config


def load_params(hf_dir: str, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """The weights of a local HF folder as our flat params {"bert/...": array} for `cfg`."""
  hf_cfg = config_from_hf(hf_dir)
  if hf_cfg.vocab_size != cfg.vocab_size:
    raise ValueError(f"{hf_dir} has a vocabulary of {hf_cfg.vocab_size} but the run's "
                     f"tokenizer has {cfg.vocab_size} tokens; point config.data.tokenizer_path "
                     "at the model's own tokenizer.")
  if hf_cfg.family != cfg.family:
    raise ValueError(f"{hf_dir} holds a {hf_cfg.family} model but config.model.family is "
                     f"{cfg.family!r}")
  if hf_cfg.pad_token_id != cfg.pad_token_id:
    raise ValueError(f"{hf_dir} pads with id {hf_cfg.pad_token_id} but the run's tokenizer "
                     f"with {cfg.pad_token_id}; point config.data.tokenizer_path at the "
                     "model's own tokenizer.")
  _, imported = import_params(read_hf_tensors(hf_dir, cfg.family), cfg)
  return flatten_params(imported)
