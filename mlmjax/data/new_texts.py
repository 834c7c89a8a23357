"""New texts as rows like the prepared ones, annotated as the prepared data was.

For text that was not in the corpus (the mask demo, `mlmjax-mask`, shows masks on a user's
sentences with it): the same tokenizer, the same annotator (rules or the spaCy pipeline), the
same vocabulary POS fallback and the same PMI n-gram vocabulary, so a training document run
through `to_rows` gets exactly the annotations its prepared row has.
"""

from collections.abc import Sequence

import numpy as np
import tokenizers

from mlmjax.data import annotate
from mlmjax.data import packing
from mlmjax.data import pmi
from mlmjax.data import token_tables
from mlmjax.data import tokenizer as tokenizer_lib
from mlmjax.data import workers
from mlmjax.masking import tables


def to_rows(tok: tokenizers.Tokenizer, texts: Sequence[str],
            manifest: dict) -> dict[str, np.ndarray]:
  """New texts as the prepared data's rows: one text a row, every annotation made as there.

  Args:
    tok: the tokenizer the data was prepared with.
    texts: N texts, each to fit one row.
    manifest: the prepared data's manifest (`prepare.prepare` or `manifest.read`).
  Returns:
    {"input_ids", "segment_ids", annotation: [N, S]}, S the longest text's tokens + 2, each
    row "[CLS] text [SEP]" then padding, with the manifest's annotations.
  """
  wanted = tuple(manifest["annotations"])
  job = workers.Job.for_data(wanted, manifest["annotator"], "per_document",
                             tables.DEFAULT_FUNCTION_WORDS)
  chunk, _ = annotate.without_empty_documents(
      workers.ChunkTokenizer(tok.to_str(), job)(list(texts)))
  if len(chunk.lengths) != len(texts):
    raise ValueError("a text encodes to no token at all; give text with words in it")
  roles = tokenizer_lib.special_roles(tok)
  packer = packing.Packer(int(chunk.lengths.max()) + 2, "per_document", roles["cls"],
                          roles["sep"], roles["pad"], job.annotations)
  packed = [packer.add(chunk), packer.finish()]
  rows = {k: np.concatenate([p[k] for p in packed if k in p]) for k in packed[0]}
  classes = token_tables.from_tokenizer(tok)
  if annotate.POS in wanted:
    rows[annotate.POS] = annotate.row_pos_classes(rows, classes)
  if annotate.NGRAM in wanted:
    rows[annotate.NGRAM] = pmi.match(rows["input_ids"], rows["segment_ids"],
                                     classes["word_start"], classes["barrier"],
                                     pmi.load_vocab(manifest["data_dir"]))
  return rows
