"""The artifact: a byte-exact container for a QuantState, its compression, and the byte budget.

Container (uncompressed): ``b"GOLFQ1\\n"``, an 8-byte little-endian header length, a JSON header
(entry name -> scheme, shape, dtype, route, meta, and each payload tensor's dtype, shape, offset,
length), then the payload tensors' raw bytes. Serializers compress that (or their own reordering
of it) and prefix a one-line format tag so the matching deserializer recognizes the blob.

Counted code bytes follow the records' practice (PR #1855): the source that would ship is
stripped of comments and docstrings, brotli-compressed at quality 11, base85-encoded and wrapped
in a two-line self-extracting ``exec``; the count is the wrapper's length.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import brotli
import torch

from golf_core.quant.state import QuantizedTensor, QuantState

CONTAINER_MAGIC = b"GOLFQ1\n"
DEFAULT_BUDGET_BYTES = 16_000_000


def pack_state(state: QuantState) -> bytes:
    header: dict[str, Any] = {"meta": state.meta, "entries": {}}
    payload = io.BytesIO()
    for name, qt in state.entries.items():
        tensors = {}
        for key, t in qt.tensors.items():
            # reshape(-1) first: a 0-dim tensor (a per-tensor scale) cannot be viewed as bytes.
            raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            tensors[key] = {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "offset": payload.tell(), "nbytes": len(raw)}
            payload.write(raw)
        header["entries"][name] = {
            "scheme": qt.scheme, "shape": list(qt.shape), "dtype": qt.dtype, "route": qt.route, "meta": qt.meta, "tensors": tensors,
        }
    head = json.dumps(header, separators=(",", ":"), sort_keys=False).encode()
    return CONTAINER_MAGIC + struct.pack("<Q", len(head)) + head + payload.getvalue()


def unpack_state(blob: bytes) -> QuantState:
    if not blob.startswith(CONTAINER_MAGIC):
        raise ValueError("not a golf quantized-state container (bad magic)")
    (head_len,) = struct.unpack_from("<Q", blob, len(CONTAINER_MAGIC))
    start = len(CONTAINER_MAGIC) + 8
    header = json.loads(blob[start : start + head_len])
    payload = memoryview(blob)[start + head_len :]
    state = QuantState(meta=header["meta"])
    for name, e in header["entries"].items():
        tensors = {}
        for key, t in e["tensors"].items():
            dtype = getattr(torch, t["dtype"])
            raw = bytearray(payload[t["offset"] : t["offset"] + t["nbytes"]])
            flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            tensors[key] = flat.view(dtype).reshape(t["shape"]).clone()
        state.entries[name] = QuantizedTensor(e["scheme"], tuple(e["shape"]), e["dtype"], tensors, route=e["route"], meta=e["meta"])
    return state


def container_layout(raw: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header of an uncompressed container and the offset where its payload starts.

    Serializers that transform payload tensors in place (byte shuffling) walk the header's
    ``entries[name]["tensors"][key]`` records (dtype, shape, offset, nbytes) relative to that offset.
    """
    if not raw.startswith(CONTAINER_MAGIC):
        raise ValueError("not a golf quantized-state container (bad magic)")
    (head_len,) = struct.unpack_from("<Q", raw, len(CONTAINER_MAGIC))
    start = len(CONTAINER_MAGIC) + 8
    return json.loads(raw[start : start + head_len]), start + head_len


def element_size(dtype_name: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype_name)).element_size()


def route_summary(routes: list[dict[str, Any]]) -> list[str]:
    """Record-style lines, one per route: ``gptq (int6): blocks.attn.c_q.weight, ... [N tensors, B bytes]``.

    Layer indices are folded (``blocks.3.attn.c_q.weight`` -> ``blocks.attn.c_q.weight``) as in the
    records' "Quantized weights:" block; the byte figures are uncompressed payload bytes.
    """
    import re

    by_route: dict[str, dict[str, Any]] = {}
    for row in routes:
        info = by_route.setdefault(row["route"], {"names": [], "count": 0, "bytes": 0})
        short = re.sub(r"\.\d+(?=\.|$)", "", row["name"])
        if short not in info["names"]:
            info["names"].append(short)
        info["count"] += 1
        info["bytes"] += int(row["payload_bytes"])
    return [
        f"{route}: {', '.join(sorted(info['names']))} [{info['count']} tensors, {info['bytes']:,} B]"
        for route, info in sorted(by_route.items())
    ]


def tag_blob(tag: str, body: bytes) -> bytes:
    return f"GOLF:{tag}\n".encode() + body


def split_tag(blob: bytes) -> tuple[str, bytes]:
    if not blob.startswith(b"GOLF:"):
        return "", blob
    line, _, body = blob.partition(b"\n")
    return line[5:].decode(errors="replace"), body


# ---------------------------------------------------------------------------------------------
# Counted code bytes
# ---------------------------------------------------------------------------------------------


def _strip_source(text: str) -> str:
    """Drop comments and docstrings (what a minifier does first); keep the code exact."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def shipped_sources(paths: list[Path]) -> list[Path]:
    """The ``.py`` files under ``paths`` that would ship: tests and caches excluded, sorted."""
    files: list[Path] = []
    for path in paths:
        candidates = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for f in candidates:
            if f.name.startswith("test_") or "__pycache__" in f.parts or "templates" in f.parts:
                continue
            files.append(f)
    return files


def counted_code_bytes(paths: list[Path], root: Path | None = None) -> dict[str, Any]:
    """Size of the self-extracting wrapper of the shipped sources, as submissions count code."""
    files = shipped_sources(paths)
    return counted_source_bytes([(os.path.relpath(f, root) if root else f.name, f.read_text(encoding="utf-8")) for f in files])


def counted_source_bytes(sources: list[tuple[str, str]]) -> dict[str, Any]:
    """:func:`counted_code_bytes` of ``(label, text)`` sources held in memory (a bundle's text)."""
    parts = []
    raw_bytes = 0
    for label, text in sources:
        raw_bytes += len(text.encode())
        parts.append(f"# {label}\n{_strip_source(text)}\n")
    stripped = "".join(parts).encode()
    packed = base64.b85encode(brotli.compress(stripped, quality=11)).decode()
    wrapper = f'import brotli as B,base64 as b\nexec(B.decompress(b.b85decode("{packed}")))\n'
    return {"files": len(sources), "raw_bytes": raw_bytes, "stripped_bytes": len(stripped), "code_bytes": len(wrapper.encode())}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
