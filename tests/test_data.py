"""Tests for golf_core.data: shard format, loaders, byte accounting, prepare/verify, sample corpus."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from golf_core.data import (
    BOS_ID,
    HEADER_INTS,
    SHARD_MAGIC,
    SHARD_VERSION,
    ByteTable,
    DistributedTokenLoader,
    TokenStream,
    bits_per_byte,
    ensure_sample_dataset,
    find_shards,
    load_byte_sidecar,
    load_tokenizer,
    load_validation_tokens,
    prepare_dataset,
    read_manifest,
    read_shard,
    sample_documents,
    verify_dataset,
    write_shard,
)
from golf_core.data.prepare import SP_TRAINER_SETTINGS
from golf_core.data.sample import DEFAULT_VAL_DOCS, SAMPLE_VERSION, sample_dataset_dir
from golf_core.errors import GolfError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FINEWEB_DOCS = SHARED_DATA / "fineweb_sample.jsonl.gz"
FINEWEB_SP = SHARED_DATA / "fineweb_8192_bpe.model"

WORDS = (
    "the cat sat on a mat and then the dog ran to the park with other dogs while birds sang songs "
    "in trees near water"
).split()


def tiny_corpus(n_docs: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 30))]
        docs.append(" ".join(words).capitalize() + ". Café 42!")
    return docs


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_sp() -> spm.SentencePieceProcessor:
    """A real 300-piece BPE model trained with the challenge's settings."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()),
        model_writer=model,
        vocab_size=300,
        num_threads=1,
        minloglevel=2,
        **SP_TRAINER_SETTINGS,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


# ---------------------------------------------------------------- shard format


def test_shard_roundtrip_and_exact_layout(tmp_path: Path) -> None:
    tokens = np.random.default_rng(0).integers(0, 65536, size=1001).astype(np.uint16)
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    assert len(raw) == 4 * HEADER_INTS + 2 * tokens.size
    header = np.frombuffer(raw[: 4 * HEADER_INTS], dtype="<i4")
    assert header[0] == SHARD_MAGIC == 20240520
    assert header[1] == SHARD_VERSION == 1
    assert header[2] == tokens.size
    assert not header[3:].any()
    assert np.array_equal(np.frombuffer(raw[4 * HEADER_INTS :], dtype="<u2"), tokens)
    for mmap in (False, True):
        back = read_shard(path, mmap=mmap)
        assert back.dtype == np.uint16
        assert np.array_equal(back, tokens)
    # int64 input with small ids, and an empty shard, round-trip too
    write_shard(path, np.arange(10, dtype=np.int64))
    assert read_shard(path).tolist() == list(range(10))
    write_shard(path, np.zeros(0, dtype=np.int64))
    assert read_shard(path).size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp files left behind


@pytest.mark.parametrize("bad", [65536, -1])
def test_write_shard_rejects_ids_outside_uint16(tmp_path: Path, bad: int) -> None:
    path = tmp_path / "fineweb_train_000000.bin"
    with pytest.raises(GolfError, match=str(bad)):
        write_shard(path, np.array([1, 2, bad], dtype=np.int64))
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def _corrupt(path: Path, case: str) -> None:
    raw = bytearray(path.read_bytes())
    if case == "magic":
        raw[0:4] = np.array([12345], dtype="<i4").tobytes()
    elif case == "version":
        raw[4:8] = np.array([2], dtype="<i4").tobytes()
    elif case == "truncated":
        raw = raw[:-10]
    elif case == "extra":
        raw += b"\x00\x01"
    elif case == "no_header":
        raw = raw[:100]
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("magic", "bad magic 12345"),
        ("version", "unsupported shard version 2"),
        ("truncated", "truncated: header says 1000 tokens (3024 bytes) but file has 3014 bytes"),
        ("extra", "extra bytes: header says 1000 tokens (3024 bytes) but file has 3026 bytes"),
        ("no_header", "truncated: 100 bytes"),
    ],
)
def test_corrupt_shards_raise_golf_error_naming_the_file(tmp_path: Path, case: str, words: str) -> None:
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, np.arange(1000))
    _corrupt(path, case)
    for mmap in (False, True):
        with pytest.raises(GolfError) as info:
            read_shard(path, mmap=mmap)
        msg = str(info.value)
        assert "fineweb_val_000000.bin" in msg
        assert words in msg
        assert "\n" not in msg


def test_missing_shard_is_golf_error(tmp_path: Path) -> None:
    with pytest.raises(GolfError, match="fineweb_val_000000.bin: shard not found"):
        read_shard(tmp_path / "fineweb_val_000000.bin")


def test_find_shards_sorts_and_skips_byte_sidecars(tmp_path: Path) -> None:
    for name in ("fineweb_val_000001.bin", "fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin", "fineweb_train_000000.bin"):
        write_shard(tmp_path / name, np.arange(5))
    assert [p.name for p in find_shards(tmp_path, "val")] == ["fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    assert [p.name for p in find_shards(tmp_path, "train")] == ["fineweb_train_000000.bin"]
    with pytest.raises(GolfError, match=r"no fineweb_test_\*\.bin shards in .*golf data prepare"):
        find_shards(tmp_path, "test")
    with pytest.raises(GolfError, match="data directory not found: .*nope"):
        find_shards(tmp_path / "nope", "train")


# ---------------------------------------------------------------- loaders


def _make_shards(tmp_path: Path, sizes: list[int]) -> tuple[list[Path], np.ndarray]:
    files, parts, start = [], [], 0
    for i, n in enumerate(sizes):
        tokens = (np.arange(start, start + n) * 7919 % 65536).astype(np.uint16)  # distinct, not sorted
        path = tmp_path / f"fineweb_train_{i:06d}.bin"
        write_shard(path, tokens)
        files.append(path)
        parts.append(tokens)
        start += n
    return files, np.concatenate(parts).astype(np.int64)


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_loader_matches_hand_built_reference(tmp_path: Path, world_size: int, grad_accum_steps: int) -> None:
    # Odd shard sizes so spans cross shard boundaries, and enough steps to wrap around twice.
    files, stream = _make_shards(tmp_path, [1000, 37, 513])
    seq_len = 16
    global_tokens = seq_len * 4 * world_size * grad_accum_steps
    local = global_tokens // (world_size * grad_accum_steps)
    span = local + 1
    steps = 2 * stream.size // (span * world_size) + 3
    forever = np.tile(stream, steps * span * world_size // stream.size + 2)
    loaders = [DistributedTokenLoader(files, r, world_size, "cpu") for r in range(world_size)]
    pos = 0
    for _ in range(steps):
        chunk = forever[pos : pos + span * world_size]
        pos += span * world_size
        for r, loader in enumerate(loaders):
            x, y = loader.next_batch(global_tokens, seq_len, grad_accum_steps)
            mine = torch.from_numpy(chunk[r * span : (r + 1) * span])
            assert x.dtype == y.dtype == torch.int64
            assert x.shape == y.shape == (local // seq_len, seq_len)
            assert torch.equal(x, mine[:-1].view(-1, seq_len))
            assert torch.equal(y, mine[1:].view(-1, seq_len))
    loaders[0].reset()
    x, _ = loaders[0].next_batch(global_tokens, seq_len, grad_accum_steps)
    assert torch.equal(x.reshape(-1), torch.from_numpy(forever[: local]))


def test_token_stream_take_wraps(tmp_path: Path) -> None:
    files, stream = _make_shards(tmp_path, [10, 0, 5])
    ts = TokenStream(files)
    got = torch.cat([ts.take(4) for _ in range(10)])
    assert got.dtype == torch.int64
    assert torch.equal(got, torch.from_numpy(np.tile(stream, 3)[:40]))


def test_loader_rejects_batch_not_multiple_of_seq_len(tmp_path: Path) -> None:
    files, _ = _make_shards(tmp_path, [100])
    loader = DistributedTokenLoader(files, 0, 2, "cpu")
    with pytest.raises(GolfError, match="not a positive multiple of seq_len=16"):
        loader.next_batch(40, 16, 1)
    with pytest.raises(GolfError, match="rank 2"):
        DistributedTokenLoader(files, 2, 2, "cpu")


def test_load_validation_tokens_truncates_like_reference(tmp_path: Path) -> None:
    files, stream = _make_shards(tmp_path, [100, 3])
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.ones(103, dtype=np.int64))
    val = load_validation_tokens(files + [tmp_path / "fineweb_val_bytes_000000.bin"], seq_len=16)
    assert val.numel() == ((103 - 1) // 16) * 16 + 1 == 97
    assert torch.equal(val.long(), torch.from_numpy(stream[:97]))
    assert load_validation_tokens(files, seq_len=102).numel() == 103
    with pytest.raises(GolfError, match="103 tokens, too few for seq_len=103"):
        load_validation_tokens(files, seq_len=103)


def test_load_byte_sidecar(tmp_path: Path) -> None:
    assert load_byte_sidecar(tmp_path, 10) is None
    assert load_byte_sidecar([], 10) is None
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.arange(8))
    write_shard(tmp_path / "fineweb_val_bytes_000001.bin", np.arange(4))
    got = load_byte_sidecar(tmp_path, 10)
    assert got is not None and got.dtype == torch.int32
    assert got.tolist() == list(range(8)) + [0, 1]
    with pytest.raises(GolfError, match="12 entries but there are 13 validation tokens"):
        load_byte_sidecar(tmp_path, 13)


# ---------------------------------------------------------------- bytes


def test_byte_table_hand_worked(tiny_sp: spm.SentencePieceProcessor) -> None:
    sp = tiny_sp
    the_sp = sp.piece_to_id("\u2581the")
    the = sp.piece_to_id("the")
    cat_c = sp.piece_to_id("c")
    byte_c3 = sp.piece_to_id("<0xC3>")
    assert sp.unk_id() not in (the_sp, the, cat_c, byte_c3)
    assert sp.is_byte(byte_c3) and sp.is_control(BOS_ID)

    table = ByteTable.from_sentencepiece(sp, 320)
    assert table.size == 320
    assert table.base_bytes.dtype == torch.int16
    assert table.has_leading_space.dtype == table.is_boundary.dtype == torch.bool
    assert table.is_boundary[300:].all() and not table.base_bytes[300:].any()

    prev = torch.tensor([BOS_ID, cat_c, BOS_ID, cat_c, cat_c, the, 0, 310])
    tgt = torch.tensor([the_sp, the_sp, the, the, byte_c3, BOS_ID, cat_c, the_sp])
    got = table.token_bytes(prev, tgt).tolist()
    # "▁the" after BOS: the space is not counted (3); after a normal token it is (4);
    # "the": 3 either way; a byte-fallback piece: 1; a control token: 0; after PAD or an
    # id past the vocabulary (both boundaries) the space is not counted.
    assert got == [3, 4, 3, 3, 1, 0, 1, 3]
    assert table.to("cpu").token_bytes(prev, tgt).tolist() == got


def test_byte_table_matches_decoded_text(tiny_sp: spm.SentencePieceProcessor) -> None:
    table = ByteTable.from_sentencepiece(tiny_sp, 300)
    for text in ["The dog ran to the park.", "Café 42! the  cat", "über die Straße ☃"]:
        ids = torch.tensor([BOS_ID] + tiny_sp.encode(text))
        counted = int(table.token_bytes(ids[:-1], ids[1:]).sum())
        assert counted == len(tiny_sp.decode(ids[1:].tolist()).encode("utf-8"))


def test_bits_per_byte() -> None:
    assert bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)


def test_load_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(GolfError, match=r"tokenizer not found: .*nope.model; pass --tokenizer or set data.tokenizer"):
        load_tokenizer(tmp_path / "nope.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(GolfError, match="junk.model is not a readable SentencePiece model"):
        load_tokenizer(junk)


# ---------------------------------------------------------------- prepare and verify


def _stream_of(out: Path, split: str) -> np.ndarray:
    return np.concatenate([read_shard(p) for p in find_shards(out, split)]).astype(np.int64)


def test_prepare_trains_tokenizer_and_verifies(tmp_path: Path) -> None:
    docs = tiny_corpus(120)
    src = write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "ds"
    manifest = prepare_dataset(src, out, vocab_size=300, val_docs=20, shard_tokens=700)
    assert manifest == read_manifest(out)
    assert manifest["format"] == "golf-shards-v1"
    assert manifest["vocab_size"] == 300 and manifest["bos_id"] == 1
    assert manifest["source"] == "corpus.jsonl"
    assert manifest["val_bytes"] == sum(len(d.encode()) for d in docs[:20])
    sp = load_tokenizer(out / "tokenizer.model")
    assert sp.vocab_size() == 300
    assert hashlib.sha256((out / "tokenizer.model").read_bytes()).hexdigest() == manifest["tokenizer_sha256"]
    for split, chosen in (("val", docs[:20]), ("train", docs[20:])):
        entry = manifest["splits"][split]
        expected = np.array([t for d in chosen for t in [BOS_ID] + sp.encode(d)])
        assert np.array_equal(_stream_of(out, split), expected)  # docs run across shard boundaries
        assert entry["documents"] == len(chosen) and entry["tokens"] == expected.size
        assert [s["tokens"] for s in entry["shards"][:-1]] == [700] * (len(entry["shards"]) - 1)
        assert [s["name"] for s in entry["shards"]] == [p.name for p in find_shards(out, split)]
    assert len(manifest["splits"]["train"]["shards"]) > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "ds"]  # no temp dirs left

    report = verify_dataset(out)
    assert report["ok"], report["problems"]
    assert report["mismatched_docs"] == 0
    assert report["table_bytes"] == report["decoded_bytes"] > 0
    assert report["val_tokens"] == manifest["splits"]["val"]["tokens"]

    # Same input, same dataset: tokenizer training and sharding are deterministic.
    again = prepare_dataset(src, tmp_path / "ds2", vocab_size=300, val_docs=20, shard_tokens=700)
    assert again == manifest


def test_prepare_txt_with_given_tokenizer(tmp_path: Path, tiny_sp: spm.SentencePieceProcessor) -> None:
    model = tmp_path / "tok.model"
    model.write_bytes(tiny_sp.serialized_model_proto())
    src = tmp_path / "corpus.txt"
    src.write_text("The cat sat.\nOn the mat.\n\n\n  \nThe dog ran.\n\nBirds sang\nin trees.\n", encoding="utf-8")
    out = tmp_path / "ds"
    manifest = prepare_dataset(src, out, tokenizer_path=model, val_docs=1)
    assert manifest["splits"]["val"]["documents"] == 1 and manifest["splits"]["train"]["documents"] == 2
    assert not manifest["tokenizer_trained"]
    assert (out / "tokenizer.model").read_bytes() == model.read_bytes()
    expected = [BOS_ID] + tiny_sp.encode("The dog ran.") + [BOS_ID] + tiny_sp.encode("Birds sang\nin trees.")
    assert _stream_of(out, "train").tolist() == expected
    assert verify_dataset(out)["ok"]


def test_prepare_gzip_jsonl_and_max_docs(tmp_path: Path, tiny_sp: spm.SentencePieceProcessor) -> None:
    model = tmp_path / "tok.model"
    model.write_bytes(tiny_sp.serialized_model_proto())
    src = tmp_path / "corpus.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        for d in tiny_corpus(50):
            f.write(json.dumps({"text": d, "id": "x"}) + "\n\n")
    manifest = prepare_dataset(src, tmp_path / "ds", tokenizer_path=model, val_docs=5, max_docs=12)
    assert manifest["splits"]["val"]["documents"] == 5 and manifest["splits"]["train"]["documents"] == 7


def test_prepare_errors(tmp_path: Path, tiny_sp: spm.SentencePieceProcessor) -> None:
    model = tmp_path / "tok.model"
    model.write_bytes(tiny_sp.serialized_model_proto())
    src = write_jsonl(tmp_path / "corpus.jsonl", tiny_corpus(10))
    out = tmp_path / "ds"

    with pytest.raises(GolfError, match="need at least one train doc"):
        prepare_dataset(src, out, tokenizer_path=model, val_docs=10)
    with pytest.raises(GolfError, match="need at least one train doc"):
        prepare_dataset(src, out, vocab_size=300, val_docs=10)
    with pytest.raises(GolfError, match="exactly one of"):
        prepare_dataset(src, out, tokenizer_path=model, vocab_size=300, val_docs=1)
    with pytest.raises(GolfError, match="exactly one of"):
        prepare_dataset(src, out, val_docs=1)
    with pytest.raises(GolfError, match="input not found: .*missing.jsonl"):
        prepare_dataset(tmp_path / "missing.jsonl", out, tokenizer_path=model, val_docs=1)
    with pytest.raises(GolfError, match="tokenizer not found"):
        prepare_dataset(src, out, tokenizer_path=tmp_path / "nope.model", val_docs=1)
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(GolfError, match="empty.jsonl: no documents found"):
        prepare_dataset(tmp_path / "empty.jsonl", out, tokenizer_path=model, val_docs=1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a b c"}\n{"text": "d e f"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(GolfError, match=r"bad.jsonl:3: not valid JSON"):
        prepare_dataset(bad, out, tokenizer_path=model, val_docs=1)
    bad.write_text('{"text": "a b c"}\n{"body": "d e f"}\n', encoding="utf-8")
    with pytest.raises(GolfError, match=r"bad.jsonl:2: no string \"text\" field"):
        prepare_dataset(bad, out, tokenizer_path=model, val_docs=1)
    with pytest.raises(GolfError, match="could not train a 5000-piece tokenizer .*Vocabulary size too high"):
        prepare_dataset(src, out, vocab_size=5000, val_docs=1)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "corpus.jsonl", "empty.jsonl", "tok.model"]

    first = prepare_dataset(src, out, tokenizer_path=model, val_docs=2)
    with pytest.raises(GolfError, match="ds already exists and is not empty; pass --overwrite"):
        prepare_dataset(src, out, tokenizer_path=model, val_docs=3)
    assert read_manifest(out) == first
    second = prepare_dataset(src, out, tokenizer_path=model, val_docs=3, overwrite=True)
    assert read_manifest(out) == second and second["splits"]["val"]["documents"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "corpus.jsonl", "ds", "empty.jsonl", "tok.model"]

    empty_dir = tmp_path / "empty_out"
    empty_dir.mkdir()
    prepare_dataset(src, empty_dir, tokenizer_path=model, val_docs=1)  # an empty directory is fine
    assert (empty_dir / "manifest.json").is_file()


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(GolfError, match="no manifest.json in"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(GolfError, match="manifest.json: not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(GolfError, match="missing keys"):
        read_manifest(tmp_path)


def test_verify_catches_corruption_and_checks_sidecar(tmp_path: Path, tiny_sp: spm.SentencePieceProcessor) -> None:
    model = tmp_path / "tok.model"
    model.write_bytes(tiny_sp.serialized_model_proto())
    src = write_jsonl(tmp_path / "corpus.jsonl", tiny_corpus(30))
    out = tmp_path / "ds"
    prepare_dataset(src, out, tokenizer_path=model, val_docs=10)

    # A sidecar holding the table's per-token bytes (BOS = 0) agrees with the decoded text.
    val = torch.from_numpy(_stream_of(out, "val"))
    per_token = torch.zeros_like(val)
    per_token[1:] = ByteTable.from_sentencepiece(tiny_sp, 300).token_bytes(val[:-1], val[1:])
    sidecar = out / "fineweb_val_bytes_000000.bin"
    write_shard(sidecar, per_token.numpy())
    report = verify_dataset(out)
    assert report["ok"] and report["sidecar_bytes"] == report["decoded_bytes"]
    per_token[5] += 1
    write_shard(sidecar, per_token.numpy())
    report = verify_dataset(out)
    assert not report["ok"] and "byte sidecar sums to" in report["problems"][0]
    sidecar.unlink()

    write_shard(out / "fineweb_train_000099.bin", np.arange(5))
    report = verify_dataset(out)
    assert not report["ok"] and "fineweb_train_000099.bin" in report["problems"][0]
    (out / "fineweb_train_000099.bin").unlink()

    shard = out / "fineweb_train_000000.bin"
    tokens = read_shard(shard).copy()
    tokens[3] = (tokens[3] + 1) % 300
    write_shard(shard, tokens)
    with pytest.raises(GolfError, match="fineweb_train_000000.bin: checksum does not match manifest.json"):
        verify_dataset(out)


def test_fineweb_sample_prepare_and_verify(tmp_path: Path) -> None:
    if not (FINEWEB_DOCS.is_file() and FINEWEB_SP.is_file()):
        pytest.skip(f"FineWeb sample not available at {SHARED_DATA}")
    out = tmp_path / "fineweb"
    manifest = prepare_dataset(FINEWEB_DOCS, out, tokenizer_path=FINEWEB_SP, val_docs=40, max_docs=200, shard_tokens=50_000)
    assert manifest["vocab_size"] == 8192
    assert manifest["splits"]["val"]["documents"] == 40 and manifest["splits"]["train"]["documents"] == 160
    report = verify_dataset(out)
    assert report["ok"], report["problems"]
    assert report["mismatched_docs"] == 0
    assert report["table_bytes"] == report["decoded_bytes"]
    # The challenge tokenizer's NFKC normalizer changes a little of the raw text, never much.
    assert abs(report["normalization_delta_bytes"]) < 0.01 * report["source_bytes"]
    assert report["space_piece"]
    val = load_validation_tokens(find_shards(out, "val"), 1024)
    assert (val.numel() - 1) % 1024 == 0


# ---------------------------------------------------------------- sample corpus


_DIGEST = "import hashlib; from golf_core.data import sample_documents; print(hashlib.sha256('\\x00'.join(sample_documents()).encode()).hexdigest())"


def test_sample_documents_deterministic() -> None:
    docs = sample_documents()
    assert docs == sample_documents()
    assert len(docs) == len(set(docs)) > 500
    assert min(len(d) for d in docs) >= 200
    assert 1_000_000 <= sum(len(d) for d in docs) <= 3_000_000
    here = hashlib.sha256("\x00".join(docs).encode()).hexdigest()
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", _DIGEST], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == here


def test_ensure_sample_dataset_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLF_CACHE_DIR", str(tmp_path / "cache"))
    name = f"sample-{SAMPLE_VERSION}-py{sys.version_info.major}{sys.version_info.minor}-sp512"
    out = ensure_sample_dataset(vocab_size=512)
    assert out == tmp_path / "cache" / name == sample_dataset_dir(vocab_size=512)
    manifest = read_manifest(out)
    assert manifest["vocab_size"] == 512 and manifest["splits"]["val"]["documents"] == DEFAULT_VAL_DOCS
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert ensure_sample_dataset(vocab_size=512) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    assert verify_dataset(out)["ok"]
    # Another split is another dataset, never a silently reused one.
    other = ensure_sample_dataset(tmp_path / "cache", vocab_size=512, val_docs=50)
    assert other.name == f"{name}-val50"
    assert read_manifest(other)["splits"]["val"]["documents"] == 50
    assert sorted(p.name for p in out.parent.iterdir()) == [name, f"{name}-val50"]  # no temp leftovers


def test_ensure_sample_dataset_concurrent(tmp_path: Path) -> None:
    code = "import sys; from pathlib import Path; from golf_core.data import ensure_sample_dataset; print(ensure_sample_dataset(Path(sys.argv[1]), vocab_size=384))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    out = Path(results[0][0].strip())
    assert verify_dataset(out)["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
