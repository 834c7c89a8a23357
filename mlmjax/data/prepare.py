"""Tokenize, annotate and pack a corpus into fixed-length rows, in shards, with a manifest.

    mlmjax-prepare --config=configs/quickstart.py --workdir=DIR      # DIR may be gs://bucket/x

writes DIR/data/:
  manifest.json                    what is there and how it was made (read it first)
  parts/{split}-{k:05d}.{field}.npy  shard k's rows of a split: input_ids, segment_ids and each
                                   of `data.annotations` (entity_ids, phrase_ids, pos_class,
                                   ngram_ids), all [n_k, S]; a split's rows are its parts in
                                   shard order
  parts/{k:05d}.json, .stats.npz   shard k's record: its counts, its token statistics
  token_stats.npz                  frequency / document frequency per token id (stats.py)
  pmi_vocab.npz, pmi_vocab.json    the PMI n-gram vocabulary, when ngram_ids is asked for

Shards: the corpus is cut into shards of about `data.shard_bytes` of input (sources.py), fixed
by the corpus and the config alone. With P processes (the hosts of a cluster), process p
prepares shards p, p + P, ... with its own tokenizing workers, so the hosts of a pod prepare in
parallel and the result does not depend on P; rows never cross a shard. Each process reads its
shards lazily and writes each part locally, then uploads it when the workdir is a bucket, so
memory and local disk hold one shard at a time whatever the corpus size. Process 0 trains the
tokenizer first (on a bounded sample, tokenizer.py) and, once every shard is written, merges
the shards' statistics, builds the PMI vocabulary and writes the manifest, last: its presence
means the data is complete. A shard whose record matches the inputs is not prepared again, so
a preparation that was killed goes on from the shards it had finished.

Storage: .npy files, read back as memmaps (local workdir) or copied range by range to each
host's local disk (bucket workdir; pipeline.py). Rows of fixed size need no framing, index or
decoding; one file per field keeps annotations optional.

Work within a process (shards.py): chunks of documents are tokenized and annotated in
`data.num_workers` processes (workers.py; 0: every core; results come back in order, so the
output does not depend on the number of workers), and packed (packing.py) and written
(parts.py) while the workers go on. Re-running with the same data config, corpus, tokenizer,
annotator and annotation schema is a no-op.

This module is the order of the stages and the manifest: the shards (shards.py), the merge of
their records and statistics, the PMI pass (pmi_pass.py), the manifest, last.
"""

import hashlib
import json
import os
import time
from collections.abc import Callable

from absl import logging
import ml_collections
import numpy as np
import tokenizers

from mlmjax import storage
from mlmjax.data import annotate
from mlmjax.data import corpora
from mlmjax.data import manifest as manifest_lib
from mlmjax.data import packing
from mlmjax.data import parts
from mlmjax.data import pmi
from mlmjax.data import pmi_pass
from mlmjax.data import shards as shards_lib
from mlmjax.data import sources
from mlmjax.data import stats as stats_lib
from mlmjax.data import token_tables
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.data import workers
from mlmjax.masking import tables

Sync = Callable[[str], None]  # a barrier across the processes, by name


def _no_sync(name: str) -> None:
  del name


def prepare(data_config: ml_collections.ConfigDict, workdir: str, *, process_index: int = 0,
            process_count: int = 1, sync: Sync = _no_sync) -> dict:
  """Makes workdir/data (see the module docstring) and returns its manifest.

  A no-op (returns the manifest) when the data there was prepared from the same data config,
  the same corpus files, the same tokenizer and the same annotator; otherwise prepares again
  and logs why. With several processes, every one of them calls it with its index, the count
  and `sync`, a barrier across them (the trainer passes JAX's): each prepares its shards.
  """
  if data_config.seq_len < 3:
    raise ValueError(f"data.seq_len={data_config.seq_len} must be at least 3 ([CLS] x [SEP]).")
  if data_config.packing not in packing.MODES:
    raise ValueError(f"Unknown data.packing {data_config.packing!r}; use one of "
                     f"{list(packing.MODES)}.")
  manifest_lib.wanted_annotations(data_config)  # refuses an unknown name before any work
  data_dir = os.fspath(storage.join(workdir, manifest_lib.DATA_DIR))
  manifest = manifest_lib.read(data_dir)
  reasons = manifest_lib.stale_reasons(manifest, data_config, workdir)
  sync("mlmjax: prepared data checked")  # every process decided before anything changes
  if not reasons:
    logging.info("Prepared data in %s is up to date.", data_dir)
    return manifest
  logging.info("Preparing data in %s: %s.", data_dir, "; ".join(reasons))
  return _prepare_afresh(data_config, workdir, data_dir, process_index, process_count, sync)


def _inputs_key(data_config, fingerprint: dict, tok_hash: str, annotator: str) -> str:
  """A hash of everything a shard's rows depend on."""
  wanted = manifest_lib.wanted_annotations(data_config)
  inputs = {"format": manifest_lib.FORMAT_VERSION,
            "config": manifest_lib.config_record(data_config), "corpus": fingerprint,
            "tokenizer": tok_hash, "annotator": annotator,
            "schema": manifest_lib.schema(wanted, annotator)}
  return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _prepare_afresh(data_config, workdir: str, data_dir: str, process_index: int,
                    process_count: int, sync: Sync) -> dict:
  """The tokenizer (process 0), every process's shards, then statistics, n-grams, manifest."""
  start = time.perf_counter()
  main = process_index == 0
  fingerprint = corpora.source_fingerprint(data_config)
  annotator = manifest_lib.annotator(data_config)
  shards = sources.list_shards(data_config)
  tok = _tokenizer(data_config, workdir, data_dir, main, sync)
  tok_hash = tokenizer_lib.tokenizer_hash(tok)
  tokenizer_seconds = time.perf_counter() - start

  spec = _spec(data_config, tok, _inputs_key(data_config, fingerprint, tok_hash, annotator),
               annotator)
  mine = [s for s in shards if s.index % process_count == process_index]
  prepared = shards_lib.prepare_shards(data_config, tok, mine, spec, data_dir)
  logging.info("Process %d prepared %d of its %d shards (%d in all; the rest were up to date).",
               process_index, prepared, len(mine), len(shards))
  sync("mlmjax: shards prepared")

  records = shards_lib.read_records(data_dir, len(shards))
  splits = _merge_splits(records, data_config.seq_len)
  pmi_entry = None
  if annotate.NGRAM in spec.wanted:
    pmi_entry = _pmi_pass(data_config, tok, data_dir, splits, spec, {s.index for s in mine},
                          main, sync)
  if main:
    stats_file = _merge_stats(data_dir, records, len(spec.token_tables["word_start"]),
                              tokenizer_lib.special_roles(tok)["pad"], tok_hash)
    if pmi_entry is not None:
      pmi_pass.record_coverage(data_dir, splits, pmi_entry)
    _warn_of_split_units(splits, data_config)
    seconds = time.perf_counter() - start
    tokens = sum(s["tokens"] for s in splits.values())
    manifest = {
        **_description(data_config, tok, tok_hash, fingerprint, annotator, data_dir),
        "token_stats": stats_file,
        "pmi": pmi_entry,
        "shards": {"count": len(shards), "shard_bytes": data_config.shard_bytes,
                   "processes": process_count, "workers_per_process": spec.workers,
                   "key": spec.key},
        "splits": splits,
        "timing": {"seconds": round(seconds, 3),
                   "tokenizer_seconds": round(tokenizer_seconds, 3),
                   "tokens_per_second": round(tokens / max(seconds - tokenizer_seconds, 1e-9))},
    }
    manifest_lib.write(storage.join(data_dir, manifest_lib.MANIFEST), manifest)  # last
    logging.info("Prepared %s in %.1fs.", ", ".join(
        f"{s}: {m['documents']} docs, {m['tokens']} tokens, {m['rows']} rows"
        for s, m in splits.items()), seconds)
  sync("mlmjax: manifest written")
  return manifest_lib.read(data_dir)


def _tokenizer(data_config, workdir: str, data_dir: str, main: bool,
               sync: Sync) -> tokenizers.Tokenizer:
  """The tokenizer process 0 trained (or loaded), in every process; process 0 first deletes the
  old manifest, as the arrays are about to change: never pair them with an old one."""
  if main:
    manifest_path = storage.join(data_dir, manifest_lib.MANIFEST)
    if manifest_path.exists():
      manifest_path.unlink()
    tokenizer_lib.get_tokenizer(data_config, workdir,
                                documents=corpora.tokenizer_sample(data_config))
  sync("mlmjax: tokenizer ready")
  return tokenizer_lib.get_tokenizer(data_config, workdir)  # the one process 0 made


def _spec(data_config, tok: tokenizers.Tokenizer, key: str, annotator: str) -> shards_lib.Spec:
  """What every process makes of its shards; `key` is `_inputs_key`'s."""
  wanted = manifest_lib.wanted_annotations(data_config)
  return shards_lib.Spec(
      seq_len=data_config.seq_len, packing=data_config.packing, wanted=wanted,
      job=workers.Job.for_data(wanted, annotator, data_config.packing,
                               tables.DEFAULT_FUNCTION_WORDS),
      token_tables=token_tables.from_tokenizer(tok), workers=workers.num_workers(data_config),
      key=key)


def _pmi_pass(data_config, tok: tokenizers.Tokenizer, data_dir: str, splits: dict,
              spec: shards_lib.Spec, mine: set[int], main: bool, sync: Sync) -> dict | None:
  """ngram_ids of every part (pmi_pass.py), the splits' files listing them; returns the
  manifest's `pmi` entry in process 0 (None in the others)."""
  pmi_pass.add_files(splits)
  pmi_entry = None
  if main:
    pmi_entry = pmi_pass.build_vocab(tok, data_dir, splits, spec.seq_len, spec.token_tables,
                                     pmi.PmiConfig.from_config(data_config.pmi))
  sync("mlmjax: n-gram vocabulary ready")
  pmi_pass.match_parts(data_dir, splits, mine, spec.seq_len, spec.token_tables,
                       pmi.load_vocab(data_dir), parts.staging_dir(data_dir))
  sync("mlmjax: n-grams matched")
  return pmi_entry


# ------------------------------------------------------- merging and the manifest (process 0)


def _merge_splits(records: list[dict], seq_len: int) -> dict:
  """The manifest's splits: totals, and the parts in shard order (empty ones left out)."""
  splits = {}
  for split in manifest_lib.SPLITS:
    entries = [(r["shard"], r["splits"][split]) for r in records if split in r["splits"]]
    totals = {k: sum(e[k] for _, e in entries) for k in (
        "documents", "documents_without_tokens", "tokens", "rows", "padding", "units_split")}
    if not totals["tokens"]:
      raise sources.CorpusError(
          f"The {split} split has no token at all ({totals['documents']} documents); "
          + ("raise data.validation_fraction or add documents." if split == "validation"
             else "check the corpus, data.validation_fraction and the tokenizer."))
    split_parts = [{"shard": k, "rows": e["rows"], "files": e["files"]} for k, e in entries
                   if e["rows"]]
    any_files = split_parts[0]["files"]
    splits[split] = {**totals, "shape": [totals["rows"], seq_len],
                     "dtype": {key: np.dtype(packing.FIELD_DTYPES[key]).name
                               for key in any_files},
                     "parts": split_parts}
  return splits


def _merge_stats(data_dir: str, records: list[dict], vocab_size: int, pad_id: int,
                 tok_hash: str) -> str:
  """Sums the shards' token statistics into token_stats.npz; returns its name."""
  stats = stats_lib.TokenStats(vocab_size, pad_id)
  for r in records:
    part = storage.load_npz(storage.join(data_dir, parts.record_name(r["shard"], ".stats.npz")))
    stats.frequency += part["frequency"]
    stats.document_frequency += part["document_frequency"]
    stats.documents += int(part["documents"])
  return stats.save(data_dir, tok_hash)


def _warn_of_split_units(splits: dict, data_config) -> None:
  """Logs, per split, the sentences (or documents) longer than a row."""
  for split, info in splits.items():
    if info["units_split"]:
      unit = "sentences" if data_config.packing == "full_sentences" else "documents"
      logging.warning("%s: %d %s longer than a row (%d tokens) continue across rows.", split,
                      info["units_split"], unit, data_config.seq_len - 1)


def _description(data_config, tok: tokenizers.Tokenizer, tok_hash: str, fingerprint: dict,
                 annotator: str, data_dir: str) -> dict:
  """The manifest's first entries: what the data was made from and what its fields hold."""
  wanted = manifest_lib.wanted_annotations(data_config)
  return {
      "format_version": manifest_lib.FORMAT_VERSION,
      "data_dir": data_dir,
      "data_config": manifest_lib.config_record(data_config),
      "source_fingerprint": fingerprint,
      "tokenizer": {"sha256": tok_hash,
                    "vocab_size": tok.get_vocab_size(),
                    "special_ids": tokenizer_lib.special_ids(tok),
                    "roles": tokenizer_lib.special_roles(tok)},
      "seq_len": data_config.seq_len,
      "packing": data_config.packing,
      "annotations": list(wanted),
      "annotator": annotator,
      "schema": manifest_lib.schema(wanted, annotator),
  }
