"""Where files live: local paths and object-store URLs (gs://, s3://), through one layer.

Orbax and TFDS go through `etils.epath`; every path mlmjax reads or writes does too, so a
workdir, a corpus glob or a TFDS folder may be a bucket as well as a local folder. A URL goes
to fsspec (gcsfs for gs://, s3fs for s3://), which reaches an emulator or a private endpoint
through the standard variables (`STORAGE_EMULATOR_HOST`; TensorStore, which writes Orbax's
arrays, reads `TENSORSTORE_GCS_HTTP_URL`; ArrayRecord, which reads TFDS datasets,
`CLOUD_STORAGE_EMULATOR_ENDPOINT`). Local paths are made absolute and behave as plain
files; nothing is ever written under the current directory for a URL.

What an object store does not have is handled here once: no atomic rename (an object appears
whole when its upload ends, so a write is already atomic), no append and no seek on write (files
that grow are written locally and uploaded whole, see `upload`).
"""

import errno
import glob as glob_lib
import hashlib
import io
import json
import os
import shutil
import tempfile

from etils import epath
import fsspec
import numpy as np

# Schemes and the fsspec package each needs (what to `pip install` when it is missing).
BACKENDS = {"gs": "gcsfs", "s3": "s3fs"}
_GLOB_CHARS = "*?["


class StorageError(ValueError):
  """A path cannot be used as given; the message names the fix."""


class NoSpaceError(StorageError):
  """A disk is too full for what is to be written there; the message says how much is needed."""


def is_no_space(error: BaseException) -> bool:
  """Whether `error` (or one it was raised from) is a full disk or quota: an OSError ENOSPC or
  EDQUOT, or TensorStore's RESOURCE_EXHAUSTED for one (Orbax raises those as ValueError)."""
  while error is not None:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def explain(url: str, error: Exception, doing: str = "") -> StorageError:
  """A StorageError that says why a request to the object store at `url` failed (a bucket that
  does not exist, a store that cannot be reached) and the fix; `doing` names what failed.
  Asked only once something failed, so the requests that succeed pay nothing for it."""
  scheme, rest = os.fspath(url).split("://", 1)
  bucket = f"{scheme}://{rest.split('/', 1)[0]}"
  try:
    fs, _ = _filesystem(bucket)
    exists = fs.exists(bucket)
  except Exception as e:  # pylint: disable=broad-except
    reason = (f"cannot reach {bucket} ({type(e).__name__}: {str(e)[:200]}); check the network "
              "and the credentials (for an emulator: STORAGE_EMULATOR_HOST)")
  else:
    reason = (f"the bucket {bucket} does not exist, or this account cannot see it; create it "
              f"(gcloud storage buckets create {bucket}) or fix the path" if not exists else
              f"a request to {url} failed ({type(error).__name__}: "
              f"{(str(error).splitlines() or [''])[0][:300]})")
  return StorageError(f"{doing} failed: {reason}." if doing else reason[0].upper() + reason[1:]
                      + ".")


def free_bytes(p) -> int | None:
  """Bytes free on the disk that holds the local path `p` (or its nearest existing parent);
  None for a URL (an object store has no such limit to read)."""
  if is_url(p):
    return None
  folder = os.fspath(path(p))
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  return shutil.disk_usage(folder).free


def megabytes(n: int) -> str:
  return f"{n / 1e6:,.1f} MB"


def is_url(path) -> bool:
  """True for an object-store URL such as gs://bucket/dir (anything with a scheme)."""
  return "://" in os.fspath(path)


def path(p) -> epath.Path:
  """`p` as an epath.Path: a URL as given (its backend checked), a local path made absolute."""
  p = os.fspath(p)
  if not is_url(p):
    return epath.Path(os.path.abspath(os.path.expanduser(p)))
  scheme = p.split("://", 1)[0]
  package = BACKENDS.get(scheme)
  if package is None:
    raise StorageError(f"{p}: unsupported scheme {scheme}://; use a local path or one of "
                       f"{', '.join(s + '://' for s in BACKENDS)}.")
  try:
    __import__(package)
  except ImportError as e:
    raise StorageError(f"{p}: {scheme}:// paths need {package}: pip install "
                       f"'mlmjax[{scheme if scheme != 'gs' else 'gcs'}]' (or {package}).") from e
  return epath.Path(p)


def join(p, *parts) -> epath.Path:
  return path(p).joinpath(*parts)


def write_bytes(p, data: bytes) -> None:
  """Writes `data` at `p` atomically: a reader sees the old file or the new one, never half.

  Locally through a temporary file and a rename; an object store's upload is atomic already.
  """
  p = path(p)
  if is_url(p):
    p.write_bytes(data)
    return
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.with_name(p.name + ".tmp")
  tmp.write_bytes(data)
  os.replace(tmp, p)


def write_text(p, text: str) -> None:
  write_bytes(p, text.encode("utf-8"))


def read_json(p):
  """The JSON value at `p`, or None if there is no file."""
  p = path(p)
  if not p.exists():
    return None
  return json.loads(p.read_text(encoding="utf-8"))


def write_json(p, value) -> None:
  write_text(p, json.dumps(value, indent=2))


def save_npz(p, **arrays) -> None:
  """np.savez to any path (written in memory, then atomically)."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_bytes(p, buffer.getvalue())


def load_npz(p) -> dict:
  """{name: array} of an .npz at any path."""
  with np.load(io.BytesIO(path(p).read_bytes())) as f:
    return {k: f[k] for k in f.files}


def glob(pattern: str) -> list[str]:
  """Files matching `pattern` (`**` recursive), sorted; local or a URL such as gs://b/dir/*.txt."""
  if not is_url(pattern):
    return sorted(p for p in glob_lib.glob(os.path.expanduser(pattern), recursive=True)
                  if os.path.isfile(p))
  # fsspec's glob, not epath's: epath refuses `**` on a bucket and stats each match (one
  # request a file); fsspec lists once and gives each match's type.
  fs, scheme = _filesystem(pattern)
  found = fs.glob(pattern, detail=True)
  return sorted(f"{scheme}://{name}" for name, info in found.items()
                if info.get("type") != "directory")


def _filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
  """The fsspec filesystem of a URL (its package checked first, see `path`), and its scheme."""
  path(url)
  return fsspec.core.url_to_fs(url)[0], url.split("://", 1)[0]


def _modified(info: dict) -> float:
  """The modification time in an fsspec listing entry (gcsfs: mtime, s3fs: LastModified)."""
  value = info.get("mtime", info.get("LastModified", 0.0))
  return value.timestamp() if hasattr(value, "timestamp") else float(value)


def stat(p) -> tuple[int, float]:
  """(size in bytes, modification time) of a file."""
  if not is_url(p):
    info = os.stat(path(p))
    return int(info.st_size), float(info.st_mtime)
  # fsspec's info, not epath's stat, which rounds the time down to whole seconds.
  fs, _ = _filesystem(os.fspath(p))
  info = fs.info(os.fspath(p))
  return int(info["size"]), _modified(info)


def list_files(root) -> list[tuple[str, int, float]]:
  """(path, size, modification time) of every file under the folder `root`, or of the file
  `root`, sorted; local or a URL (one listing request, not one a file)."""
  if not is_url(root):
    top = os.fspath(path(root))
    names = ([top] if os.path.isfile(top) else
             [os.path.join(d, n) for d, _, files in os.walk(top) for n in files])
    return sorted((n, *stat(n)) for n in names)
  # fsspec's find, not epath's walk, which drops the scheme from the paths it gives.
  fs, scheme = _filesystem(os.fspath(root))
  found = fs.find(os.fspath(root), detail=True)
  return sorted((f"{scheme}://{name}", int(info["size"]), _modified(info))
                for name, info in found.items() if info.get("type") != "directory")


def upload(local: str, dest) -> None:
  """Copies a local file, or a folder's files, to `dest` (a URL or another local path)."""
  dest = path(dest)
  if os.path.isdir(local):
    for root, _, names in os.walk(local):
      for name in names:
        rel = os.path.relpath(os.path.join(root, name), local)
        upload(os.path.join(root, name), dest.joinpath(rel))
    return
  if not is_url(dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(local, tmp)
    os.replace(tmp, dest)
    return
  with open(local, "rb") as src, dest.open("wb") as out:
    shutil.copyfileobj(src, out, length=16 << 20)


def download(src, local: str) -> None:
  """Copies the file at `src` (URL or local) to the local path `local`, atomically."""
  os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
  tmp = f"{local}.{os.getpid()}.tmp"
  with path(src).open("rb") as f, open(tmp, "wb") as out:
    shutil.copyfileobj(f, out, length=16 << 20)
  os.replace(tmp, local)


def read_range(p, start: int, stop: int) -> bytes:
  """Bytes [start, stop) of the file at `p` (one ranged read on an object store)."""
  with path(p).open("rb") as f:
    f.seek(start)
    return f.read(stop - start)


def local_cache(p, *parts: str) -> str:
  """A folder on this machine's own disk for caches of the files under `p`.

  Under the system's temporary folder (`TMPDIR`), named after `p`, so that each host of a
  cluster keeps its own; it may be deleted at any time (it is refilled).
  """
  key = hashlib.sha256(os.fspath(path(p)).encode("utf-8")).hexdigest()[:16]
  folder = os.path.join(tempfile.gettempdir(), "mlmjax_cache", key, *parts)
  os.makedirs(folder, exist_ok=True)
  return folder


STAGING = "staging"  # under local_cache(p): files on their way to `p`


def staging_dir(p) -> str:
  """A folder on this machine's disk, of this process, for files to be uploaded under `p`."""
  return local_cache(p, STAGING, str(os.getpid()))


def local_dir(p) -> str | None:
  """The local folder `p` names, or None for a URL."""
  return None if is_url(p) else os.fspath(path(p))
