"""Time the fused softcapped cross-entropy against compiled eager and PR #1787's kernel (GPU).

    python bench/bench_fused_ce.py --ref path/to/pr1787/train_gpt.py [--rows 98304 --vocab 8192] [--sweep]

Times forward+backward of ``mean CE(C tanh(x / C), y)`` on bf16 logits ``x [rows, vocab]``
(the record's shape by default) for: ``torch.compile`` of golf's eager reference; the PR #1787
kernel, extracted at run time from the record script given with ``--ref`` (never stored in golf);
golf's two-pass kernels (the default) and its single-pass kernel. Prints the median time
(``triton.testing.do_bench``), the peak memory a step allocates above its inputs, the ratios to
compiled eager and to the reference, and each variant's error against compiled eager.
``--sweep`` also times each kernel alone over launch shapes, beside the reference's kernels.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REF_CE_NAMES = (
    "_FUSED_CE_LIBRARY", "_FUSED_CE_BLOCK_SIZE", "_FUSED_CE_NUM_WARPS",
    "_softcapped_ce_fwd_kernel", "_softcapped_ce_bwd_kernel", "_validate_softcapped_ce_inputs",
    "softcapped_ce_op", "softcapped_ce_backward_op", "_softcapped_ce_setup_context",
    "_softcapped_ce_backward", "softcapped_cross_entropy",
)

_PRELUDE = """import math
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor
"""


def load_reference(script: str | Path, names: tuple[str, ...], module_name: str):
    """Import the top-level definitions ``names`` of a record script, without running the script.

    Takes each named function, class or assignment, the functions decorated through one of them
    (``@op.register_fake``) and the statements that call a method of one (``op.register_autograd``),
    writes them under a prelude of imports to a temporary module and imports it (Triton needs the
    source of a kernel in a real file).
    """
    source = Path(script).read_text()
    lines = source.splitlines()
    wanted = set(names)

    def refers(node) -> bool:
        return any(isinstance(n, ast.Name) and n.id in wanted for n in ast.walk(node))

    chunks = []
    for node in ast.parse(source).body:
        keep = False
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            keep = node.name in wanted or any(refers(d) for d in node.decorator_list)
        elif isinstance(node, ast.Assign):
            keep = any(isinstance(t, ast.Name) and t.id in wanted for t in node.targets)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            keep = refers(node.value.func)
        if keep:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            chunks.append("\n".join(lines[first - 1 : node.end_lineno]))
    found = {n for n in wanted if any(f"def {n}(" in c or f"class {n}" in c or c.startswith(f"{n} =") for c in chunks)}
    if found != wanted:
        raise SystemExit(f"{script}: could not find {sorted(wanted - found)}; is this the PR #1787 record script?")
    path = Path(tempfile.mkdtemp(prefix="golf_ref_")) / f"{module_name}.py"
    path.write_text(_PRELUDE + "\n\n" + "\n\n\n".join(chunks) + "\n")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def measure(step, grad_to_none, reps_ms: int = 400) -> tuple[float, float]:
    """(median ms, peak MiB allocated by one step above what was allocated before it)."""
    import triton.testing

    step()  # compile / autotune outside the timing
    for t in grad_to_none:
        t.grad = None
    torch.cuda.synchronize()
    ms = triton.testing.do_bench(step, warmup=100, rep=reps_ms, grad_to_none=grad_to_none, return_mode="median")
    for t in grad_to_none:
        t.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    for t in grad_to_none:
        t.grad = None
    return ms, peak


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="path to PR #1787's train_gpt.py (fetched, never committed)")
    parser.add_argument("--rows", type=int, default=98_304)
    parser.add_argument("--vocab", type=int, default=8_192)
    parser.add_argument("--softcap", type=float, default=30.0)
    parser.add_argument("--sweep", action="store_true", help="also time each kernel alone over launch shapes")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_fused_ce needs a CUDA device")

    from golf_core.model.gpt import softcapped_cross_entropy
    from plugins.fused_ce import ops

    ref = load_reference(args.ref, REF_CE_NAMES, "pr1787_fused_ce")
    torch.manual_seed(0)
    n, v, c = args.rows, args.vocab, args.softcap
    # Raw head outputs of a trained model are O(10); a wide spread also exercises the softcap.
    logits = (torch.randn(n, v, device="cuda") * 8.0).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, v, (n,), device="cuda")
    eager = torch.compile(softcapped_cross_entropy)

    variants = {
        "compiled eager": lambda: eager(logits, targets, c),
        "PR #1787 kernel": lambda: ref.softcapped_cross_entropy(logits, targets, c),
        "golf two-pass": lambda: ops.fused_softcapped_cross_entropy(logits, targets, c),
        "golf single-pass": lambda: ops.single_pass_softcapped_cross_entropy(logits, targets, c, grad_scale=1.0),
    }

    def grads_of(fn):
        logits.grad = None
        loss = fn()
        loss.backward()
        out = (loss.detach().clone(), logits.grad.detach().clone())
        logits.grad = None
        return out

    base_loss, base_grad = grads_of(variants["compiled eager"])
    rows = []
    for name, fn in variants.items():
        loss, grad = grads_of(fn)
        err = (abs(float(loss - base_loss)) / abs(float(base_loss)), rel_err(grad, base_grad))
        del loss, grad

        def step(fn=fn):
            fn().backward()

        ms, peak = measure(step, [logits])
        fwd_ms = None
        if name != "compiled eager":
            with torch.no_grad():
                fwd_ms = measure(lambda fn=fn: fn(), [])[0]
        rows.append((name, ms, fwd_ms, peak, err))
        print(f"  measured {name}: {ms:.3f} ms", flush=True)

    floor_two = 3 * n * v * 2 / 3.0e12 * 1e3
    floor_one = 2 * n * v * 2 / 3.0e12 * 1e3
    print(f"\nfused CE forward+backward, logits [{n}, {v}] bf16, softcap {c}, {torch.cuda.get_device_name()}")
    print(f"memory floor at 3.0 TB/s: two passes (read, read + write) {floor_two:.2f} ms; single pass (read + write) {floor_one:.2f} ms")
    eager_ms, ref_ms, ref_peak = rows[0][1], rows[1][1], rows[1][3]
    print(f"{'variant':<18} {'fwd+bwd ms':>10} {'fwd ms':>7} {'vs eager':>8} {'vs #1787':>8} {'peak MiB':>9} {'mem vs #1787':>12} {'loss err':>9} {'grad err':>9}")
    for name, ms, fwd_ms, peak, (lerr, gerr) in rows:
        fwd = f"{fwd_ms:.3f}" if fwd_ms is not None else "-"
        print(f"{name:<18} {ms:>10.3f} {fwd:>7} {eager_ms / ms:>7.2f}x {ref_ms / ms:>7.2f}x {peak:>9.0f} {peak / ref_peak:>11.2f}x {lerr:>9.1e} {gerr:>9.1e}")

    if args.sweep:
        sweep(ops, ref, logits.detach(), targets, c)


def sweep(ops, ref, x, targets, c) -> None:
    """Each kernel alone over launch shapes, next to the reference's two kernels."""
    n = x.shape[0]
    grad_rows = torch.full((n,), 1.0 / n, device=x.device)
    with torch.no_grad():
        lse = torch.ops.golf_fused_ce.softcap_ce(x, targets, c)[1]
        ref_lse = ref.softcapped_ce_op(x, targets, c)[1]
        ref_fwd = measure(lambda: ref.softcapped_ce_op(x, targets, c), [])[0]
        ref_bwd = measure(lambda: ref.softcapped_ce_backward_op(x, targets, ref_lse, grad_rows, c), [])[0]
        print(f"\nkernels alone (ms); PR #1787: forward {ref_fwd:.3f}, backward {ref_bwd:.3f}")
        saved = {k: dict(v) for k, v in ops.CONFIG.items()}
        for block, warps in [(512, 4), (1024, 4), (1024, 8), (2048, 4), (2048, 8), (4096, 8), (8192, 16)]:
            ops.CONFIG["fwd"] = {"block": block, "warps": warps}
            ops.CONFIG["bwd"] = {"block": block, "warps": warps}
            fwd = measure(lambda: torch.ops.golf_fused_ce.softcap_ce(x, targets, c), [])[0]
            bwd = measure(lambda: torch.ops.golf_fused_ce.softcap_ce_backward(x, targets, lse, grad_rows, c), [])[0]
            print(f"  BLOCK {block:5d} warps {warps:2d}: forward {fwd:.3f}  backward {bwd:.3f}", flush=True)
        ops.CONFIG.update({k: dict(v) for k, v in saved.items()})
        for warps in (8, 16, 32):
            ops.CONFIG["fused"] = {"block": 16384, "warps_per_512": 8, "max_warps": warps}
            one = measure(lambda: torch.ops.golf_fused_ce.softcap_ce_grad(x, targets, c, 1.0), [])[0]
            print(f"  single pass, whole row, warps {warps:2d}: {one:.3f}", flush=True)
        ops.CONFIG.update({k: dict(v) for k, v in saved.items()})


if __name__ == "__main__":
    main()
