"""Self-test of a prepared dataset: checksums, token counts, and the bits-per-byte denominator.

Overcounted bytes are the most common way a parameter-golf score goes wrong, so the byte count the
:class:`~golf_core.data.bytes.ByteTable` assigns to every validation document is compared with the
UTF-8 length of the text that document's tokens decode to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from golf_core.data.bytes import SPACE_MARK, ByteTable, load_tokenizer
from golf_core.data.prepare import file_sha256, read_manifest
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
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
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
