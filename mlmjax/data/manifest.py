"""The manifest of prepared data: what workdir/data holds, how it was made, and whether it still
matches a config.

prepare.py writes it last, once the arrays are complete (`write`: atomically); everything that
reads prepared data reads it first (`read`). `stale_reasons` says why the data in a workdir no
longer matches a config (the data config, the corpus files, the tokenizer, the annotator, the
meaning of an annotation's values, a missing file): prepare.py prepares again when it says
anything.
"""

import json
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from mlmjax import storage
from mlmjax import workdir as workdir_lib
from mlmjax.data import annotate
from mlmjax.data import corpora
from mlmjax.data import spacy_annotator
from mlmjax.data import tokenizer as tokenizer_lib

FORMAT_VERSION = 3  # 3: rows in shards (parts/), made by any number of processes
DATA_DIR = workdir_lib.DATA  # under the workdir
MANIFEST = "manifest.json"
SPLITS = ("train", "validation")
# Keys that change how, not what, is prepared (or only how it is read): never stale.
RUNTIME_KEYS = ("num_workers", "shuffle_shards")
# A part's .npy header (parts.NpyWriter pads it to this), then its rows.
NPY_HEADER_BYTES = 128


def npy_bytes(rows: int, seq_len: int, dtype: str) -> int:
  """The size of a part file of `rows` rows of `seq_len` values of `dtype`."""
  return NPY_HEADER_BYTES + rows * seq_len * np.dtype(dtype).itemsize


def config_record(data_config: ml_collections.ConfigDict) -> dict:
  """The data config as the manifest records it (runtime keys left out)."""
  # Through JSON so that tuples and lists compare equal to what a manifest holds.
  record = json.loads(json.dumps(data_config.to_dict(), sort_keys=True))
  return {k: v for k, v in record.items() if k not in RUNTIME_KEYS}


def read(data_dir: str) -> dict | None:
  """The manifest in `data_dir` (workdir/data, local or a URL), or None if there is none."""
  return storage.read_json(storage.join(data_dir, MANIFEST))


def wanted_annotations(data_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`data.annotations`, checked, in canonical order."""
  wanted = tuple(data_config.annotations or ())
  unknown = sorted(set(wanted) - set(annotate.ANNOTATIONS))
  if unknown:
    raise ValueError(f"Unknown data.annotations {unknown}; choose among "
                     f"{list(annotate.ANNOTATIONS)}.")
  return tuple(a for a in annotate.ANNOTATIONS if a in wanted)


def annotator(data_config: ml_collections.ConfigDict) -> str:
  """What makes the text annotations the config asks for: "none", the rules or a pipeline."""
  if not set(wanted_annotations(data_config)) & set(annotate.TEXT_ANNOTATIONS):
    return "none"
  return spacy_annotator.resolve_annotator(data_config.spacy_pipeline)


def stale_reasons(manifest, data_config, workdir) -> list[str]:
  """Why the prepared data in `workdir` does not match the config ([] if it does)."""
  if manifest is None:
    return ["no prepared data"]
  if manifest.get("format_version") != FORMAT_VERSION:
    return [f"format version {manifest.get('format_version')} != {FORMAT_VERSION}"]
  reasons = []
  old, new = manifest["data_config"], config_record(data_config)
  reasons += [f"data.{k} changed" for k in sorted(set(old) | set(new))
              if old.get(k) != new.get(k)]
  if manifest["source_fingerprint"] != corpora.source_fingerprint(data_config):
    reasons.append("the corpus files changed")
  tok = tokenizer_lib.existing_tokenizer(data_config, workdir)
  if tok is None or tokenizer_lib.tokenizer_hash(tok) != manifest["tokenizer"]["sha256"]:
    reasons.append("the tokenizer changed")
  wanted_annotator = annotator(data_config)
  if manifest["annotator"] != wanted_annotator:
    reasons.append(f"the annotator changed ({manifest['annotator']} -> {wanted_annotator})")
  # What each annotation's values mean: a change in this code that neither the config nor
  # the annotator shows.
  old_schema = manifest.get("schema", {})
  new_schema = schema(wanted_annotations(data_config), wanted_annotator)
  changed = sorted(k for k in set(old_schema) & set(new_schema)
                   if _meaning(old_schema[k]) != _meaning(new_schema[k]))
  if changed:
    reasons.append(f"the annotation schema changed ({', '.join(changed)})")
  reasons += damaged_files(manifest, storage.join(workdir, DATA_DIR))
  return reasons


def files(manifest: dict) -> list[str]:
  """Every file the manifest lists, relative to workdir/data."""
  names = [n for split in SPLITS for part in manifest["splits"][split]["parts"]
           for n in part["files"].values()]
  return names + [manifest["token_stats"]] + ([manifest["pmi"]["file"]] if manifest["pmi"]
                                              else [])


def part_sizes(manifest: dict) -> dict[str, int]:
  """{file: the bytes it must have} of every part file, relative to workdir/data."""
  seq_len = manifest["seq_len"]
  return {name: npy_bytes(part["rows"], seq_len, info["dtype"][field])
          for info in manifest["splits"].values() for part in info["parts"]
          for field, name in part["files"].items()}


def file_sizes(data_dir, names) -> dict[str, int | None]:
  """{name: its size in bytes, or None if it is missing} of files under `data_dir` (an object
  store is listed once, not asked file by file)."""
  root = os.fspath(storage.path(data_dir))
  found = {f[len(root) + 1:]: size for f, size, _ in storage.list_files(root)}
  return {name: found.get(name) for name in names}


def damaged_files(manifest: dict, data_dir) -> list[str]:
  """What is wrong with the manifest's files in `data_dir`: one line a file missing, or a part
  of another size than its rows make (cut short by a full disk or a copy, or changed)."""
  expected = part_sizes(manifest)
  names = files(manifest)
  problems = []
  for name, size in file_sizes(data_dir, names).items():
    if size is None:
      problems.append(f"{name} is missing")
    elif name in expected and size != expected[name]:
      problems.append(f"{name} has {size:,} bytes, not {expected[name]:,}")
  return problems


def _meaning(entry: dict) -> tuple:
  """A schema entry without its source (the annotator, compared on its own)."""
  return entry.get("dtype"), entry.get("values")


def schema(wanted: Sequence[str], made_by: str) -> dict:
  """What each prepared field holds, by name: dtype, values and the annotator that made it."""
  fields = {"segment_ids": {"dtype": "int32", "values": "k = k-th document of the row, "
                                                        "0 = padding"}}
  meaning = {
      annotate.ENTITY: ("int32", "k > 0 = k-th entity span of the row, 0 = none", made_by),
      annotate.PHRASE: ("int32", "k > 0 = k-th multi-word phrase of the row (no token in an "
                        "entity), 0 = none", made_by),
      annotate.POS: ("int8", "0 unknown/special/punctuation, 1 content word, 2 function word, "
                     "3 predicate, 4 core argument (3 and 4 from a dependency parse)",
                     made_by),
      annotate.NGRAM: ("int32", "k > 0 = k-th PMI n-gram of the row, 0 = none", "pmi"),
  }
  for name in wanted:
    dtype, values, source = meaning[name]
    fields[name] = {"dtype": dtype, "values": values, "source": source}
  return fields


def write(path, value: dict) -> None:
  """`value` as JSON at `path`, atomically: a reader sees the old file or the new one."""
  storage.write_json(path, value)
