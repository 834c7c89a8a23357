"""Tests of mlmjax.data.sources and corpora: the embedded corpus, files read whole and in byte
ranges, their errors, sampling, memory, the hash split, the fingerprint."""

import codecs
import inspect
import json
import math
import random
import sys
import tracemalloc

from pydoc_data import topics
import pytest

from mlmjax.data import corpora, sources


@pytest.fixture(scope="module")
def embedded():
  return sources.embedded_documents()


def test_embedded_corpus_is_substantial_and_clean(embedded):
  assert len(embedded) > 2000
  assert sum(map(len, embedded)) > 1_000_000
  assert len(set(embedded)) == len(embedded)
  assert min(map(len, embedded)) >= sources.MIN_EMBEDDED_CHARS
  assert all(d == sources.clean_text(d) for d in embedded)
  # Both parts are there: a pydoc topic and a standard-library docstring.
  assert sources.clean_text(topics.topics["if"]) in embedded
  assert inspect.cleandoc(json.dumps.__doc__) in embedded


def test_embedded_corpus_is_deterministic(embedded):
  sources._embedded_documents.cache_clear()
  # A fresh child process, with its own random hash seed, collects the docstrings again.
  assert sources.embedded_documents() == embedded


def test_embedded_corpus_imports_nothing_here(embedded):
  del embedded
  # The standard library is imported in a child process; this one stays clean.
  assert "antigravity" not in sys.modules
  assert "imaplib" not in sys.modules


def test_embedded_corpus_is_one_shard(embedded, data_config):
  config = data_config()
  shards = sources.list_shards(config)
  assert shards == [sources.Shard(0, (sources.Piece("embedded", 0, len(embedded)),))]
  assert list(sources.read_shard(config, shards[0])) == embedded
  assert corpora.load_documents(config) == embedded
  # A fraction reads a prefix of the piece: here, of its documents.
  assert list(sources.read_shard(config, shards[0], 0.1)) == embedded[:math.ceil(
      0.1 * len(embedded))]
  # The embedded corpus is read whole for the tokenizer (it is far below the sample size).
  sample = corpora.tokenizer_sample(config)
  assert list(sample()) == corpora.load_splits(config)[0]


# --------------------------------------------------------------------------- files, whole


def test_txt_and_jsonl_files(tmp_path, data_config):
  (tmp_path / "sub").mkdir()
  txt = tmp_path / "sub" / "notes.txt"
  txt.write_bytes(b"\xef\xbb\xbf  First doc,\r\nline two.  \r\n\r\n \t \n\n\nSecond doc.\n\n")
  rows = [{"text": "Alpha\u2028beta"}, {"text": "   "}, {"text": "Gamma", "other": 1}]
  jsonl = tmp_path / "rows.jsonl"
  jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n",
                   encoding="utf-8")
  # A UTF-8 byte-order mark is not text. Two globs match notes.txt; it is read once.
  config = data_config(source="files",
                       paths=f"{tmp_path}/**/*.txt, {jsonl}, {tmp_path}/sub/notes.txt")
  docs = corpora.load_documents(config)
  assert docs == ["First doc,\nline two.", "Second doc.", "Alpha\u2028beta", "Gamma"]
  shards = sources.list_shards(config)  # two small files: one shard, each file one piece
  assert shards == [sources.Shard(0, (sources.Piece(str(txt), 0, txt.stat().st_size),
                                      sources.Piece(str(jsonl), 0, jsonl.stat().st_size)))]


def test_jsonl_text_field(tmp_path, data_config, write_jsonl):
  path = write_jsonl(tmp_path / "c.jsonl", ["one two", "three"], field="body")
  assert corpora.load_documents(
      data_config(source="files", paths=path, text_field="body")) == ["one two", "three"]


@pytest.mark.parametrize("content, message", [
    (b"", "bad.txt holds no document"),
    (b" \n\n\t\n", "bad.txt holds no document"),
    (b"text\0\x01\x02 more", "bad.txt looks binary"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "looks binary"),  # NUL said before the bad UTF-8
    (b"good line\nbad \xff byte\n", r"bad.txt:2: invalid UTF-8 at byte 14; re-encode"),
    (b"\xef\xbb\xbfok\r\n\r\n\xe2\x80\n", r"bad.txt:3: invalid UTF-8 at byte 9;"),
])
def test_bad_txt_files(tmp_path, data_config, content, message):
  path = tmp_path / "bad.txt"
  path.write_bytes(content)
  with pytest.raises(sources.CorpusError, match=message):
    corpora.load_documents(data_config(source="files", paths=str(path)))


@pytest.mark.parametrize("lines, message", [
    (['{"text": "fine"}', '{"text": "broken'], r"bad.jsonl:2: not valid JSON"),
    (['{"text": "fine"}', '', '{"body": "x"}'], r"bad.jsonl:3: no field 'text'"),
    (['["text"]'], r"bad.jsonl:1: no field 'text'"),
    (['{"text": 3}'], r"bad.jsonl:1: field 'text' is int"),
    (['{"text": ""}', '  '], r"bad.jsonl holds no document"),
])
def test_bad_jsonl_files(tmp_path, data_config, lines, message):
  path = tmp_path / "bad.jsonl"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  with pytest.raises(sources.CorpusError, match=message):
    corpora.load_documents(data_config(source="files", paths=str(path)))


def test_errors_in_a_later_piece_name_the_byte(tmp_path, data_config):
  """Past a file's first piece the line number is not known: the byte offset is named."""
  good = "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(20)).encode()
  jsonl = tmp_path / "late.jsonl"
  jsonl.write_bytes(good + b'{"body": 1}\n')
  config = data_config(source="files", paths=str(jsonl), shard_bytes=100)
  assert len(sources.list_shards(config)) > 2
  with pytest.raises(sources.CorpusError, match=rf"late.jsonl at byte {len(good)}: no field"):
    corpora.load_documents(config)
  config.shard_bytes = 1 << 20  # read whole: the line
  with pytest.raises(sources.CorpusError, match=r"late.jsonl:21: no field 'text'"):
    corpora.load_documents(config)
  txt = tmp_path / "late.txt"
  txt.write_bytes(b"A document.\n\n" * 20 + b"bad \xff\n")
  config = data_config(source="files", paths=str(txt), shard_bytes=100)
  with pytest.raises(sources.CorpusError, match=r"late.txt: invalid UTF-8 at byte 264;"):
    corpora.load_documents(config)


def test_bad_sources(tmp_path, data_config, write_txt):
  good = write_txt(tmp_path / "good.txt", ["a doc", "another"])
  (tmp_path / "data.csv").write_text("a,b\n")
  cases = [
      (data_config(source="web"), "Unknown data.source 'web'"),
      (data_config(source="files", paths=""), "needs data.paths"),
      (data_config(source="files", paths=f"{good},{tmp_path}/missing*.txt"),
       "missing\\*.txt' matches no file"),
      (data_config(source="files", paths=f"{tmp_path}/*.csv"), "unsupported file type"),
      (data_config(source="files", paths=good, shard_bytes=0), "data.shard_bytes=0"),
  ]
  for config, message in cases:
    with pytest.raises(sources.CorpusError, match=message):
      corpora.load_documents(config)
  assert issubclass(sources.CorpusError, ValueError)
  with pytest.raises(ValueError, match="fraction"):
    next(sources.read_shard(data_config(source="files", paths=good),
                            sources.list_shards(data_config(source="files", paths=good))[0], 0))


# ------------------------------------------------------------------- files, in byte ranges


def _reference_txt(raw: bytes) -> list[str]:
  """The documents of a .txt file as the eager reader gave them: clean all, split blocks."""
  text = raw.removeprefix(codecs.BOM_UTF8).decode("utf-8")
  docs, block = [], []
  for line in sources.clean_text(text).split("\n") + [""]:
    if line.strip():
      block.append(line)
    elif block:
      docs.append(sources.clean_text("\n".join(block)))
      block = []
  return docs


# Blank-line runs, CRLF, lone CR (one and two in a row), trailing spaces, a blank line of
# spaces and of U+3000, a form feed and U+2028 inside a line (text), multi-byte characters.
TRICKY_TXT = ("\ufeff  Leading spaces, a BOM before.\r\nSecond line  \r\n\r\n\r\n"
              "Lone CR one\rlone CR two\r\rAfter two CRs.\n \t \n\u3000\n"
              "Form\x0cfeed and \u2028 separator, déjà vu.\n\n\n\n"
              "Ünïcödé straddles — every cut.\nStill it.\n\r\n"
              "x\n\ny\n\n  \n"
              "Last document, no newline at the end.").encode("utf-8")


def _documents(config) -> list[str]:
  return [doc for shard in sources.list_shards(config) for doc in sources.read_shard(config, shard)]


def test_txt_in_byte_ranges_gives_the_whole_files_documents(tmp_path, data_config):
  path = tmp_path / "tricky.txt"
  path.write_bytes(TRICKY_TXT)
  want = _reference_txt(TRICKY_TXT)
  assert len(want) == 8
  config = data_config(source="files", paths=str(path))
  assert _documents(config) == want
  for shard_bytes in [1, 2, 3, 5, 7, 11, 16, 50, 100]:
    config.shard_bytes = shard_bytes
    shards = sources.list_shards(config)
    # Every shard is one byte range here; together they cover the file once, in order.
    pieces = [p for s in shards for p in s.pieces]
    assert [(p.start, p.stop) for p in pieces][0][0] == 0 and pieces[-1].stop == len(TRICKY_TXT)
    assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))
    assert all(p.stop - p.start <= shard_bytes for p in pieces)
    assert _documents(config) == want, shard_bytes
  # Every cut point: at a document's first byte, on a newline, between "\r" and "\n", inside
  # a multi-byte character. A document belongs to the piece in which its first line starts.
  starts, pos = [], 0
  for doc in want:
    text_start = TRICKY_TXT.index(doc.split("\n")[0].encode(), pos)
    pos = text_start + 1
    starts.append(max(TRICKY_TXT.rfind(b"\n", 0, text_start),
                      TRICKY_TXT.rfind(b"\r", 0, text_start)) + 1)
  assert starts[0] == 0 and TRICKY_TXT[starts[-1]:].startswith(b"Last")
  for cut in range(len(TRICKY_TXT) + 1):
    head = sources.Shard(0, (sources.Piece(str(path), 0, cut),))
    tail = sources.Shard(1, (sources.Piece(str(path), cut, len(TRICKY_TXT)),))
    first = list(sources.read_shard(config, head))
    assert first == [d for d, s in zip(want, starts) if s < cut], cut
    assert first + list(sources.read_shard(config, tail)) == want, cut


def test_txt_in_byte_ranges_random_files(tmp_path, data_config):
  """Random files of the tricky atoms, cut at random sizes, against the eager reader."""
  atoms = ["a", "bc", " ", "\t", "\n", "\n", "\n\n", "\r\n", "\r", "\u3000", "é", "\u2028",
           "x y", "\x0c", "\ufeff"]
  rng = random.Random(0)
  path = tmp_path / "random.txt"
  for trial in range(200):
    text = ("\ufeff" if trial % 3 == 0 else "") + "".join(
        rng.choice(atoms) for _ in range(rng.randint(1, 80)))
    raw = text.encode("utf-8")
    path.write_bytes(raw)
    want = _reference_txt(raw)
    for shard_bytes in (rng.randint(1, 10), rng.randint(10, 40), 1 << 20):
      config = data_config(source="files", paths=str(path), shard_bytes=shard_bytes)
      if want or shard_bytes >= len(raw):
        try:
          got = _documents(config)
        except sources.CorpusError as e:
          assert not want and "holds no document" in str(e)
          continue
      else:  # a blank file in pieces: none of them is the whole file, nothing to say
        got = _documents(config)
      assert got == want, (text, shard_bytes)


def test_jsonl_in_byte_ranges(tmp_path, data_config):
  rows = ["first", "", "déjà vu\r\nwith CRLF inside", "   ", "U+2028 \u2028 inside", "x",
          "a longer row " * 5, "last"]
  lines = [json.dumps({"text": t, "n": i}, ensure_ascii=i % 2 == 0) for i, t in enumerate(rows)]
  raw = ("\ufeff" + "\r\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:])).encode("utf-8")
  path = tmp_path / "rows.jsonl"
  path.write_bytes(raw)
  want = [sources.clean_text(t) for t in rows if t.strip()]
  config = data_config(source="files", paths=str(path))
  assert _documents(config) == want
  for shard_bytes in [1, 3, 10, 33, 100]:
    config.shard_bytes = shard_bytes
    assert _documents(config) == want, shard_bytes
  for cut in range(1, len(raw) + 1):
    head = sources.Shard(0, (sources.Piece(str(path), 0, cut),))
    tail = sources.Shard(1, (sources.Piece(str(path), cut, len(raw)),))
    assert list(sources.read_shard(config, head)) + list(
        sources.read_shard(config, tail)) == want, cut


def test_files_are_packed_into_shards(tmp_path, data_config, write_txt, make_documents):
  paths = [write_txt(tmp_path / f"{i}.txt", make_documents(3, seed=i)) for i in range(6)]
  sizes = [(tmp_path / f"{i}.txt").stat().st_size for i in range(6)]
  big = write_txt(tmp_path / "9_big.txt", make_documents(200, seed=9))
  big_size = (tmp_path / "9_big.txt").stat().st_size
  shard_bytes = max(sizes) * 2 + 1
  config = data_config(source="files", paths=f"{tmp_path}/*.txt", shard_bytes=shard_bytes)
  shards = sources.list_shards(config)
  assert shards == sources.list_shards(config)  # deterministic
  assert [s.index for s in shards] == list(range(len(shards)))
  pieces = [p for s in shards for p in s.pieces]
  # The small files whole, in order; the big one in byte ranges of about shard_bytes.
  assert [p.path for p in pieces[:6]] == paths
  assert [(p.start, p.stop) for p in pieces[:6]] == [(0, s) for s in sizes]
  big_pieces = pieces[6:]
  assert {p.path for p in big_pieces} == {big}
  assert len(big_pieces) == -(-big_size // shard_bytes)
  assert big_pieces[0].start == 0 and big_pieces[-1].stop == big_size
  for shard in shards:  # small files share a shard, up to shard_bytes
    assert len(shard.pieces) == 1 or sum(p.stop - p.start for p in shard.pieces) <= shard_bytes
  assert any(len(s.pieces) > 1 for s in shards)
  assert all(s.split is None for s in shards)
  expected = [d for i in range(6) for d in make_documents(3, seed=i)] + make_documents(200, 9)
  assert _documents(config) == expected
  assert sources.text_bytes(config, shards) == sum(sizes) + big_size


def test_fraction_reads_a_prefix_of_each_piece(tmp_path, data_config):
  # 100 documents of 20 bytes, 22 bytes apart: document i starts at byte 22 * i.
  docs = [f"Document number {i:04d}" for i in range(100)]
  assert {len(d) for d in docs} == {20}
  path = tmp_path / "even.txt"
  path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
  config = data_config(source="files", paths=str(path), shard_bytes=500)
  shards = sources.list_shards(config)
  assert len(shards) == 5
  for fraction in (0.01, 0.25, 0.5, 0.999):
    got = [d for s in shards for d in sources.read_shard(config, s, fraction)]
    expected = []
    for piece in (s.pieces[0] for s in shards):
      limit = piece.start + math.ceil(fraction * (piece.stop - piece.start))
      expected += [d for i, d in enumerate(docs) if piece.start <= 22 * i < limit]
    assert got == expected, fraction
    assert 0.7 * fraction * 100 <= len(got) <= fraction * 100 + len(shards)
  assert [d for s in shards for d in sources.read_shard(config, s, 1.0)] == docs


def test_reading_holds_a_bounded_amount_of_text(tmp_path, data_config, make_documents):
  """The peak memory while reading a 20 MB file stays under 4 MB: a block and a few lines."""
  block = ("\n\n".join(make_documents(2000, seed=3)) + "\n\n").encode("utf-8")
  path = tmp_path / "big.txt"
  with open(path, "wb") as f:
    while f.tell() < 20 << 20:
      f.write(block)
  config = data_config(source="files", paths=str(path))
  [shard] = sources.list_shards(config)
  assert len(shard.pieces) == 1 and shard.pieces[0].stop >= 20 << 20
  tracemalloc.start()
  try:
    count = chars = 0
    for doc in sources.read_shard(config, shard):
      count += 1
      chars += len(doc)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert count == 2000 * -(-(20 << 20) // len(block)) and chars > 15_000_000
  assert peak < 4 << 20, peak


# ------------------------------------------------------------------------------- the split


def test_split_is_a_hash_of_each_document(make_documents):
  docs = list(dict.fromkeys(make_documents(2000, seed=11)))  # distinct texts
  train, validation = corpora.split_documents(docs, 0.1, seed=3)
  assert (train, validation) == corpora.split_documents(docs, 0.1, seed=3)
  assert sorted(train + validation) == sorted(docs)
  assert validation == [d for d in docs if d in set(validation)]  # corpus order kept
  assert validation == [d for d in docs if corpora.is_validation(d, 3, 0.1)]
  # About the fraction: 10% of ~2000, within 3 standard deviations (~ +-40).
  assert abs(len(validation) - 0.1 * len(docs)) < 45, len(validation)
  # Another seed holds out other documents; a larger fraction holds out a superset.
  assert corpora.split_documents(docs, 0.1, seed=4)[1] != validation
  assert set(validation) <= set(corpora.split_documents(docs, 0.3, seed=3)[1])
  # The order of the documents does not change which are held out.
  assert set(corpora.split_documents(docs[::-1], 0.1, seed=3)[1]) == set(validation)
  # Copies of one document land in the same split.
  dup_train, dup_validation = corpora.split_documents(docs + docs[:500], 0.1, seed=3)
  assert not set(dup_train) & set(dup_validation)
  # The stated hash: BLAKE2b, 8 bytes, key str(seed), big-endian, over 2**64.
  import hashlib  # pylint: disable=g-import-not-at-top
  h = int.from_bytes(hashlib.blake2b(docs[0].encode(), digest_size=8, key=b"3").digest(), "big")
  assert corpora.is_validation(docs[0], 3, 0.1) == (h / 2**64 < 0.1)


def test_split_edge_cases(make_documents):
  docs = make_documents(50)
  with pytest.raises(sources.CorpusError, match=r"validation split is empty.*"
                                                r"data.validation_fraction=0.0"):
    corpora.split_documents(docs, 0.0, seed=0)
  with pytest.raises(sources.CorpusError, match="validation split is empty"):
    corpora.split_documents(["only one"], 0.5, seed=next(
        s for s in range(100) if not corpora.is_validation("only one", s, 0.5)))
  with pytest.raises(sources.CorpusError, match=r"training split is empty.*validation_fraction"):
    corpora.split_documents(docs[:2], 0.999999, seed=0)
  for fraction in (1.0, -0.1):
    with pytest.raises(sources.CorpusError, match="validation_fraction"):
      corpora.split_documents(docs, fraction, seed=0)


def test_load_splits_and_sharding(tmp_path, data_config, write_txt, make_documents):
  docs = make_documents(300, seed=4)
  path = write_txt(tmp_path / "c.txt", docs)
  config = data_config(source="files", paths=path)
  train, validation = corpora.load_splits(config)
  assert (train, validation) == corpora.split_documents(docs, 0.1, config.split_seed)
  # Sharding does not change the split.
  config.shard_bytes = 256
  shards = sources.list_shards(config)
  assert len(shards) > 10
  pairs = [pair for shard in shards for pair in corpora.documents_by_split(config, shard)]
  assert [t for s, t in pairs if s == "train"] == train
  assert [t for s, t in pairs if s == "validation"] == validation
  assert corpora.load_splits(config) == (train, validation)
  config.validation_fraction = 0.0
  with pytest.raises(sources.CorpusError, match="data.validation_fraction"):
    corpora.load_splits(config)
  config.validation_fraction = 1.5
  with pytest.raises(sources.CorpusError, match="must be in"):
    next(corpora.documents_by_split(config, shards[0]))


def test_tokenizer_sample(tmp_path, data_config, write_txt, make_documents):
  docs = make_documents(400, seed=6)
  path = write_txt(tmp_path / "c.txt", docs)
  config = data_config(source="files", paths=path, shard_bytes=2000)
  train, _ = corpora.load_splits(config)
  sample = corpora.tokenizer_sample(config)
  assert list(sample()) == train and list(sample()) == train  # small: read whole, re-iterable
  size = (tmp_path / "c.txt").stat().st_size
  config.tokenizer_sample_bytes = size // 4
  sample = corpora.tokenizer_sample(config)
  part = list(sample())
  assert part == list(sample())
  assert set(part) <= set(train) and part == [d for d in train if d in set(part)]
  assert 0.7 * len(train) / 4 <= len(part) <= 1.3 * len(train) / 4 + len(
      sources.list_shards(config))
  config.tokenizer_sample_bytes = 0
  with pytest.raises(sources.CorpusError, match="tokenizer_sample_bytes"):
    corpora.tokenizer_sample(config)


# ------------------------------------------------------------------ fingerprint and hash


def test_source_fingerprint_follows_the_files(tmp_path, data_config, write_txt, make_documents):
  path = write_txt(tmp_path / "c.txt", make_documents(10))
  config = data_config(source="files", paths=f"{tmp_path}/*.txt")
  fingerprint = corpora.source_fingerprint(config)
  assert fingerprint["source"] == "files"
  [[name, size, _]] = fingerprint["files"]
  assert name == path and size == (tmp_path / "c.txt").stat().st_size
  assert json.loads(json.dumps(fingerprint)) == corpora.source_fingerprint(config)
  write_txt(tmp_path / "c.txt", make_documents(11))
  assert corpora.source_fingerprint(config) != fingerprint
  embedded = data_config()
  assert corpora.source_fingerprint(embedded) == corpora.source_fingerprint(embedded)
  assert corpora.source_fingerprint(embedded)["version"] == sources.EMBEDDED_VERSION


def test_documents_hash(make_documents):
  docs = make_documents(20)
  assert corpora.documents_hash(docs) == corpora.documents_hash(iter(docs))
  assert corpora.documents_hash(docs) != corpora.documents_hash(docs[:-1])
  # Boundaries count: "ab" + "c" is not "a" + "bc".
  assert corpora.documents_hash(["ab", "c"]) != corpora.documents_hash(["a", "bc"])
