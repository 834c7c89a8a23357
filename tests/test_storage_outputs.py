"""Outputs written to an object-store workdir (gs://, a real GCS emulator): metrics, curves,
Orbax checkpoints, the Hugging Face export; and nothing written under the current directory."""

import json
import logging
import os
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import gcs_fixture
from helpers import tiny_wordpiece
from mlmjax import checkpoint, inference, storage
from mlmjax import workdir as workdir_lib
from mlmjax.convert import hf
from mlmjax.train import curves
from mlmjax.train import metrics as metrics_lib

BUCKET = f"gs://{gcs_fixture.BUCKET}"


@pytest.fixture(autouse=True)
def quiet_gcsfs():
  """gcsfs warns "Could not determine bucket type" at every call on the emulator; silenced
  here as the command line silences it."""
  logger = logging.getLogger("gcsfs")
  level = logger.level
  logger.setLevel(logging.ERROR)
  yield
  logger.setLevel(level)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
  """An empty current directory; a URL misread as a local path would create `gs:` in it."""
  monkeypatch.chdir(tmp_path)
  yield tmp_path
  assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("gs:")]
  assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())


def read_jsonl(url) -> list[dict]:
  return [json.loads(line) for line in storage.path(url).read_text().splitlines() if line]


def test_metric_writer_uploads_on_flush_and_resumes_the_bucket_jsonl(gcs, cwd):
  logdir = f"{BUCKET}/metrics/tensorboard"
  writer = metrics_lib.MetricWriter(logdir)
  writer.write_scalars(1, {"loss": 3.0})
  assert gcs_fixture.files(logdir) == []  # no append on an object store: uploaded on flush
  writer.flush()
  names = gcs_fixture.files(logdir)
  assert "metrics.jsonl" in names and any(n.startswith("events.out.tfevents") for n in names)
  assert read_jsonl(f"{logdir}/metrics.jsonl") == [{"step": 1, "loss": 3.0}]
  writer.write_scalars(2, {"loss": 2.5, "accuracy": np.float32(0.25)})
  writer.close()
  assert [r["step"] for r in read_jsonl(f"{logdir}/metrics.jsonl")] == [1, 2]

  resumed = metrics_lib.MetricWriter(logdir)  # a resumed run continues the bucket's file
  resumed.write_scalars(3, {"loss": 2.0})
  resumed.close()
  assert read_jsonl(f"{logdir}/metrics.jsonl") == [
      {"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5, "accuracy": 0.25},
      {"step": 3, "loss": 2.0}]
  events = [n for n in gcs_fixture.files(logdir) if n.startswith("events.out.tfevents")]
  assert len(events) == 2 and all(storage.stat(f"{logdir}/{n}")[0] > 0 for n in events)

  metrics_lib.MetricWriter(logdir, enabled=False).close()  # other processes: no-ops
  metrics_lib.MetricWriter(logdir, enabled=False).flush()


def test_metric_writer_local_logdir_is_written_in_place(tmp_path):
  logdir = tmp_path / "tb"
  writer = metrics_lib.MetricWriter(str(logdir))
  writer.write_scalars(1, {"loss": 1.0})
  writer.flush()
  assert (logdir / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'
  writer.close()
  assert any(p.name.startswith("events.out.tfevents") for p in logdir.iterdir())


def test_curves_read_and_written_at_urls(gcs, cwd):
  records = [{"step": 1, "loss": 5.0, "accuracy": 0.1}, {"step": 2, "loss": 4.0, "accuracy": 0.2},
             {"step": 2, "eval_loss": 4.5, "eval_accuracy": 0.15,
              "eval_baseline_accuracy": 0.05}]
  metrics_url = f"{BUCKET}/curves/tensorboard/metrics.jsonl"
  storage.write_text(metrics_url, "".join(json.dumps(r) + "\n" for r in records))
  assert workdir_lib.read_metrics(metrics_url)["loss"] == [(1, 5.0), (2, 4.0)]
  out = curves.plot(metrics_url, f"{BUCKET}/curves/curves.png")
  assert out == f"{BUCKET}/curves/curves.png"
  assert storage.path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert curves.plot(f"{BUCKET}/curves/none.jsonl", f"{BUCKET}/curves/x.png") is None


def test_checkpoint_manager_at_url_saves_and_restores_state_and_iterator(gcs, cwd):
  workdir = f"{BUCKET}/ckpt"
  state = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4), "step": jnp.int32(7)}
  data = grain.MapDataset.range(100).to_iter_dataset()
  data_iter = iter(data)
  meta = {"config": {"seed": 0}, "tokenizer_hash": "abc"}
  manager = checkpoint.make_manager(workdir, save_every=1, keep=2)
  assert os.fspath(manager.directory) == f"{workdir}/checkpoints"  # not made a local path
  for _ in range(3):
    next(data_iter)
  assert checkpoint.save(manager, 1, state, data_iter, meta, force=True)
  manager.wait_until_finished()
  manager.close()
  assert any(n.startswith("checkpoints/1/state/") for n in gcs_fixture.files(workdir))

  manager = checkpoint.make_manager(workdir, save_every=1, keep=2)
  assert list(manager.all_steps()) == [1]
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                         sharding=x.sharding), state)
  fresh_iter = iter(data)
  restored, saved_meta = checkpoint.restore_latest_good(manager, abstract, fresh_iter,
                                                        lambda saved: True)
  manager.close()
  assert saved_meta == meta
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert int(restored["step"]) == 7
  assert next(fresh_iter) == 3  # the iterator continues where the saved one was


def _tiny_model_and_tokenizer():
  from flax import nnx
  from mlmjax.model.bert import BertForMaskedLM
  from mlmjax.model.config import ModelConfig
  cfg = ModelConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                   intermediate_size=64, max_position_embeddings=40)
  with nnx.use_eager_sharding(False):
    model = BertForMaskedLM(cfg, rngs=nnx.Rngs(3))
  return model, cfg, tiny_wordpiece(cfg.vocab_size)


def test_hf_export_to_url_is_uploaded_and_loads_in_transformers(gcs, cwd, tmp_path_factory):
  import torch
  import transformers
  from flax import nnx
  model, cfg, tok = _tiny_model_and_tokenizer()
  url = f"{BUCKET}/export/hf"
  assert hf.export(nnx.state(model, nnx.Param), cfg, tok, url, lowercase=True) == url
  names = gcs_fixture.files(url)
  assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt",
          "tokenizer_config.json", "special_tokens_map.json"} <= set(names)

  local = tmp_path_factory.mktemp("downloaded")
  for name in names:
    storage.download(f"{url}/{name}", os.path.join(local, name))
  theirs = transformers.BertForMaskedLM.from_pretrained(local).eval()
  ids = np.array([[2, 10, 20, 30, 3]], np.int32)
  with torch.no_grad():
    expected = theirs(input_ids=torch.from_numpy(ids.astype(np.int64))).logits.numpy()
  positions = np.arange(ids.shape[1], dtype=np.int32)[None]
  ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(positions)))[..., :cfg.vocab_size]
  np.testing.assert_allclose(ours, expected, atol=1e-4)
  assert transformers.AutoTokenizer.from_pretrained(local).mask_token == "[MASK]"


def test_hf_import_and_compare_refuse_urls():
  with pytest.raises(ValueError, match="local folder.*gsutil -m cp -r"):
    hf.config_from_hf("gs://bucket/bert")
  with pytest.raises(ValueError, match="local folder"):
    hf.read_hf_tensors("gs://bucket/bert")
  config = ml_collections.ConfigDict({"init_from_hf": "gs://bucket/bert"})
  with pytest.raises(ValueError, match="local folder"):
    hf.with_hf_architecture(config)
  with pytest.raises(ValueError, match="local folder"):
    hf.load_params("gs://bucket/bert", None)
  from mlmjax.experiments import compare  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="mlmjax-compare needs a local --workdir"):
    compare.compare(ml_collections.ConfigDict(), "gs://bucket/compare")


def test_load_trained_from_an_empty_url_workdir_says_train_first(gcs, cwd):
  with pytest.raises(FileNotFoundError, match="train first"):
    inference.load_trained(f"{BUCKET}/never_trained")


def run_cli(entry: str, *args: str, cwd) -> subprocess.CompletedProcess:
  command = entry.removeprefix("mlmjax-").replace("-", "_")
  code = f"import sys; sys.argv[0] = {entry!r}; from mlmjax import cli; cli.{command}()"
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        cwd=cwd, timeout=300, check=False)


def test_cli_reads_url_workdirs_and_checkpoints_quietly(gcs, cwd):
  out = run_cli("mlmjax-fill-mask", f"--checkpoint={BUCKET}/cli/checkpoints/3/",
                "Return the [MASK].", cwd=cwd)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert f"mlmjax: error: No checkpoint 3 in {BUCKET}/cli: train first" in out.stderr
  assert "Could not determine bucket type" not in out.stderr  # gcsfs's warning is silenced
  out = run_cli("mlmjax-export", "--workdir=ftp://host/run", "--out=/tmp/unused", cwd=cwd)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert "mlmjax: error: ftp://host/run: unsupported scheme ftp://" in out.stderr
