"""Tokenizers: train a BERT WordPiece or a RoBERTa byte-level BPE one on the corpus, or load
WordPiece, SentencePiece or BPE.

`data.tokenizer_path` names the file to load, by kind:
  tokenizer.json            any Hugging Face `tokenizers` file (WordPiece, BPE, Unigram), as saved;
  vocab.txt                 a WordPiece vocabulary, wrapped in the BERT pipeline;
  *.model                   a SentencePiece (unigram) model, converted to a `tokenizers` pipeline
                            that encodes exactly as the `sentencepiece` library does;
  vocab.json (+ merges.txt) a byte-level BPE (GPT-2 / RoBERTa) vocabulary with its merges beside.
Empty, a tokenizer of `data.tokenizer_type` ("wordpiece", BERT's, or "byte_level_bpe",
RoBERTa's) is trained on the training split and cached in workdir/tokenizer.

Every tokenizer returned has no truncation and no padding (packing decides lengths) and the five
special roles packing and masking need: pad, unk, cls, sep, mask ([PAD] [UNK] [CLS] [SEP] [MASK]
for BERT; <pad> <unk> <s> </s> <mask> for RoBERTa and SentencePiece models).
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence

from absl import logging
import ml_collections
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from mlmjax import storage
from mlmjax import workdir as workdir_lib
from mlmjax.data import corpora

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# Training puts them first, in this order, so [PAD] is id 0 as in BERT's vocabularies.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CACHE_DIR = workdir_lib.TOKENIZER  # under the workdir
# Each special role and the tokens that play it, BERT's first: the first one in the vocabulary
# wins. ALBERT's SentencePiece models mix the two ([CLS] [SEP] [MASK] with <pad> <unk>).
ROLES = {"pad": (PAD, "<pad>"), "unk": (UNK, "<unk>"), "cls": (CLS, "<s>"),
         "sep": (SEP, "</s>"), "mask": (MASK, "<mask>")}
# RoBERTa's special tokens in its vocabulary's order: <pad> is id 1, as in roberta-base.
BPE_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
TOKENIZER_TYPES = ("wordpiece", "byte_level_bpe")


class TokenizerError(ValueError):
  """A tokenizer cannot be loaded or used as configured; the message names the fix."""


def special_tokens(tok: tokenizers.Tokenizer) -> dict[str, str]:
  """{role: token} for the roles pad, unk, cls, sep, mask; raises if a role has no token."""
  found = {role: next((t for t in candidates if tok.token_to_id(t) is not None), None)
           for role, candidates in ROLES.items()}
  missing = [" or ".join(ROLES[role]) for role, t in found.items() if t is None]
  if missing:
    raise TokenizerError(f"The tokenizer lacks the special tokens {missing}; mlmjax needs a "
                         "vocabulary with pad, unk, cls, sep and mask tokens (BERT: "
                         f"{list(SPECIAL_TOKENS)}).")
  return found


def special_roles(tok: tokenizers.Tokenizer) -> dict[str, int]:
  """{role: id} for the roles pad, unk, cls, sep, mask."""
  return {role: tok.token_to_id(t) for role, t in special_tokens(tok).items()}


def special_ids(tok: tokenizers.Tokenizer) -> dict[str, int]:
  """{token: id} of the five special tokens, e.g. {"[PAD]": 0, ...}; raises if one is missing."""
  return {t: tok.token_to_id(t) for t in special_tokens(tok).values()}


def bert_tokenizer(vocab: dict[str, int], lowercase: bool) -> tokenizers.Tokenizer:
  """The BERT WordPiece pipeline around `vocab` ({token: id}, ids 0..V-1)."""
  tok = _with_bert_pipeline(tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=UNK)),
                            lowercase)
  # As added tokens, "[MASK]" typed in a text is the mask token (fill-mask), as in HF's BERT.
  tok.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
  return tok


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


Documents = Sequence[str] | Callable[[], Iterable[str]]


def _iterate(documents: Documents) -> Iterable[str]:
  return documents() if callable(documents) else documents


def _train_wordpiece(documents: Documents, vocab_size: int, lowercase: bool,
                     fixed_tokens: Sequence[str]) -> dict[str, int]:
  tok = _with_bert_pipeline(tokenizers.Tokenizer(models.WordPiece(unk_token=UNK)), lowercase)
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=list(fixed_tokens), show_progress=False,
      continuing_subword_prefix="##")
  tok.train_from_iterator(_iterate(documents), trainer=trainer)
  return tok.get_vocab()


def train_tokenizer(documents: Documents, vocab_size: int,
                    lowercase: bool) -> tokenizers.Tokenizer:
  """Trains a BERT WordPiece tokenizer with `vocab_size` entries (specials included).

  `documents`: a sequence, or a function giving a fresh iterator each call (the trainer makes
  two passes; a corpus too large for memory streams). The trainer's memory grows with the
  number of distinct words, not the text: preparation hands it a bounded sample
  (`corpora.tokenizer_sample`). Deterministic: the same documents give the same tokenizer.
  The trainer alone is not (huggingface/tokenizers#1794): it numbers the "##x" continuation characters in hash-map
  order, and merges break count ties by number. So a first pass without merges finds those
  characters, and the real pass receives them up front, sorted, with fixed numbers.
  """
  alphabet = _train_wordpiece(documents, 0, lowercase, SPECIAL_TOKENS)
  continuations = sorted(t for t in alphabet if t.startswith("##") and len(t) == 3)
  vocab = _train_wordpiece(documents, vocab_size, lowercase, [*SPECIAL_TOKENS, *continuations])
  # Rebuilt from the vocabulary so that only the five BERT tokens are special.
  tok = bert_tokenizer(vocab, lowercase)
  if tok.get_vocab_size() != vocab_size:
    # The trainer keeps the whole alphabet even past vocab_size, and stops early on a corpus
    # too small to fill it; the model must use the real size (manifest "vocab_size").
    logging.warning("Trained WordPiece vocabulary has %d entries (data.vocab_size=%d).",
                    tok.get_vocab_size(), vocab_size)
  return tok


def train_byte_level_bpe(documents: Documents, vocab_size: int) -> tokenizers.Tokenizer:
  """Trains RoBERTa's tokenizer: byte-level BPE (no unknown characters, no lowercasing), words
  marked by a leading "\u0120" (a space), RoBERTa's five special tokens first.

  Deterministic: the 256 byte symbols are given to the trainer up front, so their numbering
  does not depend on the order the trainer meets them in.
  """
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(BPE_SPECIAL_TOKENS), show_progress=False,
      initial_alphabet=sorted(pre_tokenizers.ByteLevel.alphabet()))
  tok.train_from_iterator(_iterate(documents), trainer=trainer)
  # "<s> text </s>" in `tokenizer(text)` (HF's fill-mask pipeline); packing adds its own.
  tok.post_processor = processors.RobertaProcessing(
      ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
      add_prefix_space=False)
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


def _sentencepiece(path: str) -> tokenizers.Tokenizer:
  """A SentencePiece unigram `.model` as a `tokenizers` pipeline with the same ids and pieces.

  The model's own normalisation table (precompiled_charsmap) and whitespace rules are kept, so
  `encode(text).ids` equals `SentencePieceProcessor.encode(text)`.
  """
  try:
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise TokenizerError(f"Reading {path} needs the sentencepiece package: pip install "
                         "'mlmjax[sentencepiece]'.") from e
  proto = sentencepiece_model_pb2.ModelProto()
  with open(path, "rb") as f:
    try:
      proto.ParseFromString(f.read())
    except Exception as e:  # protobuf's DecodeError
      raise TokenizerError(f"{path} is not a SentencePiece model: {e}") from e
  trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
  if trainer.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM or not proto.pieces:
    raise TokenizerError(f"{path}: only unigram SentencePiece models are read directly; save "
                         "this one as a tokenizer.json (e.g. with transformers' "
                         "AutoTokenizer.save_pretrained) and point data.tokenizer_path at it.")
  tok = tokenizers.Tokenizer(models.Unigram([(p.piece, p.score) for p in proto.pieces],
                                            trainer.unk_id, trainer.byte_fallback))
  steps = []
  if normalizer.precompiled_charsmap:
    steps.append(normalizers.Precompiled(normalizer.precompiled_charsmap))
  if normalizer.remove_extra_whitespaces:
    steps += [normalizers.Strip(left=True, right=True),
              normalizers.Replace(tokenizers.Regex(" {2,}"), " ")]
  tok.normalizer = normalizers.Sequence(steps)
  scheme = "always" if normalizer.add_dummy_prefix else "never"
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)
  tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
  # CONTROL (<s>, </s>, <pad>) and USER_DEFINED ([MASK] added at training) pieces are atomic.
  kinds = (sentencepiece_model_pb2.ModelProto.SentencePiece.CONTROL,
           sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED)
  tok.add_special_tokens([p.piece for p in proto.pieces if p.type in kinds])
  return tok


def _byte_level_bpe(vocab_path: str) -> tokenizers.Tokenizer:
  """GPT-2 / RoBERTa byte-level BPE from vocab.json and the merges.txt beside it."""
  merges = os.path.join(os.path.dirname(vocab_path), "merges.txt")
  if not os.path.exists(merges):
    raise TokenizerError(f"{vocab_path} is a BPE vocabulary, but {merges} is missing; a "
                         "byte-level BPE tokenizer needs both files in one folder.")
  tok = tokenizers.Tokenizer(models.BPE.from_file(vocab_path, merges))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  vocab = tok.get_vocab()
  tok.add_special_tokens([t for ts in ROLES.values() for t in ts if t in vocab])
  return tok


def _load_json(path: str, lowercase: bool | None) -> tokenizers.Tokenizer:
  with open(path, encoding="utf-8") as f:
    content = json.load(f)
  if isinstance(content, dict) and "model" in content:
    tok = tokenizers.Tokenizer.from_file(path)
    _check_lowercase(tok, path, lowercase)
    return tok
  if isinstance(content, dict) and content and all(isinstance(v, int)
                                                   for v in content.values()):
    return _byte_level_bpe(path)
  raise TokenizerError(f"{path} is neither a tokenizer.json (with a 'model') nor a BPE "
                       "vocab.json ({token: id}).")


def _local_copy(url: str) -> str:
  """A tokenizer file on a bucket copied to this machine (with a BPE vocab.json's merges.txt)."""
  folder = storage.local_cache(os.path.dirname(url), "tokenizer")
  names = [os.path.basename(url)]
  if names[0].endswith("vocab.json"):
    names.append("merges.txt")
  for name in names:
    src = storage.join(os.path.dirname(url), name)
    if src.exists():
      storage.download(src, os.path.join(folder, name))
  return os.path.join(folder, names[0])


def load_tokenizer(path: str, lowercase: bool | None = None) -> tokenizers.Tokenizer:
  """Loads a tokenizer.json, a WordPiece vocab.txt, a SentencePiece .model or a BPE vocab.json.

  Args:
    path: the file (see the module docstring).
    lowercase: for a vocab.txt, whether the pipeline lowercases (None: True, BERT-uncased). A
      tokenizer.json keeps its own normalizer; a `lowercase` that contradicts it is logged.
      SentencePiece and BPE files keep their own normalisation.
  """
  if storage.is_url(path) and storage.path(path).is_file():
    path = _local_copy(path)
  if os.path.isdir(path) or (storage.is_url(path) and storage.path(path).is_dir()):
    raise TokenizerError(f"data.tokenizer_path={path!r} is a directory; name the "
                         "tokenizer.json, vocab.txt, .model or vocab.json file in it.")
  if storage.is_url(path) or not os.path.exists(path):
    raise TokenizerError(f"data.tokenizer_path={path!r} does not exist; give a tokenizer.json, "
                         "vocab.txt, SentencePiece .model or BPE vocab.json, or set it to '' "
                         "to train a WordPiece tokenizer.")
  try:
    if path.endswith(".json"):
      tok = _load_json(path, lowercase)
    elif path.endswith(".txt"):
      tok = bert_tokenizer(read_vocab(path), True if lowercase is None else lowercase)
    elif path.endswith(".model"):
      tok = _sentencepiece(path)
    else:
      raise TokenizerError(f"data.tokenizer_path={path!r}: expected a tokenizer.json, a "
                           "WordPiece vocab.txt, a SentencePiece .model or a BPE vocab.json.")
  except UnicodeDecodeError as e:
    raise TokenizerError(f"{path} is not UTF-8 text.") from e
  except TokenizerError:
    raise
  except Exception as e:  # tokenizers raises a bare Exception on a malformed file
    raise TokenizerError(f"{path} is not a valid tokenizer file: {e}") from e
  tok.no_truncation()
  tok.no_padding()
  special_tokens(tok)  # fail here, not in the middle of packing
  return tok


def save_tokenizer(tok: tokenizers.Tokenizer, directory: str) -> None:
  """Writes `tokenizer.json` and, for WordPiece, `vocab.txt` (what HF BertTokenizer reads);
  `directory` may be a URL."""
  storage.write_text(storage.join(directory, "tokenizer.json"), tok.to_str(pretty=True))
  vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
  storage.write_text(storage.join(directory, "vocab.txt"),
                     "".join(token + "\n" for token, _ in vocab))


def _read_saved(path) -> tokenizers.Tokenizer:
  """A tokenizer.json this module saved (local or on a bucket)."""
  tok = tokenizers.Tokenizer.from_str(storage.path(path).read_text(encoding="utf-8"))
  tok.no_truncation()
  tok.no_padding()
  return tok


def tokenizer_hash(tok: tokenizers.Tokenizer) -> str:
  """sha256 of the tokenizer's canonical JSON (keys sorted, no whitespace)."""
  canonical = json.dumps(json.loads(tok.to_str()), sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
  return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def existing_tokenizer(data_config: ml_collections.ConfigDict,
                       workdir: str) -> tokenizers.Tokenizer | None:
  """The configured tokenizer file, else the workdir's trained one if any; never trains."""
  if data_config.tokenizer_path:
    return load_tokenizer(data_config.tokenizer_path, data_config.lowercase)
  path = storage.join(workdir, CACHE_DIR, "tokenizer.json")
  return _read_saved(path) if path.exists() else None


def _spill(documents: Documents, path: str) -> str:
  """Writes the documents to the local file `path`, each as its UTF-8 length (8 bytes, little
  endian) and its UTF-8 bytes, and returns the sha256 of that file, which is
  `corpora.documents_hash(documents)`."""
  digest = hashlib.sha256()
  with open(path, "wb") as f:
    for doc in _iterate(documents):
      data = doc.encode("utf-8")
      for part in (len(data).to_bytes(8, "little"), data):
        digest.update(part)
        f.write(part)
  return digest.hexdigest()


def _read_spilled(path: str) -> Iterator[str]:
  with open(path, "rb", buffering=1 << 20) as f:
    while header := f.read(8):
      yield f.read(int.from_bytes(header, "little")).decode("utf-8")


def get_tokenizer(data_config: ml_collections.ConfigDict, workdir: str,
                  documents: Documents | None = None) -> tokenizers.Tokenizer:
  """Loads `data_config.tokenizer_path`, or trains one (`data_config.tokenizer_type`) and caches
  it in workdir/tokenizer.

  Args:
    data_config: the `config.data` block.
    workdir: the run's directory; the trained tokenizer goes to `workdir/tokenizer/`.
    documents: the documents to train on, a sequence or a function giving a fresh iterator.
      Given (as `prepare` does), a cached tokenizer is reused only if it was trained on
      exactly these. None (after `prepare`, at inference) reuses a cached tokenizer of the
      same vocab_size and lowercase without reading the corpus, and otherwise trains on the
      configured corpus' sample (`corpora.tokenizer_sample`).
  Returns:
    The tokenizer; when the cache does not fit, it is retrained and the reason logged.
  """
  if data_config.tokenizer_path:
    return load_tokenizer(data_config.tokenizer_path, data_config.lowercase)
  directory = storage.join(workdir, CACHE_DIR)
  spec_path = directory / "spec.json"
  kind = data_config.tokenizer_type
  if kind not in TOKENIZER_TYPES:
    raise TokenizerError(f"data.tokenizer_type must be one of {TOKENIZER_TYPES}, got {kind!r}")
  wanted = {"vocab_size": data_config.vocab_size, "lowercase": data_config.lowercase}
  if kind != "wordpiece":  # a WordPiece cache from before the key existed stays valid
    wanted = {"vocab_size": data_config.vocab_size, "type": kind}
  cached = storage.read_json(spec_path)
  if documents is None and cached is not None and all(cached.get(k) == v
                                                       for k, v in wanted.items()):
    return _read_saved(directory / "tokenizer.json")
  with tempfile.TemporaryDirectory(prefix="mlmjax_tokenizer_") as tmp:
    # One pass over the corpus (the slow part: reading and splitting it) hashes the documents
    # and spills them to the local disk; the trainer's two passes read them back from there.
    if documents is None:
      documents = corpora.tokenizer_sample(data_config)
    sample = os.path.join(tmp, "documents.bin")
    wanted["documents_sha256"] = _spill(documents, sample)
    if cached is not None:
      changed = sorted(k for k, v in wanted.items() if cached.get(k) != v)
      if not changed:
        return _read_saved(directory / "tokenizer.json")
      logging.info("Retraining the tokenizer in %s: %s changed.", directory, ", ".join(changed))
      spec_path.unlink()  # an interrupted retraining must not look like a valid cache
    if kind == "wordpiece":
      tok = train_tokenizer(lambda: _read_spilled(sample), data_config.vocab_size,
                            data_config.lowercase)
    else:
      tok = train_byte_level_bpe(lambda: _read_spilled(sample), data_config.vocab_size)
  save_tokenizer(tok, os.fspath(directory))
  storage.write_json(spec_path, wanted)  # last: marks the cache complete
  logging.info("Trained a %s tokenizer of %d tokens into %s.", kind, tok.get_vocab_size(),
               directory)
  return tok
