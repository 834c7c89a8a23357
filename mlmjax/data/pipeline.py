"""The grain input pipeline over prepared data: shuffle per epoch, shard by process, batch.

A batch is `{"input_ids": int32 [b, S], "segment_ids": int32 [b, S], ...}` plus every
annotation the data was prepared with (entity_ids int32, phrase_ids int32, pos_class int8,
ngram_ids int32, all [b, S]), with b = the global batch size / jax.process_count(): each
process loads its own rows, and the trainer assembles the global batch with
`jax.make_array_from_process_local_data`.

Order: the split's rows, shuffled anew each epoch (a permutation drawn from (seed, epoch)),
epochs end to end, form one global stream; global batch k is stream elements k*B to
(k+1)*B - 1, and process p of n takes the p-th contiguous block of B/n of them (the block
`jax.make_array_from_process_local_data` places on its devices). So every global batch holds the
same rows in the same order whatever the number of processes, and in an epoch the processes
together read every row once.

Speed: the grain dataset's elements are whole batches (the index of a global batch), and a
batch's rows are gathered from the memmapped files with one sorted fancy index per field.
Per-row dataset elements would cost grain's per-element overhead (~20 µs) 256 times a batch;
this way it is paid once. grain still provides the iterator state (`get_state` / `set_state`,
or `grain.checkpoint` with Orbax) and the prefetch threads.
"""

import os
import sys

import grain
import jax
import numpy as np

from mlmjax.data import manifest as manifest_lib
from mlmjax.data import tokenizer as tokenizer_lib

# Batches are built ahead by background threads; a few hide a slow disk read.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


class PackedRows:
  """Random access to the rows of a prepared split: {"input_ids", "segment_ids", ...}.

  Opens the arrays as read-only memmaps; pickling (for grain worker processes) carries only
  the paths, and each worker maps the files itself.
  """

  def __init__(self, data_dir: str, split: str):
    manifest = manifest_lib.read(data_dir)
    if manifest is None:
      raise FileNotFoundError(f"No prepared data in {data_dir}; run mlmjax-prepare (or "
                              "mlmjax.data.prepare.prepare) with this workdir first.")
    if split not in manifest["splits"]:
      raise ValueError(f"Unknown split {split!r}; prepared splits: {list(manifest['splits'])}.")
    self.info = manifest["splits"][split]
    roles = manifest["tokenizer"].get("roles") or {
        "pad": manifest["tokenizer"]["special_ids"][tokenizer_lib.PAD]}
    self.pad_id = roles["pad"]
    self._paths = {key: os.path.join(data_dir, name)
                   for key, name in self.info["files"].items()}
    self._open()

  def _open(self) -> None:
    self._arrays = {key: np.load(path, mmap_mode="r") for key, path in self._paths.items()}
    for key, array in self._arrays.items():
      if list(array.shape) != self.info["shape"]:
        raise ValueError(f"{self._paths[key]} has shape {array.shape}, the manifest says "
                         f"{self.info['shape']}; prepare the data again.")

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_arrays"}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open()

  @property
  def fields(self) -> tuple[str, ...]:
    return tuple(self._arrays)

  def __len__(self) -> int:
    return self.info["shape"][0]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {key: array[index] for key, array in self._arrays.items()}

  def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows [start, stop) as in-memory arrays."""
    return {key: np.array(array[start:stop]) for key, array in self._arrays.items()}

  def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Rows `indices` (int [n], any order) as in-memory arrays [n, S]."""
    # Sorted reads walk each file forwards (page cache and read-ahead friendly).
    order = np.argsort(indices, kind="stable")
    unsort = np.empty_like(order)
    unsort[order] = np.arange(len(order))
    sorted_indices = np.asarray(indices)[order]
    return {key: array[sorted_indices][unsort] for key, array in self._arrays.items()}

  def blank(self, n: int) -> dict[str, np.ndarray]:
    """n all-padding rows: [PAD] ids, every annotation 0."""
    shape = (n, self.info["shape"][1])
    return {key: (np.full(shape, self.pad_id, array.dtype) if key == "input_ids"
                  else np.zeros(shape, array.dtype)) for key, array in self._arrays.items()}


class _BatchReader:
  """Global batch k -> this process's rows of it (a grain map over batch indices)."""

  def __init__(self, source: PackedRows, batch_size: int, seed: int, shuffle: bool,
               total: int | None, process_index: int, process_count: int):
    self.source, self.batch_size, self.seed, self.shuffle = source, batch_size, seed, shuffle
    self.total = total  # stream elements in all (None: endless)
    self.index, self.count = process_index, process_count

  def _permutation(self, epoch: int) -> np.ndarray:
    # Kept for this epoch and, at a boundary, the next: 4 bytes a row each.
    cache = self.__dict__.setdefault("_cache", {})
    if epoch not in cache:
      n = len(self.source)
      dtype = np.int32 if n < 2**31 else np.int64
      cache[epoch] = (np.random.default_rng([self.seed, epoch]).permutation(n).astype(dtype)
                      if self.shuffle else np.arange(n, dtype=dtype))
      for old in sorted(cache)[:-2]:
        del cache[old]
    return cache[epoch]

  def rows_of(self, k: int) -> np.ndarray:
    """Row indices of this process's share of global batch k (int64 [b])."""
    stop = (k + 1) * self.batch_size
    if self.total is not None:
      stop = min(stop, self.total)
    # Process p holds the p-th contiguous block of the global batch: the block
    # `jax.make_array_from_process_local_data` puts on its devices, so the global batch (and the
    # per-row masks) are the same however many processes read it.
    local = self.batch_size // self.count
    start = k * self.batch_size + self.index * local
    q = np.arange(start, min(start + local, stop), dtype=np.int64)
    n = len(self.source)
    epochs, within = np.divmod(q, n)
    rows = np.empty(len(q), np.int64)
    for epoch in np.unique(epochs).tolist():
      at = epochs == epoch
      rows[at] = self._permutation(epoch)[within[at]]
    return rows

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    return self.source.take(self.rows_of(int(k)))


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
                process_index: int | None = None, process_count: int | None = None,
                read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS
                ) -> grain.DatasetIterator:
  """A checkpointable iterator over this process's batches of a prepared split.

  Args:
    data_dir: workdir/data, as written by `prepare.prepare`.
    split: "train" or "validation".
    batch_size: the global batch size B; this process yields B / process_count rows a batch.
    seed: the shuffle seed; every epoch is shuffled anew from (seed, epoch).
    shuffle: False keeps the rows in file order.
    num_epochs: passes over the split; None repeats forever.
    drop_remainder: drop a final short batch (finite num_epochs). With it, every process
      yields the same number of batches, all of B / process_count rows.
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
  source = PackedRows(data_dir, split)
  total = None if num_epochs is None else num_epochs * len(source)
  if total is None:
    num_batches = sys.maxsize  # endless; grain treats the length as a bound, nothing more
  else:
    if not drop_remainder and count > 1:
      raise ValueError("drop_remainder=False with several processes would give them batches "
                       "of different sizes; use drop_remainder=True (or eval_batches).")
    num_batches = total // batch_size if drop_remainder else -(-total // batch_size)
    if num_batches == 0:
      raise ValueError(f"The {split} split has {len(source)} rows, fewer than one batch of "
                       f"{batch_size}; lower the batch size or use eval_batches, which pads.")
  reader = _BatchReader(source, batch_size, seed, shuffle, total, index, count)
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
  source = PackedRows(data_dir, split)
  if num_batches is None:
    num_batches = -(-len(source) // batch_size)
  total = num_batches * batch_size
  rows = source.rows(0, min(total, len(source)))
  pad = source.blank(total - rows["input_ids"].shape[0])
  full = {key: np.concatenate([rows[key], pad[key]]) for key in rows}
  local = batch_size // count  # process p: the p-th contiguous block, as in make_loader
  return [{key: array[start + index * local:start + (index + 1) * local]
           for key, array in full.items()} for start in range(0, total, batch_size)]
