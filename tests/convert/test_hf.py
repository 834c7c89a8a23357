"""Hugging Face round trip: our logits equal transformers' on both import and export (f32)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from helpers import tiny_wordpiece
from mlmjax.convert import hf

ATOL = 1e-4  # float32 logits, CPU, different summation orders


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory):
  """A randomly initialised small BertForMaskedLM saved by transformers."""
  torch.manual_seed(0)
  cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=40, pad_token_id=0)
  model = transformers.BertForMaskedLM(cfg).eval()
  with torch.no_grad():  # non-trivial biases and norms so every mapping entry matters
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  out = tmp_path_factory.mktemp("hf_random")
  model.save_pretrained(out)
  return out


def inputs():
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 99, size=(3, 12)).astype(np.int32)
  ids[:, 0] = 2
  lengths = [12, 9, 5]
  for row, n in enumerate(lengths):
    ids[row, n - 1] = 3
    ids[row, n:] = 0
  return ids, np.array(lengths)


def torch_logits(hf_dir, ids, lengths):
  model = transformers.BertForMaskedLM.from_pretrained(hf_dir).eval()
  mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int64)
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                 attention_mask=torch.from_numpy(mask)).logits.numpy()


def our_logits(graphdef, state, ids):
  model = nnx.merge(graphdef, state)
  positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).astype(np.int32)
  return np.asarray(model(jnp.asarray(ids), jnp.asarray(positions)))[..., : model.cfg.vocab_size]


@pytest.mark.parametrize("scan", [False, True])  # the scanned model stacks the HF layers
def test_import_matches_transformers(torch_dir, scan):
  ids, lengths = inputs()
  cfg = hf.config_from_hf(torch_dir, scan_layers=scan)
  graphdef, state = hf.import_params(hf.read_hf_tensors(torch_dir), cfg)
  ours, theirs = our_logits(graphdef, state, ids), torch_logits(torch_dir, ids, lengths)
  for row, n in enumerate(lengths):  # padding positions are not defined outputs
    np.testing.assert_allclose(ours[row, :n], theirs[row, :n], atol=ATOL)


@pytest.mark.parametrize("scan", [False, True])
def test_export_of_import_reproduces_tensors_exactly(torch_dir, scan):
  cfg = hf.config_from_hf(torch_dir, scan_layers=scan)
  original = hf.read_hf_tensors(torch_dir)
  _, state = hf.import_params(original, cfg)
  exported = hf.to_hf_tensors(hf.flatten_params(state), cfg.vocab_size)
  for key, value in exported.items():
    np.testing.assert_array_equal(value, original[key], err_msg=key)
  assert not set(original) - set(exported) - {"cls.predictions.decoder.weight",
                                              "cls.predictions.decoder.bias"}


@pytest.mark.parametrize("scan", [False, True])  # a scanned model's stack is indexed per layer
def test_export_loads_in_transformers_with_same_logits(tmp_path, scan):
  from mlmjax.model.bert import BertForMaskedLM
  from mlmjax.model.config import ModelConfig
  cfg = ModelConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                   intermediate_size=64, max_position_embeddings=40, scan_layers=scan)
  with nnx.use_eager_sharding(False):
    model = BertForMaskedLM(cfg, rngs=nnx.Rngs(3))
  graphdef, state = nnx.split(model)
  tokenizer = tiny_wordpiece()
  hf.export(state, cfg, tokenizer, str(tmp_path), lowercase=True)
  ids, lengths = inputs()
  ours, theirs = our_logits(graphdef, state, ids), torch_logits(tmp_path, ids, lengths)
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(ours[row, :n], theirs[row, :n], atol=ATOL)
  assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
  auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert auto.mask_token == "[MASK]" and auto("a b")["input_ids"][0] == auto.cls_token_id


def test_missing_or_pickled_files_are_refused(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.config_from_hf(tmp_path / "missing")
  (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(ValueError, match="safetensors"):
    hf.read_hf_tensors(tmp_path)


@pytest.mark.parametrize("recipe", ["dynamic", "spanbert"])
def test_continued_pretraining_starts_from_the_hf_weights(tmp_path, recipe):
  """init_from_hf, through the library call (mlmjax.pretrain): model shape and tokenizer from
  the folder; with lr 0 at step 1 the trained checkpoint still holds exactly the imported
  weights. SpanBERT's recipe adds its boundary head, freshly initialised (HF has none)."""
  from helpers import tiny_config
  from mlmjax import inference, masking, pretrain
  from mlmjax.data import corpora, tokenizer as tokenizer_lib

  config = tiny_config(tmp_path)
  docs = corpora.load_documents(config.data)
  tok = tokenizer_lib.train_tokenizer(docs, 200, True)
  hf_dir = tmp_path / "hf_start"
  torch.manual_seed(1)
  start = transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=tok.get_vocab_size(), hidden_size=48, num_hidden_layers=1,
      num_attention_heads=3, intermediate_size=96, max_position_embeddings=32, pad_token_id=0))
  start.save_pretrained(hf_dir)
  tok.save(str(hf_dir / "tokenizer.json"))

  config.init_from_hf = str(hf_dir)
  config.train.update(steps=1, warmup_steps=1, eval_every=0)  # the only update has lr 0
  if recipe == "spanbert":
    config.masking = masking.preset("spanbert")
  pretrain.train_and_evaluate(config, str(tmp_path / "run"))
  model, _, meta = inference.load_trained(str(tmp_path / "run"))
  assert (model.sbo is not None) == (recipe == "spanbert")
  assert meta["model"]["hidden_size"] == 48 and meta["model"]["num_layers"] == 1
  ours = hf.to_hf_tensors(hf.flatten_params(nnx.state(model, nnx.Param)), model.cfg.vocab_size)
  original = hf.read_hf_tensors(hf_dir)
  for key, value in ours.items():
    np.testing.assert_array_equal(value, original[key], err_msg=key)


def test_continued_pretraining_refuses_bad_folders(tmp_path, torch_dir):
  import shutil
  from helpers import tiny_config
  from mlmjax import pretrain
  from mlmjax.data import corpora, tokenizer as tokenizer_lib
  from mlmjax.train import loop
  config = tiny_config(tmp_path)
  folder = tmp_path / "hf"
  shutil.copytree(torch_dir, folder)
  config.init_from_hf = str(folder)
  with pytest.raises(ValueError, match="call mlmjax.pretrain.train_and_evaluate"):
    loop.train_and_evaluate(config, str(tmp_path / "run0"))  # nothing silently ignored
  with pytest.raises(FileNotFoundError, match="tokenizer"):  # weights without a tokenizer
    pretrain.train_and_evaluate(config, str(tmp_path / "run1"))
  tok = tokenizer_lib.train_tokenizer(corpora.load_documents(config.data), 200, True)
  tok.save(str(folder / "tokenizer.json"))  # a tokenizer whose size is not the model's 99
  with pytest.raises(ValueError, match="vocabulary of 99"):
    pretrain.train_and_evaluate(config, str(tmp_path / "run2"))


def test_bert_model_import_keeps_the_encoder_and_adds_a_head(tmp_path):
  torch.manual_seed(2)
  cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=40, pad_token_id=0)
  body = transformers.BertModel(cfg, add_pooling_layer=True).eval()  # pooler: ignored
  body.save_pretrained(tmp_path)
  graphdef, state = hf.import_params(hf.read_hf_tensors(tmp_path), hf.config_from_hf(tmp_path))
  model = nnx.merge(graphdef, state)
  ids, lengths = inputs()
  mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int64)
  with torch.no_grad():
    theirs = body(input_ids=torch.from_numpy(ids.astype(np.int64)),
                  attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  ours = np.asarray(model.bert(jnp.asarray(ids), jnp.zeros_like(ids), jnp.asarray(lengths), None))
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(ours[row, :n], theirs[row, :n], atol=ATOL)


@pytest.mark.parametrize("model_type", ["distilbert", "t5"])
def test_other_architectures_are_refused(tmp_path, model_type):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
  with pytest.raises(ValueError, match=f"{model_type}.*cannot be imported"):
    hf.config_from_hf(tmp_path)
