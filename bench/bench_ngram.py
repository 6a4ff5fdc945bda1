"""N-gram tilt hint generation: golf's vectorized numpy generator, tokens per second on this CPU.

The real validation set has 40.5M tokens; the reference C++ kernel of PR #1420 / #1514 generates
its hints in about 32 s (1.26M tokens/s). This bench generates hints over a realistic stream and
prints golf's throughput in two modes:

* ``stream``: the whole prefix in large blocks (what a rank does to catch up with its slice);
* ``steps``:  blocks of ``--step`` positions (what the scoring pass asks for, one step at a time);

for the exact generator (kernel semantics) and ``lazy_orders``. With ``--kernel-source`` pointing
at the reference ``fused_expert_kernel.cpp`` (read from your checkout of the record, compiled into
a temporary directory with g++, never part of golf) it also runs the kernel on the same tokens and
reports its speed and whether the hints are identical.

Tokens: ``--data DIR`` (a golf dataset: its validation then training shards) or, by default, the
FineWeb sample in ``../shared/data`` tokenized with the challenge's SP8192 tokenizer (BOS before
each document; cached under ``~/.cache/golf/bench``). Usage::

    python bench/bench_ngram.py --tokens 4000000
    python bench/bench_ngram.py --kernel-source /path/to/ngram/fused_expert_kernel.cpp
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


def sample_tokens(limit: int) -> tuple[np.ndarray, Path]:
    sample, model = SHARED / "fineweb_sample.jsonl.gz", SHARED / "fineweb_8192_bpe.model"
    if not sample.is_file() or not model.is_file():
        sys.exit(f"no token source: pass --data DIR, or provide {sample} and {model}")
    cache = Path.home() / ".cache" / "golf" / "bench" / "fineweb_sample_sp8192.npy"
    if not cache.is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(model))
        t0 = time.perf_counter()
        parts = []
        with gzip.open(sample, "rt", encoding="utf-8") as fh:
            for line in fh:
                parts.append(np.array([1] + sp.encode(json.loads(line)["text"]), dtype=np.uint16))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, np.concatenate(parts))
        print(f"tokenized {sample.name} in {time.perf_counter() - t0:.1f}s -> {cache}")
    return np.load(cache)[:limit].astype(np.int64), model


def dataset_tokens(data: Path, limit: int) -> tuple[np.ndarray, Path]:
    from golf_core.data import find_shards, read_shard

    files = find_shards(data, "val") + find_shards(data, "train")
    parts, total = [], 0
    for f in files:
        parts.append(read_shard(f).astype(np.int64))
        total += parts[-1].size
        if total >= limit:
            break
    return np.concatenate(parts)[:limit], data / "tokenizer.model"


def luts(model: Path):
    from golf_core.data import ByteTable, load_tokenizer

    table = ByteTable.from_sentencepiece(load_tokenizer(model))
    return table.has_leading_space.numpy(), table.is_boundary.numpy()


def run_golf(tokens: np.ndarray, ws, bnd, step: int, lazy: bool, betas: dict) -> tuple[float, np.ndarray, np.ndarray]:
    from plugins.ngram_tilt.hints import HintGenerator

    gen = HintGenerator(ws, bnd, lazy_orders=lazy, expected_positions=tokens.size, **betas)
    end = tokens.size - 1
    t0 = time.perf_counter()
    if step <= 0:
        gen.advance(tokens, end)
    else:
        for e in range(min(step, end), end + step, step):
            gen.advance(tokens, min(e, end))
    seconds = time.perf_counter() - t0
    h, b = gen.hints(0, end + 1)
    return seconds, h.copy(), b.copy()


def run_kernel(source: Path, tokens: np.ndarray, ws, bnd, betas: dict, table_bits: int):
    work = Path(tempfile.mkdtemp(prefix="golf-ngram-kernel-"))
    lib_path = work / "kernel.so"
    subprocess.run(["g++", "-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", str(source), "-o", str(lib_path)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.ctxmixer_new.restype = ctypes.c_void_p
    lib.ctxmixer_new.argtypes = [ctypes.c_double] * 6 + [ctypes.c_int, ctypes.c_double, ctypes.c_int]
    for name, n in [("ctxmixer_set_tokens", 3), ("ctxmixer_set_luts", 4), ("ctxmixer_get_hints_batch", 5), ("ctxmixer_delete", 1)]:
        getattr(lib, name).restype = None
    lib.ctxmixer_set_tokens.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.ctxmixer_set_luts.argtypes = [ctypes.c_void_p] * 4
    lib.ctxmixer_get_hints_batch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.ctxmixer_delete.argtypes = [ctypes.c_void_p]
    mixer = lib.ctxmixer_new(
        betas["base_beta"], betas["agree_bonus"], betas["within_threshold"], betas["within_beta"],
        betas["word_threshold"], betas["word_beta"], table_bits, 1.0, 2,
    )
    toks = np.ascontiguousarray(tokens, dtype=np.int64)
    ls, bd, bb = (np.ascontiguousarray(ws, dtype=np.uint8), np.ascontiguousarray(bnd, dtype=np.uint8), np.zeros(ws.size, np.int16))
    lib.ctxmixer_set_tokens(mixer, toks.ctypes.data, toks.size)
    lib.ctxmixer_set_luts(mixer, bb.ctypes.data, ls.ctypes.data, bd.ctypes.data)
    pos = np.arange(1, toks.size, dtype=np.int64)
    hints = np.full(toks.size, -1, dtype=np.int32)
    out_b = np.zeros(toks.size, dtype=np.float64)
    t0 = time.perf_counter()
    lib.ctxmixer_get_hints_batch(mixer, pos.ctypes.data, pos.size, hints[1:].ctypes.data, out_b[1:].ctypes.data)
    seconds = time.perf_counter() - t0
    lib.ctxmixer_delete(mixer)
    return seconds, hints.astype(np.int64), out_b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="golf dataset directory (default: the shared FineWeb sample, SP8192)")
    ap.add_argument("--tokens", type=int, default=4_000_000, help="stream length")
    ap.add_argument("--step", type=int, default=2048, help="positions per advance in 'steps' mode")
    ap.add_argument("--kernel-source", type=Path, help="reference fused_expert_kernel.cpp to compile and compare")
    ap.add_argument("--kernel-table-bits", type=int, default=24, help="the kernel's open_table_bits (record: 26)")
    ap.add_argument("--all-experts", action="store_true", help="within/word betas 0.92/0.5 (kernel defaults) instead of the record's 0/0")
    args = ap.parse_args()
    tokens, model = dataset_tokens(args.data, args.tokens) if args.data else sample_tokens(args.tokens)
    ws, bnd = luts(model)
    betas = dict(base_beta=2.0, agree_bonus=0.1, within_threshold=0.25, within_beta=0.0, word_threshold=0.8, word_beta=0.0)
    if args.all_experts:
        betas.update(within_beta=0.92, word_beta=0.5)
    n = tokens.size
    print(f"stream: {n:,} tokens from {args.data or 'the FineWeb sample'} (vocab {ws.size}); betas {betas}")
    rows = []
    exact_hints = None
    for mode, step in (("stream", 0), ("steps", args.step)):
        for lazy in (False, True):
            seconds, h, b = run_golf(tokens, ws, bnd, step, lazy, betas)
            if mode == "stream" and not lazy:
                exact_hints, exact_betas = h, b
            same = "" if exact_hints is None else f"{(h == exact_hints).mean() * 100:.4f}% equal to exact"
            name = f"golf {mode}{'' if step == 0 else f' ({step}/step)'}{' lazy' if lazy else ''}"
            rows.append((name, seconds, same))
    if args.kernel_source:
        seconds, kh, kb = run_kernel(args.kernel_source, tokens, ws, bnd, betas, args.kernel_table_bits)
        equal = (kh == exact_hints) & (np.abs(kb - exact_betas) < 1e-12)
        rows.append((f"C++ kernel (table bits {args.kernel_table_bits})", seconds, f"{equal.mean() * 100:.4f}% equal to golf exact"))
    reference = 40_540_160 / 32.0
    print(f"{'generator':42s} {'seconds':>9s} {'tokens/s':>12s} {'vs 1.26M/s':>10s}  hints")
    for name, seconds, note in rows:
        rate = n / seconds
        print(f"{name:42s} {seconds:9.2f} {rate:12,.0f} {rate / reference:10.2f}  {note}")
    hinted = (exact_hints >= 0).mean()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    default = next(seconds for name, seconds, _ in rows if name == "golf stream lazy")
    print(f"hinted positions: {hinted * 100:.1f}%   peak RSS of this process: {peak:,.0f} MiB   "
          f"(40.5M tokens at the default, lazy 'stream' rate: {40_540_160 / (n / default):.0f} s)")


if __name__ == "__main__":
    main()
