"""RoBERTa / XLM-R and ModernBERT both ways with Hugging Face: logits equal transformers' on the
same weights (float32, padded rows), export(import(x)) reproduces x exactly, and an exported
model loads in `AutoModelForMaskedLM` and the fill-mask pipeline. No download: the HF side is
built from configs with random weights."""

import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from mlmjax.convert import hf

ATOL = 1e-4  # float32 logits, CPU, different summation orders
SMALL = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
             intermediate_size=64)
HF_MODELS = {  # family test name -> (HF class, its config, our family)
    "roberta": (transformers.RobertaForMaskedLM,
                transformers.RobertaConfig(**SMALL, max_position_embeddings=40, pad_token_id=1,
                                           type_vocab_size=1), "roberta"),
    "xlm-roberta": (transformers.XLMRobertaForMaskedLM,
                    transformers.XLMRobertaConfig(**SMALL, max_position_embeddings=40,
                                                  pad_token_id=1, type_vocab_size=1), "roberta"),
    # A 4-token window (±2) and a global layer every 2: 12-token rows see both kinds.
    "modernbert": (transformers.ModernBertForMaskedLM,
                   transformers.ModernBertConfig(**SMALL, max_position_embeddings=64,
                                                 pad_token_id=1, local_attention=4,
                                                 global_attn_every_n_layers=2,
                                                 global_rope_theta=500.0,
                                                 local_rope_theta=50.0), "modernbert"),
}


@pytest.fixture(scope="module", params=sorted(HF_MODELS))
def hf_model(request, tmp_path_factory):
  """(name, folder, family) of a randomly initialised HF masked LM saved by transformers."""
  cls, cfg, family = HF_MODELS[request.param]
  torch.manual_seed(0)
  model = cls(cfg).eval()
  with torch.no_grad():  # non-trivial biases and norms so every mapping entry matters
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  out = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(out)
  return request.param, out, family


def padded_inputs(pad: int = 1):
  """[3, 12] ids, rows of 12, 9 and 5 real tokens then padding, and the lengths."""
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 99, size=(3, 12)).astype(np.int32)
  ids[:, 0] = 0
  lengths = np.array([12, 9, 5])
  for row, n in enumerate(lengths):
    ids[row, n - 1] = 2
    ids[row, n:] = pad
  return ids, lengths


def torch_logits(hf_dir, ids, lengths):
  model = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir).eval()
  mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int64)
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                 attention_mask=torch.from_numpy(mask)).logits.numpy()


def our_logits(model, ids):
  positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).astype(np.int32)
  return np.asarray(model(ids, positions))[..., : model.cfg.vocab_size]


def assert_real_positions_close(ours, theirs, lengths):
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(ours[row, :n], theirs[row, :n], atol=ATOL)


def test_import_matches_transformers(hf_model):
  """Unrolled layers; for ModernBERT also rolled ones (`scan_layers`: each layer picks its
  kind with lax.cond; BERT's rolled stack is tested in tests/convert/test_hf.py)."""
  _, folder, family = hf_model
  ids, lengths = padded_inputs(hf.config_from_hf(folder).pad_token_id)
  theirs = torch_logits(folder, ids, lengths)
  for scan in (False, True) if family == "modernbert" else (False,):
    cfg = hf.config_from_hf(folder, scan_layers=scan)
    assert cfg.family == family
    graphdef, state = hf.import_params(hf.read_hf_tensors(folder, family), cfg)
    assert_real_positions_close(our_logits(nnx.merge(graphdef, state), ids), theirs, lengths)


def test_export_of_import_reproduces_tensors_exactly(hf_model):
  _, folder, family = hf_model
  cfg = hf.config_from_hf(folder)
  original = hf.read_hf_tensors(folder, family)
  _, state = hf.import_params(original, cfg)
  exported = hf.to_hf_tensors(hf.flatten_params(state), cfg.vocab_size, family)
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_body_only_checkpoint_gets_a_fresh_head(tmp_path):
  torch.manual_seed(2)
  _, cfg, _ = HF_MODELS["modernbert"]
  body = transformers.ModernBertModel(cfg).eval()
  body.save_pretrained(tmp_path)
  ours = hf.config_from_hf(tmp_path)
  graphdef, state = hf.import_params(hf.read_hf_tensors(tmp_path, "modernbert"), ours)
  model = nnx.merge(graphdef, state)
  ids, lengths = padded_inputs(ours.pad_token_id)
  mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int64)
  with torch.no_grad():
    theirs = body(input_ids=torch.from_numpy(ids.astype(np.int64)),
                  attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  hidden = np.asarray(model.encode(ids, lengths=lengths))
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(hidden[row, :n], theirs[row, :n], atol=ATOL)


def test_variants_we_do_not_run_are_refused(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  (tmp_path / "config.json").write_text(json.dumps(
      {"model_type": "modernbert", **SMALL, "max_position_embeddings": 64, "norm_bias": True}))
  with pytest.raises(ValueError, match="norm_bias"):
    hf.config_from_hf(tmp_path)


def _family_run_config(tmp_path, family):
  from helpers import tiny_config  # pylint: disable=g-import-not-at-top
  from mlmjax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.with_family(tiny_config(tmp_path), family)
  config.model.local_attention = 16  # 32-token rows: windows of ±8 beside the global layers
  return config


@pytest.mark.parametrize("family", ["roberta", "modernbert"])
def test_from_scratch_export_and_continue(tmp_path, family):
  """A family's recipe trained from scratch (its own byte-level BPE tokenizer) beats the
  most-frequent-token baseline on held-out text (fixed seed; margin 2 points on ~100 masked
  tokens); its export loads in the fill-mask pipeline; a run continued from that export
  (init_from_hf) trains a few more steps."""
  from mlmjax import inference, pretrain  # pylint: disable=g-import-not-at-top
  config = _family_run_config(tmp_path, family)
  config.train.update(steps=300, warmup_steps=30, eval_every=0, checkpoint_every=300,
                      log_every=50)
  results = pretrain.train_and_evaluate(config, str(tmp_path / "scratch"))
  assert results["eval_accuracy"] > results["eval_baseline_accuracy"] + 0.02, results

  model, tok, _ = inference.load_trained(str(tmp_path / "scratch"))
  assert model.cfg.family == family
  hf.export(nnx.state(model, nnx.Param), model.cfg, tok, str(tmp_path / "hf"), lowercase=False)
  fill = transformers.pipeline("fill-mask", model=str(tmp_path / "hf"))
  assert type(fill.model).__name__ == hf.FAMILIES[family].architecture
  assert len(fill("The parser <mask> a new string.", top_k=2)) == 2

  config.init_from_hf = str(tmp_path / "hf")
  config.train.update(steps=3, warmup_steps=1)
  continued = pretrain.train_and_evaluate(config, str(tmp_path / "continued"))
  # Continued from the trained weights: already far better than a fresh model's first steps.
  assert continued["eval_accuracy"] > results["eval_baseline_accuracy"], continued
