"""The tokenizing workers: chunks of documents tokenized and annotated in spawned processes.

The workers import this module (and what it imports: tokenizers, the annotators) and nothing
of JAX: a worker starts in well under a second and holds only the tokenizer and, when asked
for, the spaCy pipeline (tests/data/test_workers.py checks that importing it imports no JAX).
"""

import collections
import dataclasses
import itertools
from concurrent import futures
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from absl import logging
import ml_collections
import tokenizers

from mlmjax.data import annotate
from mlmjax.data import spacy_annotator

# Documents per chunk: a worker's unit of work, and how far the reader runs ahead; each
# chunk's Encoding objects (much larger than the ids) stay small.
CHUNK_DOCS = 1024
# How often a worker checks that its parent is alive.
PARENT_POLL_S = 0.5


@dataclasses.dataclass(frozen=True)
class Job:
  """What the workers make of every chunk; each worker gets it once, pickled, at its start.

  Entities, phrases and spaCy's POS classes are found on the text, here; the vocabulary POS
  fallback and the PMI n-grams on the packed rows, in the preparing process.
  """
  annotations: tuple[str, ...]  # the annotations found on the text (`annotate` names)
  annotator: str  # "none", "rules-..." or "spacy:NAME@VERSION" (`manifest.annotator`)
  sentences: bool  # mark sentence starts (full-sentence packing)
  function_words: tuple[str, ...]  # the lowercase closed-class words the rules read

  @classmethod
  def for_data(cls, wanted: Sequence[str], annotator: str, packing: str,
               function_words: Iterable[str]) -> "Job":
    """The job for data with annotations `wanted`, made by `annotator`, packed as `packing`."""
    spacy = annotator.startswith("spacy:")
    on_text = tuple(a for a in wanted if a in (annotate.ENTITY, annotate.PHRASE)
                    or (a == annotate.POS and spacy))
    return cls(annotations=on_text, annotator=annotator,
               sentences=packing == "full_sentences",
               function_words=tuple(sorted(function_words)))


class ChunkTokenizer:
  """Tokenizes and annotates chunks of documents as `job` says: one per worker process (or
  one in this process)."""

  def __init__(self, tokenizer_json: str, job: Job):
    self.tok = tokenizers.Tokenizer.from_str(tokenizer_json)
    self.job = job
    self.function_words = frozenset(job.function_words)
    self.annotator = None
    if job.annotations and job.annotator.startswith("spacy:"):
      target = job.annotator[len("spacy:"):].rsplit("@", 1)[0]
      self.annotator = spacy_annotator.SpacyAnnotator(target, job.annotations)

  def __call__(self, texts: list[str]) -> annotate.EncodedChunk:
    return annotate.tokenize_and_annotate(
        self.tok, texts, sentences=self.job.sentences, wanted=self.job.annotations,
        annotator=self.annotator, function_words=self.function_words)


_worker_tokenizer = None  # per worker process: the tokenizer and spaCy pipeline load once


def _init_worker(tokenizer_json: str, job: Job, parent: int) -> None:
  global _worker_tokenizer
  threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
  # One process per core already: the tokenizer's own thread pool would oversubscribe.
  os.environ["TOKENIZERS_PARALLELISM"] = "false"
  _worker_tokenizer = ChunkTokenizer(tokenizer_json, job)


def _exit_with_parent(parent: int) -> None:
  """Ends this worker once its parent is gone (killed with -9, a preempted host): a worker is
  never left behind. The parent's death re-parents it, which is what is watched."""
  while os.getppid() == parent:
    time.sleep(PARENT_POLL_S)
  os._exit(1)  # pylint: disable=protected-access


def _tokenize_in_worker(texts: list[str]) -> annotate.EncodedChunk:
  return _worker_tokenizer(texts)


def num_workers(data_config: ml_collections.ConfigDict) -> int:
  """`data.num_workers`, where 0 means one per core this process may use."""
  n = data_config.num_workers
  return n if n > 0 else len(os.sched_getaffinity(0))


def _can_spawn() -> bool:
  """False where spawned workers would die at start-up: a main script read from stdin (its
  `__file__` is "<stdin>"), which the child tries to re-run, and then the pool hangs."""
  main = sys.modules["__main__"]
  path = getattr(main, "__file__", None)
  return getattr(main, "__spec__", None) is not None or path is None or os.path.exists(path)


def tokenize_chunks(tok: tokenizers.Tokenizer, chunks: Iterable[tuple[Any, list[str]]],
                    job: Job, workers: int) -> Iterator[tuple[Any, annotate.EncodedChunk]]:
  """`(key, texts)` chunks tokenized and annotated as `job` says: `(key, EncodedChunk)` in order.

  Chunks are read lazily, at most `2 * workers` ahead of the one being returned, so a corpus
  is never read much faster than it is packed.
  """
  chunks = iter(chunks)
  first = list(itertools.islice(chunks, 2))
  chunks = itertools.chain(first, chunks)
  if len(first) < 2:
    workers = 1  # one chunk: starting worker processes would cost more than it saves
  if workers > 1 and not _can_spawn():
    logging.warning("This interpreter's main module (%s) cannot be re-imported by worker "
                    "processes; tokenizing in this process.", sys.modules["__main__"])
    workers = 1
  if workers <= 1:
    # In-process: encode_batch still spreads one chunk over every core (Rust threads).
    tokenize = ChunkTokenizer(tok.to_str(), job)
    for key, texts in chunks:
      yield key, tokenize(texts)
    return
  # spawn, not fork: the caller may hold JAX's threads, which a forked child would inherit
  # in an unknown state. concurrent.futures, not multiprocessing.Pool: a worker that dies
  # (out of memory, or an interpreter that cannot spawn) raises instead of hanging.
  context = multiprocessing.get_context("spawn")
  with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(tok.to_str(), job, os.getpid())) as pool:
    pending = collections.deque()
    try:
      for key, texts in chunks:
        pending.append((key, pool.submit(_tokenize_in_worker, texts)))
        if len(pending) >= 2 * workers:
          key, future = pending.popleft()
          yield key, future.result()
      while pending:
        key, future = pending.popleft()
        yield key, future.result()
    except futures.process.BrokenProcessPool as e:
      raise RuntimeError(
          "A tokenizing worker process died (out of memory, or this interpreter cannot "
          "start workers, e.g. a script read from stdin). Set data.num_workers=1 to tokenize "
          "in this process.") from e
    finally:
      for _, future in pending:
        future.cancel()
