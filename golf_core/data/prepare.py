"""Turn a text corpus into a shard dataset: tokenizer, train/val shards and ``manifest.json``.

Input formats (chosen by file name):

* ``.jsonl`` / ``.jsonl.gz``: one JSON object per line with a string ``text`` field (FineWeb's
  ``docs_selected.jsonl`` layout); blank lines are skipped.
* ``.txt`` / ``.txt.gz``: documents are blocks of lines separated by one or more blank lines; a
  document keeps its inner newlines.

The layout follows the challenge's exporter: the first ``val_docs`` documents are validation, the
rest train; each document is ``[BOS] + sp.encode(text)`` without EOS; documents run across shard
boundaries. The tokenizer is either copied or trained (SentencePiece BPE with the challenge's
settings) on the train documents only. Everything is built in a temp directory beside ``out_dir``
and renamed into place, so a dataset directory is always complete or absent.

With ``caseops=True`` (PR #1729's lossless case transform, ``plugins/caseops``) every document is
transformed before it is tokenized (and before a tokenizer is trained on it), and the validation
split gets a per-token byte sidecar, ``fineweb_val_bytes_NNNNNN.bin``: one uint16 per validation
token, in the shard format and with the same shard boundaries, holding the UTF-8 bytes that token
stands for in the original text (BOS 0, case operators 0), so bits per byte are counted on the
original text. As in PR #1855's ``prepare_caseops_data.py``, train shards get no sidecar. Each
validation document's sidecar total is checked against its UTF-8 size while it is written.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from golf_core.data.bytes import load_tokenizer
from golf_core.data.shards import BOS_ID, atomic_write_bytes, write_shard
from golf_core.errors import GolfError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "golf-shards-v1"
TOKENIZER_NAME = "tokenizer.model"
ENCODE_BATCH_DOCS = 1024
CASEOPS_TRANSFORM = "caseops_v1"  # the manifest's "text_transform" for a CaseOps dataset
BYTE_SIDECAR_SPLIT = "val_bytes"  # shard names fineweb_val_bytes_NNNNNN.bin, what find_byte_sidecars globs
MAX_TOKEN_BYTES = 2**16 - 1  # a sidecar entry is a uint16

# The official tokenizers' SentencePiece settings (openai/parameter-golf data/download_hf_docs_and_tokenize.py),
# except hard_vocab_limit, which stays on so the vocabulary is exactly the size asked for.
SP_TRAINER_SETTINGS: dict[str, Any] = {
    "model_type": "bpe",
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "character_coverage": 0.999,
}

PathLike = str | os.PathLike[str]
Log = Callable[[str], None]

_SUFFIXES = (".jsonl", ".jsonl.gz", ".txt", ".txt.gz")


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_documents(path: PathLike, *, max_docs: int | None = None) -> Iterator[str]:
    """Yield the documents of a ``.jsonl[.gz]`` or ``.txt[.gz]`` corpus in file order."""
    path = Path(path)
    if not path.is_file():
        raise GolfError(f"input not found: {path}; pass an existing .jsonl, .jsonl.gz or .txt file")
    if not path.name.endswith(_SUFFIXES):
        raise GolfError(f"{path}: unsupported input format; use .jsonl or .jsonl.gz (a \"text\" field per line) or .txt")
    docs = _iter_jsonl(path) if ".jsonl" in path.name else _iter_txt(path)
    if max_docs is not None:
        docs = itertools.islice(docs, max_docs)
    try:
        yield from docs
    except UnicodeDecodeError as err:
        raise GolfError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); convert the file to UTF-8") from None
    except (gzip.BadGzipFile, EOFError) as err:
        raise GolfError(f"{path}: broken gzip file ({err}); re-download or re-compress it") from None


def _iter_jsonl(path: Path) -> Iterator[str]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise GolfError(
                    f"{path}:{lineno}: not valid JSON ({err.msg}); each line must be one JSON object with a \"text\" field"
                ) from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise GolfError(f"{path}:{lineno}: no string \"text\" field; each line must be a JSON object like {{\"text\": \"...\"}}")
            yield text


def _iter_txt(path: Path) -> Iterator[str]:
    with _open_text(path) as f:
        block: list[str] = []
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                block.append(line)
            elif block:
                yield "\n".join(block)
                block = []
        if block:
            yield "\n".join(block)


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _ShardWriter:
    """Packs documents into fixed-size shards of one split, recording each shard for the manifest."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int) -> None:
        self.out_dir = out_dir
        self.split = split
        self.buf = np.empty(shard_tokens, dtype=np.uint16)
        self.fill = 0
        self.shards: list[dict[str, Any]] = []
        self.tokens = 0
        self.documents = 0

    def add(self, tokens: np.ndarray, documents: int) -> None:
        self.documents += documents
        self.tokens += int(tokens.size)
        pos = 0
        while pos < tokens.size:
            k = min(self.buf.size - self.fill, tokens.size - pos)
            self.buf[self.fill : self.fill + k] = tokens[pos : pos + k]
            self.fill += k
            pos += k
            if self.fill == self.buf.size:
                self.flush()

    def flush(self) -> None:
        if self.fill == 0:
            return
        name = f"fineweb_{self.split}_{len(self.shards):06d}.bin"
        path = self.out_dir / name
        write_shard(path, self.buf[: self.fill])
        self.shards.append({"name": name, "tokens": self.fill, "sha256": file_sha256(path)})
        self.fill = 0

    def summary(self) -> dict[str, Any]:
        return {"documents": self.documents, "tokens": self.tokens, "shards": self.shards}


def _encode_docs(sp: spm.SentencePieceProcessor, texts: list[str]) -> np.ndarray:
    """``[BOS] + ids`` for each text, concatenated, as uint16."""
    encoded = sp.encode(texts, out_type=int)
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.uint16, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.insert(flat, starts, np.uint16(BOS_ID))


def _caseops_module():
    # The transform lives with its technique; imported only when asked for, so plain datasets do
    # not depend on the plugins package.
    from plugins.caseops import transform

    return transform


def check_caseops_tokenizer(sp: spm.SentencePieceProcessor, where: object) -> None:
    """Raise :class:`GolfError` unless each CaseOps operator is one piece of ``sp`` (not byte fallback)."""
    caseops = _caseops_module()
    for op in caseops.OPERATORS:
        ids = sp.encode(op, out_type=int)
        if len(ids) != 1 or sp.id_to_piece(ids[0]) != op:
            raise GolfError(
                f"tokenizer {where} has no piece for the CaseOps operator U+{ord(op):04X}; CaseOps needs a tokenizer with "
                "the operator pieces: fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model, or one trained by "
                "`golf data prepare --caseops --vocab-size N`"
            )


def _pieces_with_surfaces(sp: spm.SentencePieceProcessor, texts: list[str]) -> Iterator[tuple[list[int], list[str], int]]:
    """For each text: token ids, each token's surface (its exact span of ``text``), and the UTF-8
    bytes at the text's edges that no token covers (whitespace the normalizer strips)."""
    if hasattr(sp, "encode_as_immutable_proto"):  # sentencepiece 0.2.0 (its Python begin/end count characters)
        encoded = (
            ([p.id for p in proto.pieces], [p.surface for p in proto.pieces], [(p.begin, p.end) for p in proto.pieces])
            for proto in sp.encode(texts, out_type="immutable_proto")
        )
    else:  # sentencepiece >= 0.2.1 dropped the immutable proto; offset_mapping gives the same spans
        encoded = (
            (list(enc["ids"]), [text[b:e] for b, e in enc["offsets"]], enc["offsets"])
            for text, enc in zip(texts, sp.encode(texts, return_type="offset_mapping"))
        )
    for text, (ids, surfaces, spans) in zip(texts, encoded):
        begin, end = (spans[0][0], spans[-1][1]) if spans else (len(text), len(text))
        yield ids, surfaces, len(text[:begin].encode("utf-8")) + len(text[end:].encode("utf-8"))


def _encode_caseops_val(
    sp: spm.SentencePieceProcessor, texts: list[str], first_doc: int, source: Path
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """CaseOps validation documents: ``[BOS] + ids`` concatenated, the parallel byte sidecar
    (``[0] + original bytes per token``), and each document's sidecar total."""
    caseops = _caseops_module()
    tokens: list[int] = []
    sidecar: list[int] = []
    doc_bytes: list[int] = []
    transformed = [caseops.encode(t) for t in texts]
    for i, (text, (ids, surfaces, edges)) in enumerate(zip(texts, _pieces_with_surfaces(sp, transformed))):
        counts = caseops.original_byte_counts(surfaces)
        total = sum(counts)
        # Every byte of the document is either charged to a token or stripped at its edges.
        if total + edges != len(text.encode("utf-8")):
            raise GolfError(
                f"{source}: validation document {first_doc + i}: its tokens stand for {total} bytes and {edges} edge "
                f"bytes were stripped, but it has {len(text.encode('utf-8'))}; this tokenizer drops text inside "
                "documents, so the byte sidecar would be wrong; use the CaseOps tokenizer"
            )
        if counts and max(counts) > MAX_TOKEN_BYTES:
            raise GolfError(
                f"{source}: validation document {first_doc + i} has a token standing for {max(counts)} bytes "
                f"(a whitespace run?), more than a uint16 sidecar entry holds; clean that document"
            )
        tokens.append(BOS_ID)
        tokens.extend(ids)
        sidecar.append(0)  # BOS stands for no original bytes
        sidecar.extend(counts)
        doc_bytes.append(total)
    return np.asarray(tokens, dtype=np.uint16), np.asarray(sidecar, dtype=np.uint16), doc_bytes


def _train_tokenizer(
    train_text: Path, vocab_size: int, model_path: Path, source: Path, user_defined_symbols: tuple[str, ...] = ()
) -> None:
    def lines() -> Iterator[str]:
        with open(train_text, encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\n")

    model = _BytesSink()
    try:
        # A sentence iterator and an in-memory writer keep temp paths out of the model's trainer
        # spec, and one thread keeps training bit-for-bit reproducible.
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines(),
            model_writer=model,
            vocab_size=vocab_size,
            num_threads=1,
            max_sentence_length=1 << 16,
            minloglevel=2,
            # CaseOps operators become ids 4.. right after pad/bos/eos/unk, as in PR #1729's model.
            **({"user_defined_symbols": list(user_defined_symbols)} if user_defined_symbols else {}),
            **SP_TRAINER_SETTINGS,
        )
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        detail = detail.rsplit("] ", 1)[-1].rstrip(".")  # drop "INTERNAL: src/trainer_interface.cc(744) [check]"
        raise GolfError(
            f"could not train a {vocab_size}-piece tokenizer on {source}: {detail}; use more text or another --vocab-size"
        ) from None
    atomic_write_bytes(model_path, [model.getvalue()])


class _BytesSink:
    """The ``model_writer`` SentencePiece's trainer wants: anything with ``write(bytes)``."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._chunks.append(bytes(data))

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise GolfError(f"output path {out_dir} exists and is not a directory; choose another output directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise GolfError(f"output directory {out_dir} already exists and is not empty; pass --overwrite to replace it or choose another")


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` dataset to ``out_dir`` (replacing an old one only if asked)."""
    _check_out_dir(out_dir, overwrite)
    old: Path | None = None
    if out_dir.is_dir():
        if any(out_dir.iterdir()):
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old / out_dir.name)
        else:
            out_dir.rmdir()
    try:
        os.rename(tmp, out_dir)
    except OSError as err:
        # Another process created out_dir meanwhile (e.g. two runs preparing the same sample).
        if old is not None and not out_dir.exists():
            os.replace(old / out_dir.name, out_dir)  # put the previous dataset back
            old.rmdir()
        raise GolfError(f"output directory {out_dir} appeared while preparing ({err.strerror}); use it or pass --overwrite") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_dataset(
    input_path: PathLike,
    out_dir: PathLike,
    *,
    tokenizer_path: PathLike | None = None,
    vocab_size: int | None = None,
    val_docs: int,
    shard_tokens: int = 10_000_000,
    max_docs: int | None = None,
    overwrite: bool = False,
    log: Log | None = None,
    caseops: bool = False,
) -> dict[str, Any]:
    """Build a shard dataset in ``out_dir`` from ``input_path``; return its manifest.

    Pass exactly one of ``tokenizer_path`` (an existing SentencePiece model, copied in) or
    ``vocab_size`` (train a BPE tokenizer of exactly that size on the train documents).
    ``caseops`` applies the CaseOps transform to every document and writes the validation byte
    sidecar (the tokenizer must have the operator pieces; a trained one gets them).
    """
    input_path = Path(input_path)
    out_dir = Path(out_dir)
    say = log or (lambda _msg: None)
    if (tokenizer_path is None) == (vocab_size is None):
        raise GolfError("pass exactly one of --tokenizer (an existing model) or --vocab-size (train one)")
    if vocab_size is not None and not 1 <= vocab_size <= 2**16:
        raise GolfError(f"vocab_size {vocab_size} is out of range; shards store uint16 ids, so use 1..65536")
    if val_docs < 1:
        raise GolfError(f"val_docs must be at least 1, got {val_docs}")
    if shard_tokens < 1:
        raise GolfError(f"shard_tokens must be at least 1, got {shard_tokens}")
    if max_docs is not None and max_docs < 1:
        raise GolfError(f"max_docs must be at least 1 (or unset), got {max_docs}")
    # Fail on a bad input or output before any expensive work.
    next(iter_documents(input_path, max_docs=1), None)
    _check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        model_path = tmp / TOKENIZER_NAME
        if tokenizer_path is not None:
            sp = load_tokenizer(tokenizer_path)
            if sp.vocab_size() > 2**16:
                raise GolfError(f"tokenizer {tokenizer_path} has {sp.vocab_size()} pieces; shards store uint16 ids, so at most 65536")
            if caseops:
                check_caseops_tokenizer(sp, tokenizer_path)
            shutil.copyfile(tokenizer_path, model_path)
        else:
            assert vocab_size is not None
            say(f"training a {vocab_size}-piece BPE tokenizer on the train documents of {input_path.name}")
            train_text = tmp / ".tokenizer_train.txt"
            num_docs = 0
            with open(train_text, "w", encoding="utf-8") as f:
                for i, text in enumerate(iter_documents(input_path, max_docs=max_docs)):
                    num_docs += 1
                    if i < val_docs:
                        continue
                    if caseops:
                        text = _caseops_module().encode(text)
                    # One sentence per line: newlines are whitespace to nmt_nfkc anyway, and long
                    # documents would otherwise exceed SentencePiece's sentence length limit.
                    for line in text.replace("\x00", " ").splitlines():
                        if line.strip():
                            f.write(line.strip() + "\n")
            _check_doc_count(input_path, num_docs, val_docs, max_docs)
            operators = _caseops_module().OPERATORS if caseops else ()
            _train_tokenizer(train_text, vocab_size, model_path, input_path, operators)
            train_text.unlink()
            sp = load_tokenizer(model_path)
            if caseops:
                check_caseops_tokenizer(sp, f"trained on {input_path}")

        say(f"encoding {input_path.name}")
        writers = {"val": _ShardWriter(tmp, "val", shard_tokens), "train": _ShardWriter(tmp, "train", shard_tokens)}
        if caseops:
            writers[BYTE_SIDECAR_SPLIT] = _ShardWriter(tmp, BYTE_SIDECAR_SPLIT, shard_tokens)
        val_bytes = 0
        val_doc_bytes: list[int] = []
        num_docs = 0
        docs = iter_documents(input_path, max_docs=max_docs)
        while batch := list(itertools.islice(docs, ENCODE_BATCH_DOCS)):
            # Split the batch where validation ends so each part goes to its own shards.
            n_val = min(len(batch), max(0, val_docs - num_docs))
            if n_val:
                val_bytes += sum(len(t.encode("utf-8")) for t in batch[:n_val])
                if caseops:
                    tokens, sidecar, doc_bytes = _encode_caseops_val(sp, batch[:n_val], num_docs, input_path)
                    writers["val"].add(tokens, n_val)
                    writers[BYTE_SIDECAR_SPLIT].add(sidecar, n_val)
                    val_doc_bytes.extend(doc_bytes)
                else:
                    writers["val"].add(_encode_docs(sp, batch[:n_val]), n_val)
            if n_val < len(batch):
                train = batch[n_val:]
                if caseops:
                    train = [_caseops_module().encode(t) for t in train]
                writers["train"].add(_encode_docs(sp, train), len(batch) - n_val)
            num_docs += len(batch)
        _check_doc_count(input_path, num_docs, val_docs, max_docs)
        for w in writers.values():
            w.flush()

        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "tokenizer": TOKENIZER_NAME,
            "tokenizer_sha256": file_sha256(model_path),
            "tokenizer_trained": tokenizer_path is None,
            "vocab_size": int(sp.vocab_size()),
            "bos_id": BOS_ID,
            "shard_tokens": shard_tokens,
            "splits": {"train": writers["train"].summary(), "val": writers["val"].summary()},
            "val_bytes": val_bytes,
            "source": input_path.name,
        }
        if caseops:
            sidecar_bytes = sum(val_doc_bytes)
            manifest["text_transform"] = CASEOPS_TRANSFORM
            manifest["byte_sidecar"] = {
                **writers[BYTE_SIDECAR_SPLIT].summary(),
                "bytes": sidecar_bytes,
                # Edge whitespace the tokenizer strips is in no token, so it is never scored.
                "unscored_bytes": val_bytes - sidecar_bytes,
                "doc_bytes": val_doc_bytes,
            }
        atomic_write_bytes(tmp / MANIFEST_NAME, [(json.dumps(manifest, indent=2) + "\n").encode("utf-8")])
        _move_into_place(tmp, out_dir, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(
        f"wrote {out_dir}: {manifest['splits']['train']['tokens']} train and "
        f"{manifest['splits']['val']['tokens']} val tokens"
    )
    return manifest


def _check_doc_count(input_path: Path, num_docs: int, val_docs: int, max_docs: int | None) -> None:
    if num_docs == 0:
        raise GolfError(f"{input_path}: no documents found; the input is empty")
    if num_docs <= val_docs:
        limit = f" (max_docs={max_docs})" if max_docs is not None else ""
        raise GolfError(
            f"{input_path} has {num_docs} documents{limit} but val_docs is {val_docs}; "
            "need at least one train doc, so lower --val-docs"
        )


_REQUIRED_KEYS = ("format", "tokenizer", "vocab_size", "bos_id", "splits", "val_bytes")


def read_manifest(data_dir: PathLike) -> dict[str, Any]:
    """Load and sanity-check ``data_dir/manifest.json``."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_NAME
    if not data_dir.is_dir():
        raise GolfError(f"data directory not found: {data_dir}; run `golf data prepare` to build one, or pass the right --data-dir")
    if not path.is_file():
        raise GolfError(f"no {MANIFEST_NAME} in {data_dir}; it was not built by `golf data prepare`, so re-run that")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GolfError(f"{path}: not valid JSON ({err}); re-run `golf data prepare`") from None
    if not isinstance(manifest, dict):
        raise GolfError(f"{path}: expected a JSON object; re-run `golf data prepare`")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise GolfError(f"{path}: missing keys {', '.join(missing)}; re-run `golf data prepare`")
    if manifest["format"] != MANIFEST_FORMAT:
        raise GolfError(f"{path}: format {manifest['format']!r} is not {MANIFEST_FORMAT!r}; re-run `golf data prepare`")
    splits = manifest["splits"]
    for split in ("train", "val"):
        entry = splits.get(split) if isinstance(splits, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
            raise GolfError(f"{path}: splits.{split} is missing or has no shard list; re-run `golf data prepare`")
    return manifest
