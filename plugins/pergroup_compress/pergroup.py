"""The per-group container of PR #1855: int8 code matrices grouped by role, rows similarity-sorted, transposed.

Layout of the body (after the ``GOLF:pergroup`` tag line)::

    b"PGRP" u8 version=1 u32 n_streams, then n_streams x (u8 codec, u64 length), then the streams
    stream 0: manifest (JSON, brotli)    stream 1: remainder container (brotli, lgwin 24)
    stream 2: row permutations (brotli)  stream 3..: one per group (lrzip or brotli)

A *group* holds the ``q`` payload (int8, 2-D, large) of every entry with the same name once layer
indices are folded (``blocks.0.attn.c_q.weight`` and ``blocks.7.attn.c_q.weight`` both belong to
``blocks.attn.c_q.weight``), concatenated in state order. Rows of the groups named in ``simsort`` are
reordered greedily so that each row follows its nearest (L1) unused neighbour; every matrix is then
written transposed (column-major), so bytes that sit next to each other come from similar rows.
The remainder is the state itself with those payloads replaced by empty placeholders, so entry
and tensor order survive the round trip and ``deserialize(serialize(q))`` is bit-exact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import brotli
import numpy as np
import torch
from torch import Tensor

from golf_core.errors import GolfError
from golf_core.quant.artifact import pack_state, unpack_state
from golf_core.quant.state import QuantizedTensor, QuantState

MAGIC = b"PGRP"
VERSION = 1
CODEC_EMPTY, CODEC_BROTLI, CODEC_LRZIP = 0, 1, 2
LRZIP_MISSING = (
    "the `lrzip` program is not installed; install the Debian package `lrzip` (apt-get install lrzip)"
)


def group_key(name: str) -> str:
    """``blocks.3.attn.c_q.weight`` -> ``blocks.attn.c_q.weight`` (every numeric path component dropped)."""
    return re.sub(r"\.\d+(?=\.|$)", "", name)


def lrzip_available() -> bool:
    return shutil.which("lrzip") is not None


# ---------------------------------------------------------------------------------------------
# Row similarity sort
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def similarity_order(m: Tensor, device: torch.device | str = "cpu", compact_every: int = 1024) -> Tensor:
    """Greedy L1 nearest-neighbour row order: start at row 0, always step to the closest unused row.

    Ties go to the lowest index. Runs without host syncs inside the loop except when the pool of
    candidate rows is compacted (every ``compact_every`` steps), which halves the average work.
    Returns an int64 permutation on CPU.
    """
    n = m.shape[0]
    if n <= 2:
        return torch.arange(n)
    # float32 sums of |a - b| <= 255 per element are exact while cols * 255 < 2^24.
    x = m.to(device=device, dtype=torch.float32)
    order = torch.empty(n, dtype=torch.long, device=x.device)
    used = torch.zeros(n, dtype=torch.bool, device=x.device)
    cand = torch.arange(n, device=x.device)
    xc = x
    cur = torch.zeros(1, dtype=torch.long, device=x.device)
    inf = torch.tensor(float("inf"), device=x.device)
    for i in range(n):
        order[i : i + 1] = cur
        used.index_fill_(0, cur, True)
        if i == n - 1:
            break
        if i % compact_every == compact_every - 1:
            cand = cand[~used[cand]]
            xc = x.index_select(0, cand)
        d = (xc - x.index_select(0, cur)).abs().sum(dim=1)
        d = torch.where(used.index_select(0, cand), inf, d)
        cur = cand.index_select(0, torch.argmin(d).reshape(1))
    return order.cpu()


def perm_dtype(rows: int) -> np.dtype:
    return np.dtype(np.uint16) if rows <= 65536 else np.dtype(np.uint32)


# ---------------------------------------------------------------------------------------------
# Back ends
# ---------------------------------------------------------------------------------------------


def _run_lrzip(args: list[str]) -> None:
    try:
        subprocess.run(["lrzip", *args], capture_output=True, check=True)
    except FileNotFoundError:
        raise GolfError(LRZIP_MISSING) from None
    except subprocess.CalledProcessError as exc:
        raise GolfError(f"lrzip {' '.join(args)} failed: {exc.stderr.decode(errors='replace').strip()}") from None


def lrzip_compress(data: bytes, level: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="golf_lrz_") as tmp:
        src, dst = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.lrz")
        with open(src, "wb") as f:
            f.write(data)
        _run_lrzip(["-z", "-L", str(level), "-q", "-f", "-o", dst, src])
        with open(dst, "rb") as f:
            return f.read()


def lrzip_decompress(data: bytes) -> bytes:
    with tempfile.TemporaryDirectory(prefix="golf_lrz_") as tmp:
        src, dst = os.path.join(tmp, "in.lrz"), os.path.join(tmp, "out.bin")
        with open(src, "wb") as f:
            f.write(data)
        _run_lrzip(["-d", "-q", "-f", "-o", dst, src])
        with open(dst, "rb") as f:
            return f.read()


@dataclass(frozen=True)
class Codec:
    backend: str  # "lrzip" | "brotli"
    lrzip_level: int = 9
    brotli_quality: int = 11

    def compress(self, data: bytes) -> tuple[int, bytes]:
        if not data:
            return CODEC_EMPTY, b""
        if self.backend == "lrzip":
            return CODEC_LRZIP, lrzip_compress(data, self.lrzip_level)
        return CODEC_BROTLI, brotli.compress(data, quality=self.brotli_quality, lgwin=24)


def decompress(codec: int, data: bytes) -> bytes:
    if codec == CODEC_EMPTY:
        return b""
    if codec == CODEC_BROTLI:
        return brotli.decompress(data)
    if codec == CODEC_LRZIP:
        if not lrzip_available():
            raise GolfError(f"this artifact's per-group streams are lrzip-compressed but {LRZIP_MISSING}")
        return lrzip_decompress(data)
    raise GolfError(f"per-group artifact: unknown stream codec {codec}; was it written by a newer golf?")


def pack_streams(streams: list[tuple[int, bytes]]) -> bytes:
    head = MAGIC + struct.pack("<BI", VERSION, len(streams))
    head += b"".join(struct.pack("<BQ", codec, len(data)) for codec, data in streams)
    return head + b"".join(data for _, data in streams)


def unpack_streams(body: bytes) -> list[tuple[int, bytes]]:
    if not body.startswith(MAGIC):
        raise GolfError("per-group artifact: bad magic; the file is not a per-group container")
    version, n = struct.unpack_from("<BI", body, len(MAGIC))
    if version != VERSION:
        raise GolfError(f"per-group artifact version {version}; this golf reads version {VERSION}")
    off = len(MAGIC) + 5
    table = [struct.unpack_from("<BQ", body, off + 9 * i) for i in range(n)]
    off += 9 * n
    streams = []
    for codec, length in table:
        streams.append((codec, body[off : off + length]))
        off += length
    return streams


# ---------------------------------------------------------------------------------------------
# Serialize / deserialize
# ---------------------------------------------------------------------------------------------


def serialize(
    state: QuantState,
    codec: Codec,
    *,
    simsort: tuple[str, ...],
    min_group_numel: int,
    transpose: bool = True,
    sort_device: torch.device | str = "cpu",
    workers: int = 0,
) -> bytes:
    groups: dict[str, list[str]] = {}
    for name, qt in state:
        q = qt.tensors.get("q")
        if q is not None and q.dtype == torch.int8 and q.ndim == 2 and q.numel() > min_group_numel:
            groups.setdefault(group_key(name), []).append(name)

    remainder = QuantState(entries={}, meta=state.meta)
    for name, qt in state:
        tensors = dict(qt.tensors)
        if any(name in names for names in groups.values()):
            tensors["q"] = torch.empty(0, dtype=torch.int8)  # placeholder keeps the tensor order
        remainder.entries[name] = QuantizedTensor(qt.scheme, qt.shape, qt.dtype, tensors, qt.route, qt.meta)

    manifest: dict = {"transpose": transpose, "groups": []}
    perms: list[bytes] = []
    blobs: list[bytes] = []
    for key, names in groups.items():
        sort = any(key.endswith(s) for s in simsort)
        parts, rows_info = [], []
        for name in names:
            q = state.entries[name].tensors["q"]
            rows, cols = q.shape
            perm_kind = None
            if sort:
                order = similarity_order(q, sort_device)
                q = q.index_select(0, order)
                perm_kind = perm_dtype(rows).name
                perms.append(order.numpy().astype(perm_kind).tobytes())
            arr = q.numpy()
            parts.append((np.ascontiguousarray(arr.T) if transpose else arr).tobytes())
            rows_info.append({"name": name, "rows": rows, "cols": cols, "perm": perm_kind})
        manifest["groups"].append({"key": key, "tensors": rows_info})
        blobs.append(b"".join(parts))

    n_workers = workers or max(1, min(len(blobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        group_streams = list(pool.map(codec.compress, blobs))
    remainder_raw = pack_state(remainder)
    streams = [
        (CODEC_BROTLI, brotli.compress(json.dumps(manifest, separators=(",", ":")).encode(), quality=11)),
        (CODEC_BROTLI, brotli.compress(remainder_raw, quality=codec.brotli_quality, lgwin=24)),
        Codec("brotli").compress(b"".join(perms)),
        *group_streams,
    ]
    return pack_streams(streams)


def deserialize(body: bytes, workers: int = 0) -> QuantState:
    streams = unpack_streams(body)
    manifest = json.loads(decompress(*streams[0]))
    state = unpack_state(decompress(*streams[1]))
    perms = decompress(*streams[2])
    group_streams = streams[3:]
    if len(group_streams) != len(manifest["groups"]):
        raise GolfError("per-group artifact: the manifest and the stream table disagree; the file is damaged")
    n_workers = workers or max(1, min(len(group_streams), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        raws = list(pool.map(lambda s: decompress(*s), group_streams))
    perm_off = 0
    for group, raw in zip(manifest["groups"], raws, strict=True):
        data = np.frombuffer(raw, dtype=np.int8)
        off = 0
        for info in group["tensors"]:
            rows, cols = info["rows"], info["cols"]
            chunk = data[off : off + rows * cols]
            off += rows * cols
            arr = chunk.reshape(cols, rows).T if manifest["transpose"] else chunk.reshape(rows, cols)
            if info["perm"] is not None:
                dt = np.dtype(info["perm"])
                order = np.frombuffer(perms, dtype=dt, count=rows, offset=perm_off).astype(np.int64)
                perm_off += rows * dt.itemsize
                restored = np.empty_like(arr)
                restored[order] = arr  # row i of the sorted matrix is original row order[i]
                arr = restored
            state.entries[info["name"]].tensors["q"] = torch.from_numpy(np.array(arr, dtype=np.int8, order="C", copy=True))
    return state
