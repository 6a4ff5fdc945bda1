"""Time the fused LeakyReLU² MLP against compiled eager and PR #1787's kernel (GPU).

    python bench/bench_fused_mlp.py --ref path/to/pr1787/train_gpt.py [--tokens 98304 --width 512 --hidden 2048] [--sweep]

Times forward+backward of ``leaky_relu(x W1^T, 0.5)^2 W2^T`` in bf16 at the record's shape by
default, for: ``torch.compile`` of the eager MLP; PR #1787's fused kernel (extracted at run time
from the record script given with ``--ref``, never stored in golf); golf's op with the persistent
TMA kernel (the default on Hopper) and with the pointer kernel. Prints the median time, TFLOP/s
over the six matmuls, the peak memory a step allocates above its inputs, ratios to compiled eager
and to the reference, and each variant's error against compiled eager. ``--sweep`` also times
the fused matmul kernels alone beside the reference's, and other tile shapes of the TMA kernel.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fused_ce import ROOT, load_reference, measure, rel_err  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REF_MLP_NAMES = (
    "linear_leaky_relu_square_kernel", "linear_leaky_relu_square",
    "FusedLinearLeakyReLUSquareFunction", "FusedLeakyReLUSquareMLP",
)


def eager_mlp(x, w1, w2):
    return F.linear(F.leaky_relu(F.linear(x, w1), negative_slope=0.5).square(), w2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="path to PR #1787's train_gpt.py (fetched, never committed)")
    parser.add_argument("--tokens", type=int, default=98_304)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=2_048)
    parser.add_argument("--sweep", action="store_true", help="also time the matmul kernels alone and other TMA tile shapes")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_fused_mlp needs a CUDA device")

    from plugins.fused_mlp import ops

    ref = load_reference(args.ref, REF_MLP_NAMES, "pr1787_fused_mlp")
    torch.manual_seed(0)
    m, d, h = args.tokens, args.width, args.hidden
    x = torch.randn(m, d, device="cuda", dtype=torch.bfloat16).requires_grad_()
    w1 = (torch.randn(h, d, device="cuda") / d**0.5).to(torch.bfloat16).requires_grad_()
    w2 = (torch.randn(d, h, device="cuda") / h**0.5).to(torch.bfloat16).requires_grad_()
    grad_out = torch.randn(m, d, device="cuda", dtype=torch.bfloat16)
    leaves = [x, w1, w2]
    compiled = torch.compile(eager_mlp)

    variants = {
        "compiled eager": lambda: compiled(x, w1, w2),
        "PR #1787 kernel": lambda: ref.FusedLeakyReLUSquareMLP(x, w1, w2),
        "golf tma": lambda: ops.fused_leaky_relu_sq_mlp(x, w1, w2, 0.5, "tma"),
        "golf portable": lambda: ops.fused_leaky_relu_sq_mlp(x, w1, w2, 0.5, "portable"),
    }

    def outputs_of(fn):
        for t in leaves:
            t.grad = None
        out = fn()
        out.backward(grad_out)
        result = [out.detach().clone()] + [t.grad.detach().clone() for t in leaves]
        for t in leaves:
            t.grad = None
        return result

    base = outputs_of(variants["compiled eager"])
    flops = 6 * 2 * m * d * h
    rows = []
    for name, fn in variants.items():
        errs = [rel_err(a, b) for a, b in zip(outputs_of(fn), base)]

        def step(fn=fn):
            fn().backward(grad_out)

        ms, peak = measure(step, leaves)
        rows.append((name, ms, peak, max(errs)))
        print(f"  measured {name}: {ms:.3f} ms", flush=True)

    print(f"\nfused MLP forward+backward, x [{m}, {d}] W1 [{h}, {d}] W2 [{d}, {h}] bf16, {torch.cuda.get_device_name()}")
    print(f"six matmuls: {flops / 1e9:.0f} GFLOP; at 790 TFLOP/s {flops / 790e12 * 1e3:.2f} ms")
    eager_ms, ref_ms, ref_peak = rows[0][1], rows[1][1], rows[1][2]
    print(f"{'variant':<16} {'fwd+bwd ms':>10} {'TFLOP/s':>8} {'vs eager':>8} {'vs #1787':>8} {'peak MiB':>9} {'mem vs #1787':>12} {'max rel err':>11}")
    for name, ms, peak, err in rows:
        print(f"{name:<16} {ms:>10.3f} {flops / ms / 1e9:>8.0f} {eager_ms / ms:>7.2f}x {ref_ms / ms:>7.2f}x {peak:>9.0f} {peak / ref_peak:>11.2f}x {err:>11.1e}")

    if args.sweep:
        sweep(ops, ref, x.detach(), w1.detach(), w2.detach(), grad_out, flops)


def sweep(ops, ref, x, w1, w2, grad_out, flops) -> None:
    """The fused matmul kernels alone beside the reference's, then tile shapes of the whole op."""
    leaves = [t.requires_grad_() for t in (x, w1, w2)]
    with torch.no_grad():
        pre, _post = ops.act_matmul(x, w1, b_kn=False, aux=None, slope=0.5)
        kernel_flops = 2 * x.shape[0] * x.shape[1] * w1.shape[0]
        rows = [
            ("forward matmul+act", lambda: ops.act_matmul(x, w1, b_kn=False, aux=None, slope=0.5),
             lambda: ref.linear_leaky_relu_square(x, w1)),
            ("backward matmul*act'", lambda: ops.act_matmul(grad_out, w2, b_kn=True, aux=pre, slope=0.5),
             lambda: ref.linear_leaky_relu_square(grad_out, w2.T.contiguous(), aux=pre)),
        ]
        print("\nkernels alone: golf / PR #1787 (ms, TFLOP/s)")
        for name, ours, theirs in rows:
            a, b = measure(ours, [])[0], measure(theirs, [])[0]
            print(f"  {name:<22} {a:.3f} ({kernel_flops / a / 1e9:.0f}) / {b:.3f} ({kernel_flops / b / 1e9:.0f})", flush=True)
    print("tile shapes of golf's TMA kernel: forward kernel, backward kernel, whole forward+backward (ms)")
    real = dict(ops.TMA_CONFIG)
    configs = [
        dict(BM=128, BN=256, BK=64, SPLIT=True, num_warps=8, stages_fwd=4, stages_bwd=3),
        dict(BM=128, BN=256, BK=64, SPLIT=True, num_warps=8, stages_fwd=3, stages_bwd=3),
        dict(BM=256, BN=128, BK=64, SPLIT=True, num_warps=8, stages_fwd=3, stages_bwd=3),
        dict(BM=256, BN=128, BK=64, SPLIT=True, num_warps=8, stages_fwd=4, stages_bwd=3),
        dict(BM=128, BN=128, BK=64, SPLIT=False, num_warps=8, stages_fwd=4, stages_bwd=4),
        dict(BM=128, BN=256, BK=64, SPLIT=True, num_warps=8, stages_fwd=4, stages_bwd=3, GROUP_M=16),
    ]
    for cfg in configs:
        ops.TMA_CONFIG = {**real, **cfg}
        try:
            with torch.no_grad():
                fwd = measure(lambda: ops.act_matmul(x, w1, b_kn=False, aux=None, slope=0.5, impl="tma"), [])[0]
                bwd = measure(lambda: ops.act_matmul(grad_out, w2, b_kn=True, aux=pre, slope=0.5, impl="tma"), [])[0]
            ms = measure(lambda: ops.fused_leaky_relu_sq_mlp(*leaves, 0.5, "tma").backward(grad_out), leaves)[0]
            print(f"  {cfg}: {fwd:.3f} / {bwd:.3f} / {ms:.3f} ({flops / ms / 1e9:.0f} TFLOP/s)", flush=True)
        except Exception as exc:  # a tile that does not fit shared memory fails to launch
            print(f"  {cfg}: failed: {str(exc).splitlines()[0][:160]}", flush=True)
    ops.TMA_CONFIG = real


if __name__ == "__main__":
    main()
