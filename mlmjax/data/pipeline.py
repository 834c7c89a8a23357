"""The grain input pipeline over prepared data: shuffle, repeat, shard by process, batch.

A batch is `{"input_ids": int32 [b, S], "segment_ids": int32 [b, S]}` with b = the global batch
size / jax.process_count(): each process loads its own rows, and the trainer assembles the
global batch with `jax.make_array_from_process_local_data`. Process p takes elements p, p + n,
p + 2n, ... of the global order, so global batch k holds the same rows (elements k*B to
(k+1)*B - 1) whatever the number of processes.
"""

import os
from collections.abc import Sequence

import grain
import jax
import numpy as np

from mlmjax.data import prepare as prepare_lib
from mlmjax.data import tokenizer as tokenizer_lib

# Rows come from the page cache, so few threads suffice; the buffer hides a disk read or two.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


class PackedRows:
  """A grain random-access source: row i of a prepared split as {"input_ids", "segment_ids"}.

  Opens the arrays as read-only memmaps; pickling (for grain worker processes) carries only
  the paths, and each worker maps the files itself.
  """

  def __init__(self, data_dir: str, split: str):
    manifest = prepare_lib.read_manifest(data_dir)
    if manifest is None:
      raise FileNotFoundError(f"No prepared data in {data_dir}; run mlmjax-prepare (or "
                              "mlmjax.data.prepare.prepare) with this workdir first.")
    if split not in manifest["splits"]:
      raise ValueError(f"Unknown split {split!r}; prepared splits: {list(manifest['splits'])}.")
    self.info = manifest["splits"][split]
    self.pad_id = manifest["tokenizer"]["special_ids"][tokenizer_lib.PAD]
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

  def __len__(self) -> int:
    return self.info["shape"][0]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {key: array[index] for key, array in self._arrays.items()}

  def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows [start, stop) as in-memory arrays."""
    return {key: np.array(array[start:stop]) for key, array in self._arrays.items()}


def _stack(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  # np.asarray: a stack of memmap slices must not keep the memmap subclass.
  return {key: np.asarray(np.stack([r[key] for r in rows])) for key in rows[0]}


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
    seed: the shuffle seed; every epoch is shuffled anew from it.
    shuffle: False keeps the rows in file order.
    num_epochs: passes over the split; None repeats forever.
    drop_remainder: drop a final short batch. With a finite num_epochs the rows are first cut
      to a multiple of B, so every process yields the same number of batches.
    process_index, process_count: this process's place; default `jax.process_index()` and
      `jax.process_count()`.
    read_options: grain's reading threads and prefetch buffer.
  Returns:
    A grain DatasetIterator of {"input_ids": int32 [b, S], "segment_ids": int32 [b, S]}; its
    `get_state()` / `set_state()` (or grain.checkpoint with Orbax) resume the exact sequence.
  """
  index, count = _process(process_index, process_count)
  local = _local_batch_size(batch_size, count)
  source = PackedRows(data_dir, split)
  ds = grain.MapDataset.source(source)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)  # reseeds the shuffle each epoch
  if num_epochs is not None:
    if not drop_remainder and count > 1:
      raise ValueError("drop_remainder=False with several processes would give them batches "
                       "of different sizes; use drop_remainder=True (or eval_batches).")
    total = len(ds) // batch_size * batch_size if drop_remainder else len(ds)
    if total == 0:
      raise ValueError(f"The {split} split has {len(source)} rows, fewer than one batch of "
                       f"{batch_size}; lower the batch size or use eval_batches, which pads.")
    ds = ds[:total]
  ds = ds[index::count]
  ds = ds.batch(local, drop_remainder=drop_remainder, batch_fn=_stack)
  return iter(ds.to_iter_dataset(read_options))


def eval_batches(data_dir: str, split: str, batch_size: int, num_batches: int | None, *,
                 process_index: int | None = None,
                 process_count: int | None = None) -> list[dict[str, np.ndarray]]:
  """The split's first `num_batches * batch_size` rows in file order, as fixed batches.

  A split too short to fill them is completed with all-[PAD] rows (segment id 0). Those rows
  carry no prediction, because masking never selects [PAD], so they change no metric that is
  weighted by predictions. `num_batches=None` covers the whole split. Batches are sharded over
  processes as in `make_loader`: each holds batch_size / process_count rows.
  """
  index, count = _process(process_index, process_count)
  _local_batch_size(batch_size, count)
  source = PackedRows(data_dir, split)
  if num_batches is None:
    num_batches = -(-len(source) // batch_size)
  total = num_batches * batch_size
  rows = source.rows(0, min(total, len(source)))
  missing = total - rows["input_ids"].shape[0]
  seq_len = rows["input_ids"].shape[1]
  pad = {"input_ids": np.full((missing, seq_len), source.pad_id, np.int32),
         "segment_ids": np.zeros((missing, seq_len), np.int32)}
  full = {key: np.concatenate([rows[key], pad[key]]) for key in rows}
  return [{key: array[start:start + batch_size][index::count] for key, array in full.items()}
          for start in range(0, total, batch_size)]
