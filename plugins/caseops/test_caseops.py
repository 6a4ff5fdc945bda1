"""CaseOps: the transform (hand-worked cases, round trips), the byte counter against decoded
prefixes, a prepared dataset's sidecar against the original documents, the run-time check, a micro run."""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from golf_core.data import ByteTable, find_byte_sidecars, find_shards, prepare_dataset, read_manifest, read_shard, sample_documents, verify_dataset, write_shard
from golf_core.data.prepare import file_sha256
from golf_core.errors import GolfError
from golf_core.testing import make_ctx, micro_stack, run_micro
from plugins.caseops import ALLCAPS, CAPNEXT, ESC, TITLE, CaseOpsError, decode, encode, original_byte_counts

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FINEWEB_DOCS = SHARED_DATA / "fineweb_sample.jsonl.gz"
CASEOPS_SP = SHARED_DATA / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
PLAIN_SP = SHARED_DATA / "fineweb_8192_bpe.model"

needs_fineweb = pytest.mark.skipif(
    not (FINEWEB_DOCS.is_file() and CASEOPS_SP.is_file()), reason=f"FineWeb sample or CaseOps tokenizer not in {SHARED_DATA}"
)

# The hand-worked example of reference/techniques.md A.2.
EXAMPLE = "The NASA Launch of iPhone"
EXAMPLE_ENCODED = "\ue001the \ue002nasa \ue001launch of i\ue003phone"
EXAMPLE_PIECES = ["\ue001", "the", "▁", "\ue002", "nas", "a", "▁", "\ue001", "la", "unch", "▁of", "▁i", "\ue003", "phone"]
# T-h-e, space, N-A-S-A, ...: operators 0, letters and the space 1 byte each.
EXAMPLE_BYTES = [0, 3, 1, 0, 3, 1, 1, 0, 2, 4, 3, 2, 0, 5]


def fineweb_docs(n: int | None = None) -> list[str]:
    with gzip.open(FINEWEB_DOCS, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    return docs[:n] if n else docs


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ the transform


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        (EXAMPLE, EXAMPLE_ENCODED),
        ("", ""),
        ("plain lower case, 123 digits.", "plain lower case, 123 digits."),
        ("Title", TITLE + "title"),
        ("I", TITLE + "i"),  # a lone capital: TITLE, not ALLCAPS (needs two letters)
        ("ABC", ALLCAPS + "abc"),
        ("mIxEd", "m" + CAPNEXT + "ix" + CAPNEXT + "ed"),
        ("McDonald", TITLE + "mc" + CAPNEXT + "donald"),
        ("HTTPServer", TITLE + "h" + CAPNEXT + "t" + CAPNEXT + "t" + CAPNEXT + "p" + CAPNEXT + "server"),
        ("A1B2c", TITLE + "a1" + TITLE + "b2c"),  # digits end a letter run
        ("ÉRIC Éric naïve", "É" + ALLCAPS + "ric Éric naïve"),  # non-ASCII letters pass through and end runs
        ("x\ue001Y", "x" + ESC + "\ue001" + TITLE + "y"),  # a literal operator is escaped and ends the run
        (ESC + ESC, ESC + ESC + ESC + ESC),
        ("\ue000\ue005", "\ue000\ue005"),  # private-use neighbours are not operators
        ("ＡBC", "Ａ" + ALLCAPS + "bc"),  # full-width letters are not ASCII
    ],
)
def test_hand_worked_encodings(text, encoded):
    assert encode(text) == encoded
    assert decode(encoded) == text


@pytest.mark.parametrize(
    "bad",
    [TITLE, TITLE + " a", "a" + TITLE + "b", ALLCAPS + TITLE + "a", CAPNEXT + CAPNEXT + "a", "ab" + CAPNEXT, ESC, "a" + ESC, TITLE + ESC + "a", TITLE + ESC + TITLE],
)
def test_malformed_streams_raise(bad):
    with pytest.raises(CaseOpsError):
        decode(bad)


def test_decoder_accepts_what_normalizers_produce():
    # NFKC turns full-width letters into ASCII capitals; the inverse keeps them as they are.
    assert decode("XII " + TITLE + "d") == "XII D"
    assert decode(CAPNEXT + "a") == "A"  # CAPNEXT at a word start (PR #1729's decoder allows it)
    assert decode(ALLCAPS + "ab" + CAPNEXT + "c") == "ABC"


def test_round_trip_random_strings():
    alphabet = "aZbY q.1é中\n" + TITLE + ALLCAPS + CAPNEXT + ESC + "\ue000"
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        enc = encode(text)
        assert decode(enc) == text
        assert not any("A" <= c <= "Z" for c in enc)  # the tokenizer only ever sees lower case


@needs_fineweb
def test_round_trip_fineweb_sample():
    docs = fineweb_docs()
    assert len(docs) == 2800
    encoded = [encode(d) for d in docs]
    assert [decode(e) for e in encoded] == docs
    assert sum(e != d for e, d in zip(encoded, docs)) > 2700  # the transform really did something


# ------------------------------------------------------------------------------ byte counter


def test_byte_counts_hand_worked_example():
    surfaces = [p.replace("▁", " ") for p in EXAMPLE_PIECES]
    assert "".join(surfaces) == EXAMPLE_ENCODED
    assert original_byte_counts(surfaces) == EXAMPLE_BYTES
    assert sum(EXAMPLE_BYTES) == len(EXAMPLE.encode("utf-8"))
    # An escaped operator stands for its 3 UTF-8 bytes, the escape for none, even across pieces.
    assert original_byte_counts([ESC, "\ue001", "é"]) == [0, 3, 2]
    with pytest.raises(CaseOpsError):
        original_byte_counts(["a", TITLE])


def test_byte_counts_match_decoded_prefixes():
    """Independent reference: the bytes before any token boundary are the UTF-8 size of the decoded
    prefix (where the prefix is a complete stream); every split of the text must agree."""
    rng = random.Random(1)
    texts = [EXAMPLE, "HTTPServer said ÉRIC x\ue001Y \ue004 done", *sample_documents()[:20]]
    for text in texts:
        enc = encode(text)
        cuts = sorted(rng.sample(range(1, len(enc)), min(len(enc) - 1, 40))) if len(enc) > 1 else []
        surfaces = [enc[a:b] for a, b in zip([0, *cuts], [*cuts, len(enc)])]
        counts = original_byte_counts(surfaces)
        assert sum(counts) == len(text.encode("utf-8"))
        checked = 0
        for k, cut in enumerate(cuts, start=1):
            try:
                prefix = decode(enc[:cut])
            except CaseOpsError:  # the cut falls between an operator and its letter
                continue
            assert sum(counts[:k]) == len(prefix.encode("utf-8"))
            checked += 1
        assert checked >= len(cuts) // 2


@pytest.mark.skipif(not CASEOPS_SP.is_file(), reason=f"CaseOps tokenizer not in {SHARED_DATA}")
def test_example_through_the_caseops_tokenizer():
    sp = spm.SentencePieceProcessor(model_file=str(CASEOPS_SP))
    assert [sp.id_to_piece(i) for i in range(4, 8)] == [TITLE, ALLCAPS, CAPNEXT, ESC]
    ids = sp.encode(encode(EXAMPLE), out_type=int)
    assert [sp.id_to_piece(i) for i in ids] == EXAMPLE_PIECES
    assert sp.bos_id() == 1 and 1 not in ids  # BOS is never emitted: prepare must prepend it
    assert decode(sp.decode(ids)) == EXAMPLE


# ------------------------------------------------------------------------------ prepared data


@pytest.fixture(scope="module")
def caseops_dataset(tmp_path_factory) -> Path:
    if not (FINEWEB_DOCS.is_file() and CASEOPS_SP.is_file()):
        pytest.skip(f"FineWeb sample or CaseOps tokenizer not in {SHARED_DATA}")
    out = tmp_path_factory.mktemp("caseops") / "fineweb_caseops"
    prepare_dataset(FINEWEB_DOCS, out, tokenizer_path=CASEOPS_SP, val_docs=40, max_docs=200, shard_tokens=30_000, caseops=True)
    return out


def split_docs(tokens: np.ndarray) -> list[np.ndarray]:
    starts = np.flatnonzero(tokens == 1)
    return np.split(tokens, starts[1:])


def test_prepared_sidecar_counts_original_bytes_doc_by_doc(caseops_dataset: Path):
    manifest = read_manifest(caseops_dataset)
    assert manifest["text_transform"] == "caseops_v1"
    docs = fineweb_docs(40)
    assert all(d == d.strip() for d in docs)  # no edge whitespace, so every byte is scored
    tokens = np.concatenate([read_shard(p) for p in find_shards(caseops_dataset, "val")])
    sidecars = find_byte_sidecars(caseops_dataset)
    assert [p.name for p in sidecars] == [s["name"] for s in manifest["byte_sidecar"]["shards"]]
    assert [p.name.replace("_bytes", "") for p in sidecars] == [p.name for p in find_shards(caseops_dataset, "val")]
    assert not list(caseops_dataset.glob("fineweb_train_bytes_*"))  # validation only, as in PR #1855
    counts = np.concatenate([read_shard(p) for p in sidecars]).astype(np.int64)
    assert counts.size == tokens.size

    sp = spm.SentencePieceProcessor(model_file=str(CASEOPS_SP))
    doc_tokens = split_docs(tokens)
    doc_counts = np.split(counts, np.flatnonzero(tokens == 1)[1:])
    assert len(doc_tokens) == len(docs)
    for doc, toks, cnt in zip(docs, doc_tokens, doc_counts):
        assert toks.tolist() == [1, *sp.encode(encode(doc), out_type=int)]
        assert cnt[0] == 0  # BOS
        assert int(cnt.sum()) == len(doc.encode("utf-8"))
        operators = np.isin(toks, [4, 5, 6, 7])
        assert not cnt[operators].any()  # no literal operators in FineWeb, so every operator is 0
    assert int(counts.sum()) == manifest["val_bytes"] == manifest["byte_sidecar"]["bytes"]

    # Train shards are transformed too (operator ids present), BOS-delimited.
    train = np.concatenate([read_shard(p) for p in find_shards(caseops_dataset, "train")])
    assert train[0] == 1 and np.isin(train, [4, 5]).any()
    assert (train == 1).sum() == 160

    report = verify_dataset(caseops_dataset)
    assert report["ok"], report["problems"]
    assert report["sidecar_bytes"] == report["source_bytes"] and report["sidecar_mismatched_docs"] == 0
    assert report["uninvertible_docs"] == 0
    # Decoded and inverted, the documents are the originals up to the normalizer's changes.
    assert abs(report["normalization_delta_bytes"]) < 0.01 * report["source_bytes"]


def test_verify_catches_a_sidecar_that_moves_bytes_between_documents(caseops_dataset: Path, tmp_path: Path):
    out = tmp_path / "ds"
    shutil.copytree(caseops_dataset, out)
    manifest = read_manifest(out)
    shard = out / manifest["byte_sidecar"]["shards"][0]["name"]
    counts = read_shard(shard).copy()
    tokens = read_shard(out / manifest["splits"]["val"]["shards"][0]["name"])
    second_doc = int(np.flatnonzero(tokens == 1)[1])
    counts[second_doc - 1] -= 1  # same total, wrong documents
    counts[second_doc + 1] += 1
    write_shard(shard, counts)
    manifest["byte_sidecar"]["shards"][0]["sha256"] = file_sha256(shard)
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    report = verify_dataset(out)
    assert not report["ok"] and report["sidecar_mismatched_docs"] == 2
    assert "2 of 40 validation documents" in report["problems"][0]

    counts[second_doc] = 5  # bytes charged to a BOS
    write_shard(shard, counts)
    manifest["byte_sidecar"]["shards"][0]["sha256"] = file_sha256(shard)
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert any("BOS tokens" in p for p in verify_dataset(out)["problems"])

    corrupt = bytearray(shard.read_bytes())
    corrupt[-1] ^= 0x40
    shard.write_bytes(bytes(corrupt))
    with pytest.raises(GolfError, match="fineweb_val_bytes_000000.bin: checksum does not match"):
        verify_dataset(out)


@pytest.mark.skipif(not CASEOPS_SP.is_file(), reason=f"CaseOps tokenizer not in {SHARED_DATA}")
def test_edge_whitespace_is_unscored_and_literal_operators_are_charged(tmp_path: Path):
    docs = [
        "  Leading spaces and a trailing newline\n",
        "Literal operators \ue001\ue004 in TEXT, café",
        "   ",
        "",
        "ALL CAPS DOC",
        "x\n\n\nMixed   whitespace\tInside",
        "ＡBC: NFKC makes the full-width letter an ASCII capital before ALLCAPS",
    ]
    out = tmp_path / "ds"
    manifest = prepare_dataset(write_jsonl(tmp_path / "d.jsonl", docs + ["train doc"]), out, tokenizer_path=CASEOPS_SP, val_docs=len(docs), caseops=True)
    tokens = np.concatenate([read_shard(p) for p in find_shards(out, "val")])
    counts = np.concatenate([read_shard(p) for p in find_byte_sidecars(out)]).astype(np.int64)
    per_doc = [int(c.sum()) for c in np.split(counts, np.flatnonzero(tokens == 1)[1:])]
    # The tokenizer strips whitespace at a document's edges; inner whitespace runs stay charged.
    assert per_doc == [len(d.strip().encode("utf-8")) for d in docs]
    assert manifest["byte_sidecar"]["doc_bytes"] == per_doc
    assert manifest["byte_sidecar"]["unscored_bytes"] == sum(len(d.encode()) - len(d.strip().encode()) for d in docs) == 6
    # The escaped operators: ESC 0, the literal 3 bytes each.
    sp = spm.SentencePieceProcessor(model_file=str(CASEOPS_SP))
    doc1 = np.split(tokens, np.flatnonzero(tokens == 1)[1:])[1]
    cnt1 = np.split(counts, np.flatnonzero(tokens == 1)[1:])[1]
    pieces = [sp.id_to_piece(int(i)) for i in doc1]
    first_esc = pieces.index(ESC)
    assert pieces[first_esc : first_esc + 4] == [ESC, TITLE, ESC, ESC]
    assert cnt1[first_esc : first_esc + 4].tolist() == [0, 3, 0, 3]
    report = verify_dataset(out)
    assert report["ok"], report["problems"]
    assert report["sidecar_bytes"] + 6 == report["source_bytes"]
    # The last document's normalized stream cannot be inverted; the sidecar still counts it right.
    assert report["uninvertible_docs"] == 1 and report["uninvertible_examples"] == [len(docs) - 1]
    assert report["normalized_docs"] >= 1  # the inner whitespace runs collapse


def test_trained_caseops_tokenizer_gets_the_operator_pieces(tmp_path: Path):
    docs = sample_documents()[:60]
    out = tmp_path / "ds"
    manifest = prepare_dataset(write_jsonl(tmp_path / "d.jsonl", docs), out, vocab_size=400, val_docs=10, caseops=True)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert [sp.id_to_piece(i) for i in range(4, 8)] == [TITLE, ALLCAPS, CAPNEXT, ESC]
    assert not any(any("A" <= c <= "Z" for c in sp.id_to_piece(i)) for i in range(8, sp.vocab_size()) if not sp.is_byte(i))
    assert manifest["byte_sidecar"]["bytes"] == sum(len(d.strip().encode("utf-8")) for d in docs[:10])
    assert verify_dataset(out)["ok"]


@pytest.mark.skipif(not PLAIN_SP.is_file(), reason=f"plain FineWeb tokenizer not in {SHARED_DATA}")
def test_prepare_refuses_a_tokenizer_without_operators(tmp_path: Path):
    src = write_jsonl(tmp_path / "d.jsonl", ["One doc.", "Two docs."])
    with pytest.raises(GolfError, match="no piece for the CaseOps operator U\\+E001"):
        prepare_dataset(src, tmp_path / "ds", tokenizer_path=PLAIN_SP, val_docs=1, caseops=True)
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------ the technique


def configure(data_dir: Path, tokenizer_path: Path) -> None:
    stack = micro_stack(["caseops"])
    ctx = make_ctx(stack, data_dir=data_dir, tokenizer=spm.SentencePieceProcessor(model_file=str(tokenizer_path)))
    ctx.pm.hook.golf_configure(ctx=ctx)


def test_configure_accepts_caseops_and_refuses_plain_datasets(caseops_dataset: Path, tmp_path: Path):
    configure(caseops_dataset, CASEOPS_SP)

    plain = tmp_path / "plain"
    prepare_dataset(FINEWEB_DOCS, plain, tokenizer_path=CASEOPS_SP, val_docs=5, max_docs=10)
    with pytest.raises(GolfError, match="stack enables caseops but DATASET .* was prepared without it; run golf data prepare --caseops"):
        configure(plain, CASEOPS_SP)

    no_sidecar = tmp_path / "no_sidecar"
    shutil.copytree(caseops_dataset, no_sidecar)
    for p in find_byte_sidecars(no_sidecar):
        p.unlink()
    with pytest.raises(GolfError, match="has no fineweb_val_bytes_\\*.bin byte sidecar"):
        configure(no_sidecar, CASEOPS_SP)

    if PLAIN_SP.is_file():  # data.tokenizer pointing at a model without the operators
        with pytest.raises(GolfError, match="no piece for the CaseOps operator"):
            configure(caseops_dataset, PLAIN_SP)


def test_micro_run_scores_bits_per_byte_from_the_sidecar(caseops_dataset: Path, tmp_path: Path):
    report = run_micro(
        tmp_path, enable=["caseops"],
        overrides=[f"data.dataset='{caseops_dataset.as_posix()}'", "model.vocab_size=8192"],
    )
    assert report["steps"] == 3
    post = report["post_quant"]
    val = np.concatenate([read_shard(p) for p in find_shards(caseops_dataset, "val")])[:2049].astype(np.int64)
    sidecar = np.concatenate([read_shard(p) for p in find_byte_sidecars(caseops_dataset)])[:2049].astype(np.int64)
    # 2,048 targets (data.val_tokens_limit), each charged its original bytes.
    assert post["tokens"] == 2048 and post["bytes"] == int(sidecar[1:].sum())
    sp = spm.SentencePieceProcessor(model_file=str(CASEOPS_SP))
    table = ByteTable.from_sentencepiece(sp, 8192)
    table_bytes = int(table.token_bytes(torch.from_numpy(val[:-1]), torch.from_numpy(val[1:])).sum())
    assert table_bytes > post["bytes"]  # the table would charge 3 bytes per operator
    assert report["val_bpb"] == pytest.approx(post["val_loss"] / math.log(2) * post["tokens"] / post["bytes"], rel=1e-6)
