"""WordPiece tokenizers: train a BERT one on the corpus, or load a tokenizer.json / vocab.txt.

Every tokenizer this module returns has the BERT special tokens [PAD] [UNK] [CLS] [SEP] [MASK],
no truncation and no padding (packing decides lengths), and a `[CLS] $A [SEP]` template so
that `encode(text)` matches what Hugging Face's BERT tokenizers produce.
"""

import hashlib
import json
import os
from collections.abc import Sequence

from absl import logging
import ml_collections
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from mlmjax.data import corpora

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# Training puts them first, in this order, so [PAD] is id 0 as in BERT's vocabularies.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CACHE_DIR = "tokenizer"  # under the workdir


class TokenizerError(ValueError):
  """A tokenizer cannot be loaded or used as configured; the message names the fix."""


def special_ids(tok: tokenizers.Tokenizer) -> dict[str, int]:
  """{"[PAD]": id, ...} for the five BERT special tokens; raises if one is missing."""
  ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
  missing = [t for t, i in ids.items() if i is None]
  if missing:
    raise TokenizerError(f"The tokenizer lacks the special tokens {missing}; mlmjax needs a "
                         f"BERT-style vocabulary with {list(SPECIAL_TOKENS)}.")
  return ids


def bert_tokenizer(vocab: dict[str, int], lowercase: bool) -> tokenizers.Tokenizer:
  """The BERT WordPiece pipeline around `vocab` ({token: id}, ids 0..V-1)."""
  tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=UNK))
  return _with_bert_pipeline(tok, lowercase)


def _with_bert_pipeline(tok: tokenizers.Tokenizer, lowercase: bool) -> tokenizers.Tokenizer:
  # strip_accents=None follows `lowercase`, as in BERT's uncased/cased releases.
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix="##")
  if tok.get_vocab_size() and all(tok.token_to_id(t) is not None for t in (CLS, SEP)):
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, tok.token_to_id(CLS)), (SEP, tok.token_to_id(SEP))])
  return tok


def train_tokenizer(documents: Sequence[str], vocab_size: int,
                    lowercase: bool) -> tokenizers.Tokenizer:
  """Trains a BERT WordPiece tokenizer with `vocab_size` entries (specials included)."""
  tok = _with_bert_pipeline(tokenizers.Tokenizer(models.WordPiece(unk_token=UNK)), lowercase)
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
      continuing_subword_prefix="##")
  tok.train_from_iterator(documents, trainer=trainer, length=len(documents))
  # The template needs the ids of [CLS]/[SEP], known only after training.
  tok = _with_bert_pipeline(tok, lowercase)
  if tok.get_vocab_size() != vocab_size:
    # The trainer keeps the whole alphabet even past vocab_size, and stops early on a corpus
    # too small to fill it; the model must use the real size (manifest "vocab_size").
    logging.warning("Trained WordPiece vocabulary has %d entries (data.vocab_size=%d).",
                    tok.get_vocab_size(), vocab_size)
  return tok


def read_vocab(path: str) -> dict[str, int]:
  """A WordPiece vocab.txt: one token per line, the id is the line number (from 0)."""
  with open(path, encoding="utf-8") as f:
    tokens = f.read().split("\n")
  if tokens and tokens[-1] == "":
    tokens.pop()  # the newline ending the last line
  vocab = {}
  for i, token in enumerate(tokens):
    if not token.strip() or token in vocab:
      raise TokenizerError(f"{path}:{i + 1}: {'duplicate' if token in vocab else 'empty'} "
                           "token; a vocab.txt holds one distinct token per line.")
    vocab[token] = i
  return vocab


def _check_lowercase(tok: tokenizers.Tokenizer, path: str, lowercase: bool | None) -> None:
  normalizer = json.loads(tok.to_str()).get("normalizer") or {}
  if (lowercase is not None and normalizer.get("type") == "BertNormalizer"
      and normalizer.get("lowercase") != lowercase):
    logging.warning("%s lowercases=%s, data.lowercase=%s: a tokenizer.json keeps its own "
                    "normalizer; set data.lowercase to match it.", path,
                    normalizer.get("lowercase"), lowercase)


def load_tokenizer(path: str, lowercase: bool | None = None) -> tokenizers.Tokenizer:
  """Loads a tokenizer.json (used as saved) or a WordPiece vocab.txt (BERT pipeline).

  Args:
    path: a `*.json` tokenizer or a `*.txt` vocabulary.
    lowercase: for a vocab.txt, whether the pipeline lowercases (None: True, BERT-uncased). A
      tokenizer.json keeps its own normalizer; a `lowercase` that contradicts it is logged.
  """
  if os.path.isdir(path):
    raise TokenizerError(f"data.tokenizer_path={path!r} is a directory; name the "
                         "tokenizer.json or vocab.txt file in it.")
  if not os.path.exists(path):
    raise TokenizerError(f"data.tokenizer_path={path!r} does not exist; give a tokenizer.json "
                         "or vocab.txt, or set it to '' to train a WordPiece tokenizer.")
  try:
    if path.endswith(".json"):
      tok = tokenizers.Tokenizer.from_file(path)
      _check_lowercase(tok, path, lowercase)
    elif path.endswith(".txt"):
      tok = bert_tokenizer(read_vocab(path), True if lowercase is None else lowercase)
    else:
      raise TokenizerError(f"data.tokenizer_path={path!r}: expected a tokenizer.json or a "
                           "WordPiece vocab.txt.")
  except UnicodeDecodeError as e:
    raise TokenizerError(f"{path} is not UTF-8 text.") from e
  except TokenizerError:
    raise
  except Exception as e:  # tokenizers raises a bare Exception on a malformed file
    raise TokenizerError(f"{path} is not a valid tokenizer file: {e}") from e
  tok.no_truncation()
  tok.no_padding()
  special_ids(tok)  # fail here, not in the middle of packing
  return tok


def save_tokenizer(tok: tokenizers.Tokenizer, directory: str) -> None:
  """Writes `tokenizer.json` and, for WordPiece, `vocab.txt` (what HF BertTokenizer reads)."""
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, "tokenizer.json"))
  vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.writelines(token + "\n" for token, _ in vocab)


def tokenizer_hash(tok: tokenizers.Tokenizer) -> str:
  """sha256 of the tokenizer's canonical JSON (keys sorted, no whitespace)."""
  canonical = json.dumps(json.loads(tok.to_str()), sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
  return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _training_spec(data_config: ml_collections.ConfigDict, documents: Sequence[str]) -> dict:
  return {"vocab_size": data_config.vocab_size, "lowercase": data_config.lowercase,
          "documents_sha256": corpora.documents_hash(documents)}


def existing_tokenizer(data_config: ml_collections.ConfigDict,
                       workdir: str) -> tokenizers.Tokenizer | None:
  """The configured tokenizer file, else the workdir's trained one if any; never trains."""
  if data_config.tokenizer_path:
    return load_tokenizer(data_config.tokenizer_path, data_config.lowercase)
  path = os.path.join(workdir, CACHE_DIR, "tokenizer.json")
  return load_tokenizer(path) if os.path.exists(path) else None


def get_tokenizer(data_config: ml_collections.ConfigDict, workdir: str,
                  documents: Sequence[str] | None = None) -> tokenizers.Tokenizer:
  """Loads `data_config.tokenizer_path`, or trains WordPiece and caches it in workdir/tokenizer.

  Args:
    data_config: the `config.data` block.
    workdir: the run's directory; the trained tokenizer goes to `workdir/tokenizer/`.
    documents: the training documents to train on; by default the training split of the
      configured corpus.
  Returns:
    The tokenizer. A cached one is reused only if it was trained with the same vocab_size,
    lowercase and documents; otherwise it is retrained (and logged).
  """
  if data_config.tokenizer_path:
    return load_tokenizer(data_config.tokenizer_path, data_config.lowercase)
  if documents is None:
    documents, _ = corpora.split_documents(
        corpora.load_documents(data_config), data_config.validation_fraction,
        data_config.get("split_seed", 0))
  directory = os.path.join(workdir, CACHE_DIR)
  spec_path = os.path.join(directory, "spec.json")
  spec = _training_spec(data_config, documents)
  if os.path.exists(spec_path):
    with open(spec_path, encoding="utf-8") as f:
      cached = json.load(f)
    if cached == spec:
      return load_tokenizer(os.path.join(directory, "tokenizer.json"))
    changed = sorted(k for k in spec if cached.get(k) != spec[k])
    logging.info("Retraining the tokenizer in %s: %s changed.", directory, ", ".join(changed))
  if os.path.exists(spec_path):
    os.remove(spec_path)  # an interrupted retraining must not look like a valid cache
  tok = train_tokenizer(documents, data_config.vocab_size, data_config.lowercase)
  save_tokenizer(tok, directory)
  with open(spec_path, "w", encoding="utf-8") as f:  # last: marks the cache complete
    json.dump(spec, f, indent=2)
  logging.info("Trained a WordPiece tokenizer of %d tokens into %s.", tok.get_vocab_size(),
               directory)
  return tok
