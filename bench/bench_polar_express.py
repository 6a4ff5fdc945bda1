"""Polar Express vs the classic Newton-Schulz coefficients: cost of one orthogonalization step, and loss after training.

Part 1 times one Muon orthogonalization step (every matrix of the model once, 5 iterations, the
records' bfloat16 path) at the top record's shapes: 11 layers, width 512, 8 query / 4 KV heads of
64, MLP 4x. ``banked`` is the records' layout (PR #1855 orthogonalizes 4 weight banks, batched:
qo 22x512x512, kv 22x256x512, mlp_up 11x2048x512, mlp_down 11x512x2048); ``matrices`` is golf's
core Muon (one call per matrix: c_q, c_k, c_v, attn.proj, mlp.fc, mlp.proj per layer). Both
schedules do 3 matmuls per iteration, so the expected ratio is about 1.0. It also prints the
range of the output singular values for a Gaussian input of each shape (square Gaussian matrices
have normalized singular values below 1e-3, which no 5-step schedule lifts to 1; the others
show Polar Express's band of about 1 +- 0.14 against the classic 0.68..1.14).

Part 2 trains a small stack for N steps twice, with and without ``polar_express``, same seed,
data and settings (fixed step count, no wall-clock cap), and prints both final losses.

Usage::

    python bench/bench_polar_express.py                      # CUDA: record shapes, 200 training steps
    python bench/bench_polar_express.py --data DIR           # train on prepared shards (golf data prepare)
    python bench/bench_polar_express.py --smoke              # CPU smoke check: small shapes, 5 steps
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from golf_core.optim.newton_schulz import newton_schulz5  # noqa: E402
from plugins.polar_express import polar_express  # noqa: E402

SCHEDULES = {"classic": newton_schulz5, "polar_express": polar_express}


# ---------------------------------------------------------------------------------------------
# Part 1: one orthogonalization step
# ---------------------------------------------------------------------------------------------


def record_shapes(layers: int, dim: int, heads: int, kv_heads: int, mlp_mult: int, layout: str) -> list[tuple[str, tuple[int, ...], int]]:
    """(label, shape of one call, calls per step) for one layout."""
    kv_dim = kv_heads * (dim // heads)
    hidden = mlp_mult * dim
    if layout == "banked":
        return [
            ("qo_bank", (2 * layers, dim, dim), 1),
            ("kv_bank", (2 * layers, kv_dim, dim), 1),
            ("mlp_up_bank", (layers, hidden, dim), 1),
            ("mlp_down_bank", (layers, dim, hidden), 1),
        ]
    return [
        ("attn.c_q", (dim, dim), layers),
        ("attn.c_k", (kv_dim, dim), layers),
        ("attn.c_v", (kv_dim, dim), layers),
        ("attn.proj", (dim, dim), layers),
        ("mlp.fc", (hidden, dim), layers),
        ("mlp.proj", (dim, hidden), layers),
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, x: torch.Tensor, calls: int, device: torch.device) -> float:
    """Seconds for ``calls`` back-to-back calls of ``fn(x, 5)``."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(x, 5)
    sync(device)
    return time.perf_counter() - t0


def singular_value_range(fn, x: torch.Tensor) -> tuple[float, float]:
    out = fn(x, 5).float()
    sv = torch.linalg.svdvals(out if out.ndim == 2 else out[0])
    return float(sv.min()), float(sv.max())


def bench_orthogonalization(args, device: torch.device) -> dict:
    use_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    if use_compile:
        # One static graph per shape (8 shapes per schedule at the record's sizes): no
        # dynamic-shape recompiles inside the timed loop, no cache eviction.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    fns = {name: (torch.compile(fn, dynamic=False) if use_compile else fn) for name, fn in SCHEDULES.items()}
    layouts = ["banked", "matrices"] if args.layout == "both" else [args.layout]
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    results = {}
    print(f"== one orthogonalization step (5 iterations, bfloat16) on {device}, compile={use_compile}, "
          f"shapes: {args.layers} layers, dim {args.dim}, heads {args.heads}/{args.kv_heads}, mlp {args.mlp_mult}x ==")
    for layout in layouts:
        shapes = record_shapes(args.layers, args.dim, args.heads, args.kv_heads, args.mlp_mult, layout)
        print(f"-- layout: {layout}")
        print(f"{'tensor':<14} {'shape':<18} {'calls':>5} {'classic ms':>11} {'polar ms':>9} {'ratio':>6}   {'sv classic':<15} {'sv polar':<15}")
        total = {name: 0.0 for name in SCHEDULES}
        rows = []
        for label, shape, calls in shapes:
            x = torch.randn(shape, generator=gen).to(device)
            for fn in fns.values():  # compile and warm up, off the clock
                for _ in range(args.warmup):
                    fn(x, 5)
            samples = {name: [] for name in SCHEDULES}
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                for name, fn in fns.items():
                    samples[name].append(time_call(fn, x, calls, device))
            ms = {name: 1000 * statistics.median(s) for name, s in samples.items()}
            sv = {name: singular_value_range(fn, x) for name, fn in fns.items()}
            for name in SCHEDULES:
                total[name] += ms[name]
            ratio = ms["polar_express"] / ms["classic"]
            rows.append({"tensor": label, "shape": list(shape), "calls": calls, "ms": ms, "ratio": ratio, "singular_values": sv})
            print(f"{label:<14} {'x'.join(map(str, shape)):<18} {calls:>5} {ms['classic']:>11.3f} {ms['polar_express']:>9.3f} {ratio:>6.3f}   "
                  f"[{sv['classic'][0]:.3f}, {sv['classic'][1]:.3f}]  [{sv['polar_express'][0]:.3f}, {sv['polar_express'][1]:.3f}]")
        ratio = total["polar_express"] / total["classic"]
        print(f"{'step total':<14} {'':<18} {'':>5} {total['classic']:>11.3f} {total['polar_express']:>9.3f} {ratio:>6.3f}")
        results[layout] = {"rows": rows, "total_ms": total, "ratio": ratio}
    return results


# ---------------------------------------------------------------------------------------------
# Part 2: the same small stack trained with and without polar_express
# ---------------------------------------------------------------------------------------------


def train_overrides(args, device: torch.device, out: Path) -> list[str]:
    cuda = device.type == "cuda"
    overrides = [
        f"run.device='{device.type}'",
        f"run.seed={args.seed}",
        "run.max_wallclock_seconds=0",  # fixed step count: both runs see the same batches
        f"run.out_dir='{out.as_posix()}'",
        f"train.iterations={args.train_steps}",
        "train.grad_accum_steps=1",
        f"train.train_log_every={max(args.train_steps // 20, 1)}",
        "train.val_loss_every=0",
        f"train.compile_warmup_steps={10 if cuda else 0}",
        "techniques.warmdown.warmdown_frac=0.5",  # a real warm-down within N steps (iters-based would barely start)
    ]
    if args.smoke:
        overrides += [
            "model.num_layers=2", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2",
            "train.train_batch_tokens=1024", "train.train_seq_len=128", "train.val_batch_tokens=4096",
            "data.val_tokens_limit=4096",
        ]
    else:
        overrides += [
            "model.num_layers=4", "model.model_dim=256", "model.num_heads=4", "model.num_kv_heads=2", "model.mlp_mult=4",
            "train.train_batch_tokens=32768", "train.train_seq_len=512", "train.val_batch_tokens=65536",
        ]
    if args.data is not None:
        import sentencepiece as spm

        data = args.data.resolve()
        vocab = spm.SentencePieceProcessor(model_file=str(data / "tokenizer.model")).vocab_size()
        overrides += [f"data.dataset='{data.as_posix()}'", f"model.vocab_size={vocab}"]
    else:
        overrides += ["data.dataset='sample'", "model.vocab_size=1024"]
    return overrides + list(args.set)


def bench_training(args, device: torch.device) -> dict:
    from golf_core.catalog import load_catalog
    from golf_core.stack import resolve
    from golf_core.train import train

    catalog = load_catalog()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        overrides = train_overrides(args, device, Path(tmp))
        print(f"\n== training {args.train_steps} steps, same seed and data; overrides: {' '.join(overrides)}")
        for label, enable in (("classic", []), ("polar_express", ["polar_express"])):
            stack = resolve(args.stack, catalog, overrides=overrides, enable=enable)
            t0 = time.perf_counter()
            report = train(stack, catalog, echo=lambda msg: None, quiet=True)
            results[label] = {
                "final_train_loss": report["train_curve"][-1][1],
                "pre_quant_val_bpb": report["pre_quant"]["val_bpb"] if "pre_quant" in report else None,
                "post_quant_val_bpb": report["post_quant"]["val_bpb"],
                "tokens_per_second": report["tokens_per_second"],
                "steps": report["steps"],
                "wall_s": time.perf_counter() - t0,
                "train_curve": report["train_curve"],
            }
    print(f"{'run':<14} {'steps':>5} {'final train loss':>17} {'pre-quant bpb':>14} {'post-quant bpb':>15} {'tok/s':>12}")
    for label, r in results.items():
        pre = f"{r['pre_quant_val_bpb']:.4f}" if r["pre_quant_val_bpb"] is not None else "-"
        print(f"{label:<14} {r['steps']:>5} {r['final_train_loss']:>17.4f} {pre:>14} {r['post_quant_val_bpb']:>15.4f} {r['tokens_per_second']:>12,.0f}")
    delta = results["polar_express"]["final_train_loss"] - results["classic"]["final_train_loss"]
    print(f"final train loss, polar_express - classic: {delta:+.4f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__.split("Usage::", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (auto: CUDA if available)")
    parser.add_argument("--smoke", action="store_true", help="small shapes, 3 repeats and 5 training steps on the sample corpus: a quick CPU check")
    shapes = parser.add_argument_group("orthogonalization timing (defaults: the top record, PR #1855)")
    shapes.add_argument("--layers", type=int, default=11, help="transformer layers (default 11)")
    shapes.add_argument("--dim", type=int, default=512, help="model width (default 512)")
    shapes.add_argument("--heads", type=int, default=8, help="query heads (default 8; head dim = dim / heads)")
    shapes.add_argument("--kv-heads", type=int, default=4, help="key/value heads (default 4)")
    shapes.add_argument("--mlp-mult", type=int, default=4, help="MLP hidden width / dim (default 4)")
    shapes.add_argument("--layout", choices=("banked", "matrices", "both"), default="both",
                        help="banked: the records' 4 batched banks; matrices: one call per matrix, as golf's Muon (default both)")
    shapes.add_argument("--repeats", type=int, default=50, help="timed repetitions per shape; the median is reported (default 50)")
    shapes.add_argument("--warmup", type=int, default=5, help="untimed calls per shape first, compilation included (default 5)")
    shapes.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile the orthogonalizers (auto: on CUDA, as Muon does)")
    training = parser.add_argument_group("training comparison")
    training.add_argument("--train-steps", type=int, default=200, help="optimizer steps per run; 0 skips training (default 200)")
    training.add_argument("--data", type=Path, default=None, help="shard directory with tokenizer.model (default: the built-in sample corpus)")
    training.add_argument("--stack", type=Path, default=None, help="stack file to start from (default: golf's defaults = the baseline)")
    training.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra stack override, applied last (repeatable)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the inputs and of both training runs (default 1337)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write every figure as JSON here")
    args = parser.parse_args()

    if args.smoke:
        args.layers, args.dim, args.repeats, args.warmup = 2, 64, 3, 1
        args.train_steps = min(args.train_steps, 5)
        if args.device == "auto":
            args.device = "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")

    results = {"orthogonalization": bench_orthogonalization(args, device)}
    if args.train_steps > 0:
        results["training"] = bench_training(args, device)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
