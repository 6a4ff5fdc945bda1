"""Self-test of a prepared dataset: checksums, token counts, and the bits-per-byte denominator.

Overcounted bytes are the most common way a parameter-golf score goes wrong, so the byte count the
:class:`~golf_core.data.bytes.ByteTable` assigns to every validation document is compared with the
UTF-8 length of the text that document's tokens decode to.

A CaseOps dataset (``"text_transform": "caseops_v1"`` in the manifest) is scored from its per-token
byte sidecar instead, so that is checked too: its shards against their checksums, one entry per
validation token, zero at every BOS, and each document's total against the UTF-8 size of the
original document recorded by ``golf data prepare`` (and the sum against the source's byte count).
Each document is decoded and the case transform inverted; the restored text differs from the
original only by what the tokenizer's normalizer changed, which is reported, not failed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from golf_core.data.bytes import SPACE_MARK, ByteTable, load_tokenizer
from golf_core.data.prepare import CASEOPS_TRANSFORM, check_caseops_tokenizer, file_sha256, read_manifest
from golf_core.data.shards import BOS_ID, find_byte_sidecars, read_shard
from golf_core.errors import GolfError

MAX_REPORTED_DOCS = 20  # mismatched documents listed in the report; the count covers all of them


def verify_dataset(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Check ``data_dir`` against its manifest and its tokenizer; return a report.

    Raises :class:`GolfError` for a missing or corrupt file (naming it). Byte-count disagreements do
    not raise: they make ``report["ok"]`` false and are listed in ``report["problems"]``.

    ``table_bytes`` is the bits-per-byte denominator (what an evaluation over the whole validation
    stream counts); ``decoded_bytes`` is the UTF-8 size of the decoded documents and must equal it,
    document by document. ``source_bytes`` (the manifest's ``val_bytes``) is the size of the raw
    input text; it differs from ``decoded_bytes`` by whatever the tokenizer's normalizer changed
    (NFKC, newlines to spaces), which is reported, not failed.

    For a CaseOps dataset the denominator is ``sidecar_bytes``; the report adds ``text_transform``,
    ``sidecar_mismatched_docs`` (documents whose sidecar total is not their original size),
    ``restored_bytes`` (the decoded documents with the transform inverted),
    ``normalization_delta_bytes`` (restored minus original, over the invertible documents),
    ``normalized_docs`` and ``uninvertible_docs`` (+ ``uninvertible_examples``).
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    transform = manifest.get("text_transform")
    if transform not in (None, CASEOPS_TRANSFORM):
        raise GolfError(
            f"{data_dir / 'manifest.json'}: unknown text_transform {transform!r} (this golf knows {CASEOPS_TRANSFORM!r}); "
            "re-run `golf data prepare`"
        )
    tok_path = data_dir / manifest["tokenizer"]
    if not tok_path.is_file():
        raise GolfError(f"tokenizer {tok_path} named by {data_dir / 'manifest.json'} is missing; re-run `golf data prepare`")
    if "tokenizer_sha256" in manifest and file_sha256(tok_path) != manifest["tokenizer_sha256"]:
        raise GolfError(f"{tok_path}: checksum does not match manifest.json; the tokenizer was changed, re-run `golf data prepare`")
    sp = load_tokenizer(tok_path)
    problems: list[str] = []
    vocab = int(sp.vocab_size())
    if int(manifest["vocab_size"]) != vocab:
        problems.append(f"manifest vocab_size {manifest['vocab_size']} != tokenizer's {vocab}")

    val_parts: list[np.ndarray] = []
    split_counts: dict[str, int] = {}
    for split in ("train", "val"):
        entry = manifest["splits"][split]
        listed = [shard["name"] for shard in entry["shards"]]
        # The trainer globs the directory, so a stray shard would silently join the data.
        on_disk = sorted(p.name for p in data_dir.glob(f"fineweb_{split}_*.bin") if "_bytes_" not in p.name)
        if on_disk != sorted(listed):
            extra = sorted(set(on_disk) - set(listed))
            if extra:
                problems.append(f"{split}: shards not in manifest.json would be trained on too: {', '.join(extra)}")
        counted = 0
        for shard in entry["shards"]:
            path = data_dir / shard["name"]
            if not path.is_file():
                raise GolfError(f"shard {path} listed in manifest.json is missing; re-run `golf data prepare`")
            if file_sha256(path) != shard["sha256"]:
                raise GolfError(f"{path}: checksum does not match manifest.json; the shard is corrupt, re-run `golf data prepare`")
            tokens = read_shard(path, mmap=True)
            if tokens.size != shard["tokens"]:
                raise GolfError(f"{path}: has {tokens.size} tokens but manifest.json says {shard['tokens']}; re-run `golf data prepare`")
            if tokens.size and int(tokens.max()) >= vocab:
                raise GolfError(f"{path}: token id {int(tokens.max())} is outside the tokenizer's {vocab} ids; wrong tokenizer?")
            counted += int(tokens.size)
            if split == "val":  # only validation is decoded; train shards may be many GB
                val_parts.append(tokens)
        if counted != entry.get("tokens", counted):
            problems.append(f"{split}: shards hold {counted} tokens but manifest says {entry['tokens']}")
        split_counts[split] = counted

    val = np.concatenate(val_parts).astype(np.int64) if val_parts else np.zeros(0, dtype=np.int64)
    if val.size == 0 or val[0] != BOS_ID:
        raise GolfError(f"validation shards in {data_dir} do not start with BOS={BOS_ID}; each document must open with BOS")
    starts = np.flatnonzero(val == BOS_ID)
    if starts.size != manifest["splits"]["val"].get("documents", starts.size):
        problems.append(f"val: {starts.size} BOS tokens but manifest says {manifest['splits']['val']['documents']} documents")

    # The evaluation rule over the whole stream: target t with previous token t-1; the first token
    # (a BOS) is never a target, and every BOS target counts zero.
    table = ByteTable.from_sentencepiece(sp, vocab)
    base = table.base_bytes.numpy().astype(np.int64)
    space = table.has_leading_space.numpy()
    boundary = table.is_boundary.numpy()
    per_token = np.zeros(val.size, dtype=np.int64)
    per_token[1:] = base[val[1:]] + (space[val[1:]] & ~boundary[val[:-1]])
    table_per_doc = np.add.reduceat(per_token, starts)

    ends = np.append(starts[1:], val.size)
    docs = [val[s + 1 : e].tolist() for s, e in zip(starts, ends)]
    decoded = sp.decode(docs)
    decoded_per_doc = np.fromiter((len(t.encode("utf-8")) for t in decoded), dtype=np.int64, count=len(decoded))

    bad = np.flatnonzero(table_per_doc != decoded_per_doc)
    mismatched = [
        {"doc": int(i), "table_bytes": int(table_per_doc[i]), "decoded_bytes": int(decoded_per_doc[i])}
        for i in bad[:MAX_REPORTED_DOCS]
    ]
    table_bytes = int(table_per_doc.sum())
    decoded_bytes = int(decoded_per_doc.sum())
    if bad.size:
        problems.append(
            f"{bad.size} of {len(docs)} validation documents decode to a different byte count than the table gives "
            f"(table {table_bytes}, decoded {decoded_bytes})"
        )
    source_bytes = int(manifest["val_bytes"])

    report: dict[str, Any] = {
        "ok": False,
        "data_dir": str(data_dir),
        "vocab_size": vocab,
        "train_tokens": split_counts["train"],
        "val_tokens": int(val.size),
        "val_documents": int(starts.size),
        "table_bytes": table_bytes,
        "decoded_bytes": decoded_bytes,
        "source_bytes": source_bytes,
        "normalization_delta_bytes": decoded_bytes - source_bytes,
        "mismatched_docs": int(bad.size),
        "mismatched_examples": mismatched,
        # Without a standalone "▁" piece a space is spelt in byte-fallback pieces (PR #897's overcount).
        "space_piece": sp.piece_to_id(SPACE_MARK) != sp.unk_id(),
        "sidecar_bytes": None,
        "problems": problems,
    }

    if transform == CASEOPS_TRANSFORM:
        report.update(_check_caseops(data_dir, manifest, sp, val, starts, decoded, problems))
        report["ok"] = not problems
        return report

    sidecars = find_byte_sidecars(data_dir)
    if sidecars:
        counts = np.concatenate([read_shard(p) for p in sidecars]).astype(np.int64)
        if counts.size != val.size:
            problems.append(f"byte sidecar has {counts.size} entries for {val.size} validation tokens")
        sidecar_bytes = int(counts[: val.size].sum())
        report["sidecar_bytes"] = sidecar_bytes
        # A sidecar counts original text bytes: they match the decoded text, or (when the tokenizer's
        # normalizer or a text transform changed the text) the raw source.
        if sidecar_bytes not in (decoded_bytes, source_bytes):
            problems.append(
                f"byte sidecar sums to {sidecar_bytes} bytes, neither the decoded {decoded_bytes} nor the source {source_bytes}"
            )
    report["ok"] = not problems
    return report


def _check_caseops(
    data_dir: Path,
    manifest: dict[str, Any],
    sp: Any,
    val: np.ndarray,
    starts: np.ndarray,
    decoded: list[str],
    problems: list[str],
) -> dict[str, Any]:
    """The byte sidecar and the case transform of a CaseOps dataset; appends to ``problems``."""
    from plugins.caseops.transform import CaseOpsError, decode

    try:
        check_caseops_tokenizer(sp, data_dir / manifest["tokenizer"])
    except GolfError as err:
        problems.append(str(err))
    entry = manifest.get("byte_sidecar")
    if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list) or not isinstance(entry.get("doc_bytes"), list):
        raise GolfError(f"{data_dir / 'manifest.json'}: a caseops dataset without a byte_sidecar entry; re-run `golf data prepare --caseops`")
    listed = [shard["name"] for shard in entry["shards"]]
    on_disk = [p.name for p in find_byte_sidecars(data_dir)]
    if on_disk != sorted(listed):
        problems.append(f"byte sidecar shards on disk ({', '.join(on_disk) or 'none'}) are not the ones in manifest.json ({', '.join(listed)})")
    parts = []
    for shard in entry["shards"]:
        path = data_dir / shard["name"]
        if not path.is_file():
            raise GolfError(f"byte sidecar {path} listed in manifest.json is missing; re-run `golf data prepare --caseops`")
        if file_sha256(path) != shard["sha256"]:
            raise GolfError(f"{path}: checksum does not match manifest.json; the sidecar is corrupt, re-run `golf data prepare --caseops`")
        parts.append(read_shard(path))
    counts = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    expected = np.asarray(entry["doc_bytes"], dtype=np.int64)
    out: dict[str, Any] = {
        "text_transform": CASEOPS_TRANSFORM,
        "sidecar_bytes": int(counts.sum()),
        "sidecar_mismatched_docs": None,
        "restored_bytes": None,
        "normalization_delta_bytes": None,
        "normalized_docs": None,
        "uninvertible_docs": None,
        "uninvertible_examples": [],
    }
    unscored = int(entry.get("unscored_bytes", 0))
    if out["sidecar_bytes"] + unscored != int(manifest["val_bytes"]):
        problems.append(
            f"byte sidecar sums to {out['sidecar_bytes']} bytes; with {unscored} unscored edge bytes that is not "
            f"the source's {manifest['val_bytes']}"
        )
    if counts.size != val.size or expected.size != starts.size:
        problems.append(
            f"byte sidecar has {counts.size} entries for {val.size} validation tokens and manifest.json "
            f"{expected.size} document sizes for {starts.size} documents; re-run `golf data prepare --caseops`"
        )
        return out
    if counts[starts].any():
        problems.append(f"byte sidecar charges bytes to {int(np.count_nonzero(counts[starts]))} BOS tokens; BOS stands for none")

    # Doc by doc against the original documents' UTF-8 sizes that prepare recorded (less edge
    # whitespace the tokenizer strips, which no token covers).
    sidecar_per_doc = np.add.reduceat(counts, starts)
    bad = np.flatnonzero(sidecar_per_doc != expected)
    if bad.size:
        problems.append(
            f"{bad.size} of {starts.size} validation documents: byte sidecar total differs from the original document's "
            f"UTF-8 size (first: document {int(bad[0])}, sidecar {int(sidecar_per_doc[bad[0]])}, original {int(expected[bad[0]])})"
        )

    # Decode and invert each document. The normalizer (NFKC, whitespace runs) may change a
    # document, and rarely into a stream the inverse refuses (a full-width letter before a
    # capitalised word): both are reported, not failed, since the sidecar is the denominator.
    restored = np.full(len(decoded), -1, dtype=np.int64)
    for i, text in enumerate(decoded):
        try:
            restored[i] = len(decode(text).encode("utf-8"))
        except CaseOpsError:
            pass
    invertible = restored >= 0
    out.update(
        sidecar_mismatched_docs=int(bad.size),
        restored_bytes=int(restored[invertible].sum()),
        normalization_delta_bytes=int((restored - expected)[invertible].sum()),
        normalized_docs=int(np.count_nonzero(invertible & (restored != expected))),
        uninvertible_docs=int(np.count_nonzero(~invertible)),
        uninvertible_examples=[int(i) for i in np.flatnonzero(~invertible)[:MAX_REPORTED_DOCS]],
    )
    return out
