"""The grain input pipeline over prepared data: shuffle per epoch, shard by process, batch.

A batch is `{"input_ids": int32 [b, S], "segment_ids": int32 [b, S], ...}` plus every
annotation the data was prepared with (entity_ids int32, phrase_ids int32, pos_class int8,
ngram_ids int32, all [b, S]), with b = the global batch size / jax.process_count(): each
process loads its own rows, and the trainer assembles the global batch with
`jax.make_array_from_process_local_data`.

Order. The split's R rows (its parts end to end, prepare.py) are cut into V = `shuffle_shards`
contiguous ranges of R / V rows, the shuffle shards. Each is a stream of its own: its rows,
shuffled anew each epoch (a permutation drawn from (seed, shard, epoch)), epochs end to end.
Global batch k takes the next B / V rows of every stream, stream 0's first; process p of n takes
the p-th contiguous block of B / n of the batch (the block `jax.make_array_from_process_local_data`
places on its devices). So a global batch holds the same rows in the same order whatever the
number of processes, and with V = 1 (the default) every epoch is one global shuffle. With V > 1
a process needs only the shuffle shards its block of each batch draws from: about R / n rows when
V is a multiple of n. Each shard covers one region of the corpus, so every batch is a
stratified sample: B / V rows from each region.

Where rows are read. A local workdir (one disk, or a filesystem the hosts share): the parts are
memory-mapped in place. A workdir on an object store: before the first batch each process copies
the parts its rows lie in (its shuffle shards' range, so about 1/n of the split plus at most one
part at each end) to its own disk (`storage.local_cache`, under TMPDIR) and maps them there;
copies are kept and reused while the data stays the same (the manifest's key names the folder).
Random access to single rows then costs a page-cache read, as on a local disk.

Speed: the grain dataset's elements are whole batches (the index of a global batch), and a
batch's rows are gathered from the memmaps with one sorted fancy index per part and field.
Per-row dataset elements would cost grain's per-element overhead (~20 µs) 256 times a batch;
this way it is paid once. grain still provides the iterator state (`get_state` / `set_state`,
or `grain.checkpoint` with Orbax) and the prefetch threads.
"""

import os
import shutil
import sys
import threading

import grain
import jax
import numpy as np

from mlmjax import storage
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import tokenizer as tokenizer_lib

# Batches are built ahead by background threads; a few hide a slow disk read.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


def _read_manifest(data_dir: str) -> dict:
  manifest = manifest_lib.read(data_dir)
  if manifest is None:
    raise FileNotFoundError(f"No prepared data in {data_dir}; run mlmjax-prepare (or "
                            "mlmjax.data.prepare.prepare) with this workdir first.")
  return manifest


class PackedRows:
  """Random access to the rows of a prepared split: {"input_ids", "segment_ids", ...}.

  Rows are numbered across the split's parts. `row_range` = (start, stop) limits what is made
  readable (and, for a workdir on an object store, what is copied to this machine). Pickling
  (for grain worker processes) carries only the paths; each process maps the files itself.
  """

  def __init__(self, data_dir: str, split: str, row_range: tuple[int, int] | None = None,
               manifest: dict | None = None):
    manifest = manifest or _read_manifest(data_dir)
    if split not in manifest["splits"]:
      raise ValueError(f"Unknown split {split!r}; prepared splits: {list(manifest['splits'])}.")
    self.info = manifest["splits"][split]
    roles = manifest["tokenizer"].get("roles") or {
        "pad": manifest["tokenizer"]["special_ids"][tokenizer_lib.PAD]}
    self.pad_id = roles["pad"]
    self.seq_len = self.info["shape"][1]
    parts = self.info["parts"]
    bounds = np.cumsum([0] + [p["rows"] for p in parts])
    start, stop = row_range or (0, int(bounds[-1]))
    # The parts holding rows [start, stop), with the global row each begins at.
    self._parts = [(int(bounds[i]), p) for i, p in enumerate(parts)
                   if bounds[i] < stop and bounds[i + 1] > start]
    self._begins = np.array([b for b, _ in self._parts], np.int64)
    self._paths = [{key: _local_file(data_dir, name, manifest, p["rows"], self.seq_len,
                                     self.info["dtype"][key])
                    for key, name in p["files"].items()} for _, p in self._parts]
    self._open()

  def _open(self) -> None:
    self._arrays = []
    for (_, part), paths in zip(self._parts, self._paths):
      for key, path in paths.items():  # before mapping: numpy's own error names no fix
        size = os.path.getsize(path) if os.path.exists(path) else None
        want = manifest_lib.npy_bytes(part["rows"], self.seq_len, self.info["dtype"][key])
        if size != want:
          raise ValueError(
              f"{path} has {'no file' if size is None else f'{size:,} bytes'}, the manifest "
              f"says {want:,} (it was cut short or changed); run mlmjax-prepare (or "
              "mlmjax-train) with this workdir again to rebuild it.")
      self._arrays.append({key: np.load(path, mmap_mode="r") for key, path in paths.items()})

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_arrays"}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open()

  @property
  def fields(self) -> tuple[str, ...]:
    return tuple(self.info["dtype"])

  def __len__(self) -> int:
    return self.info["shape"][0]

  def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Rows `indices` (int [n], any order, within the row range) as in-memory arrays [n, S]."""
    indices = np.asarray(indices, np.int64)
    out = {key: np.empty((len(indices), self.seq_len), dtype)
           for key, dtype in self.info["dtype"].items()}
    which = np.searchsorted(self._begins, indices, side="right") - 1
    for i in np.unique(which).tolist():
      at = np.flatnonzero(which == i)
      local = indices[at] - self._begins[i]
      # Sorted reads walk each file forwards (page cache and read-ahead friendly).
      order = np.argsort(local, kind="stable")
      for key, array in self._arrays[i].items():
        out[key][at[order]] = array[local[order]]
    return out

  def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows [start, stop) as in-memory arrays."""
    return self.take(np.arange(start, stop))

  def blank(self, n: int) -> dict[str, np.ndarray]:
    """n all-padding rows: [PAD] ids, every annotation 0."""
    shape = (n, self.seq_len)
    return {key: (np.full(shape, self.pad_id, dtype) if key == "input_ids"
                  else np.zeros(shape, dtype)) for key, dtype in self.info["dtype"].items()}


def _local_file(data_dir: str, name: str, manifest: dict, rows: int, seq_len: int,
                dtype: str) -> str:
  """A part file on this machine: in place for a local workdir, else a copy in the cache."""
  if storage.local_dir(data_dir):
    return os.path.join(data_dir, name)
  local = os.path.join(_cache_folder(data_dir, manifest), name.replace("/", "_"))
  size = manifest_lib.npy_bytes(rows, seq_len, dtype)
  if not (os.path.exists(local) and os.path.getsize(local) == size):
    storage.download(storage.join(data_dir, name), local)
  return local


def _cache_folder(data_dir: str, manifest: dict) -> str:
  """This machine's folder for copies of the parts of `data_dir`, named after the data's key;
  copies of data prepared there before (other keys) are deleted, so the cache holds one
  preparation's parts at most."""
  key = manifest["shards"]["key"][:16]
  root = storage.local_cache(data_dir)
  for name in os.listdir(root):
    if name not in (key, storage.STAGING):
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)
  return storage.local_cache(data_dir, key)


class _Streams:
  """Global batch k -> this process's rows of it (see the module docstring)."""

  def __init__(self, num_rows: int, batch_size: int, shuffle_shards: int, seed: int,
               shuffle: bool, process_index: int, process_count: int):
    if batch_size % shuffle_shards or num_rows < shuffle_shards:
      raise ValueError(f"data.shuffle_shards={shuffle_shards} must divide the batch size "
                       f"({batch_size}) and be at most the number of rows ({num_rows}).")
    self.seed, self.shuffle = seed, shuffle
    self.per_stream = batch_size // shuffle_shards  # rows each stream gives a batch
    self.bounds = np.array([v * num_rows // shuffle_shards for v in range(shuffle_shards + 1)],
                           np.int64)
    local = batch_size // process_count
    # This process's positions within every global batch, their streams and places there.
    positions = np.arange(process_index * local, (process_index + 1) * local, dtype=np.int64)
    self.stream, self.place = np.divmod(positions, self.per_stream)
    self._cache, self._lock = {}, threading.Lock()

  @property
  def row_range(self) -> tuple[int, int]:
    """The rows this process ever reads: its streams' range."""
    return int(self.bounds[self.stream.min()]), int(self.bounds[self.stream.max() + 1])

  def stream_rows(self) -> np.ndarray:
    return np.diff(self.bounds)

  def _permutation(self, stream: int, epoch: int) -> np.ndarray:
    key = (stream, epoch)
    with self._lock:
      perm = self._cache.get(key)
    if perm is None:
      n = int(self.bounds[stream + 1] - self.bounds[stream])
      dtype = np.int32 if n < 2**31 else np.int64
      perm = (np.random.default_rng([self.seed, stream, epoch]).permutation(n).astype(dtype)
              if self.shuffle else np.arange(n, dtype=dtype))
      with self._lock:
        self._cache[key] = perm
        # Keep a few epochs per stream: grain's reading threads may work on batches of
        # neighbouring epochs at once. The permutation returned is this local one, so an
        # eviction by another thread can never take it away.
        while len(self._cache) > 4 * len(np.unique(self.stream)):
          del self._cache[next(iter(self._cache))]
    return perm

  def rows_of(self, k: int, total: int | None = None) -> np.ndarray:
    """Row indices of this process's share of global batch k (int64 [b]).

    `total` (one stream only): the stream ends after this many elements; a last batch is
    then cut short.
    """
    q = k * self.per_stream + self.place  # element of its stream
    keep = slice(None) if total is None else q < total
    stream, q = self.stream[keep], q[keep]
    n = self.bounds[stream + 1] - self.bounds[stream]
    epochs, within = np.divmod(q, n)
    rows = np.empty(len(q), np.int64)
    for s, e in sorted({(int(s), int(e)) for s, e in zip(stream, epochs)}):
      at = (stream == s) & (epochs == e)
      rows[at] = self.bounds[s] + self._permutation(s, e)[within[at]]
    return rows


class _BatchReader:
  """A grain map over batch indices: global batch k -> this process's rows of it."""

  def __init__(self, source: PackedRows, streams: _Streams, total: int | None):
    self.source, self.streams, self.total = source, streams, total

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    return self.source.take(self.streams.rows_of(int(k), self.total))


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f"process_index={index} is not in [0, process_count={count}).")
  return index, count


def _local_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f"The global batch size {batch_size} must be a positive multiple of the "
                     f"number of processes ({process_count}); change train.batch_size.")
  return batch_size // process_count


def make_loader(data_dir: str, split: str, batch_size: int, *, seed: int, shuffle: bool = True,
                num_epochs: int | None = None, drop_remainder: bool = True,
                shuffle_shards: int = 1, process_index: int | None = None,
                process_count: int | None = None,
                read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS
                ) -> grain.DatasetIterator:
  """A checkpointable iterator over this process's batches of a prepared split.

  Args:
    data_dir: workdir/data, as written by `prepare.prepare` (local or a URL).
    split: "train" or "validation".
    batch_size: the global batch size B; this process yields B / process_count rows a batch.
    seed: the shuffle seed; every epoch of every shuffle shard is shuffled anew.
    shuffle: False keeps the rows in file order.
    num_epochs: passes over the split (over the smallest shuffle shard); None repeats forever.
    drop_remainder: drop a final short batch (finite num_epochs). With it, every process
      yields the same number of batches, all of B / process_count rows.
    shuffle_shards: V, see the module docstring (`data.shuffle_shards`); must divide B.
    process_index, process_count: this process's place; default `jax.process_index()` and
      `jax.process_count()`.
    read_options: grain's reading threads and prefetch buffer.
  Returns:
    A grain DatasetIterator of {"input_ids": int32 [b, S], "segment_ids": int32 [b, S], and
    each prepared annotation}; its `get_state()` / `set_state()` (or grain.checkpoint with
    Orbax) resume the exact sequence.
  """
  index, count = _process(process_index, process_count)
  _local_batch_size(batch_size, count)
  manifest = _read_manifest(data_dir)
  if split not in manifest["splits"]:
    raise ValueError(f"Unknown split {split!r}; prepared splits: {list(manifest['splits'])}.")
  num_rows = manifest["splits"][split]["shape"][0]
  streams = _Streams(num_rows, batch_size, shuffle_shards, seed, shuffle, index, count)
  source = PackedRows(data_dir, split, streams.row_range, manifest)
  total = None
  if num_epochs is None:
    num_batches = sys.maxsize  # endless; grain treats the length as a bound, nothing more
  else:
    if not drop_remainder and (count > 1 or shuffle_shards > 1):
      raise ValueError("drop_remainder=False with several processes or shuffle shards would "
                       "give batches of different sizes; use drop_remainder=True (or "
                       "eval_batches).")
    per_stream = num_epochs * int(streams.stream_rows().min())
    if drop_remainder:
      num_batches = per_stream // streams.per_stream
    else:
      total = per_stream
      num_batches = -(-total // batch_size)
    if num_batches == 0:
      raise ValueError(f"The {split} split has {num_rows} rows, fewer than one batch of "
                       f"{batch_size}; lower the batch size or use eval_batches, which pads.")
  reader = _BatchReader(source, streams, total)
  ds = grain.MapDataset.range(num_batches).map(reader)
  return iter(ds.to_iter_dataset(read_options))


def eval_batches(data_dir: str, split: str, batch_size: int, num_batches: int | None, *,
                 process_index: int | None = None,
                 process_count: int | None = None) -> list[dict[str, np.ndarray]]:
  """The split's first `num_batches * batch_size` rows in file order, as fixed batches.

  A split too short to fill them is completed with all-[PAD] rows (segment id and every
  annotation 0). Those rows carry no prediction, because masking never selects [PAD], so they
  change no metric that is weighted by predictions. `num_batches=None` covers the whole split.
  Batches are sharded over processes as in `make_loader`: each holds batch_size / process_count
  rows.
  """
  index, count = _process(process_index, process_count)
  _local_batch_size(batch_size, count)
  manifest = _read_manifest(data_dir)
  num_rows = manifest["splits"][split]["shape"][0]
  if num_batches is None:
    num_batches = -(-num_rows // batch_size)
  total = num_batches * batch_size
  have = min(total, num_rows)
  source = PackedRows(data_dir, split, (0, have), manifest)
  rows = source.rows(0, have)
  pad = source.blank(total - have)
  full = {key: np.concatenate([rows[key], pad[key]]) for key in rows}
  local = batch_size // count  # process p: the p-th contiguous block, as in make_loader
  return [{key: array[start + index * local:start + (index + 1) * local]
           for key, array in full.items()} for start in range(0, total, batch_size)]
