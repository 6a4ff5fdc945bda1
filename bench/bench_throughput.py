"""Training throughput of golf against the reference scripts on one GPU, with model FLOPs utilisation.

Two pairs, each run on the same shards, tokenizer, seed, settings and number of steps, with the
compile warm-up off the clock in both, and compared in one process:

* ``baseline``: ``stacks/baseline.toml`` against openai/parameter-golf's root ``train_gpt.py``
  (``--reference``), through ``bench/baseline_parity.py``'s runners (constant LR, 20 warm-up steps);
  steady state = the second half of the steps.
* ``pr1787``: ``stacks/pr1787.toml`` with ``doc_packing`` against PR #1787's record script
  (``--reference-1787``). Both attend through the same torch kernel: the reference imports a
  ``flash_attn_interface`` shim (written to a temporary directory put first on its PYTHONPATH)
  whose ``flash_attn_varlen_func`` / ``flash_attn_func`` call ``golf_core.model.attention``, and
  golf is forced to that kernel (``torch_varlen`` on CUDA). The loop of depth recurrence switches
  on at 35% of the steps in both; throughput is reported before and after it. CaseOps is off on
  both sides (the shards are plain SP8192; throughput does not depend on the byte accounting) and
  golf's post-training techniques are disabled (they do not touch the training step).

Throughput is tokens per second over a window of steps, from the per-step cumulative training
time both programs log. MFU = tokens/s x FLOPs/token / peak, with

    FLOPs/token = 6 * N + 6 * n_blocks * d_model * seq_len

N = the parameters a token's forward multiplies with: the blocks of the running layout (a looped
block once per pass), the output head (the tied embedding counted once, as the head) and the
remaining small tensors; the second term is causal attention over full rows of ``seq_len``
(QK^T and AV, forward and backward): an upper bound for document-packed batches, whose segments
are shorter. The peak is the dense bf16 tensor-core rate of the detected GPU (H100/H200 SXM:
989.4 TFLOP/s; override with ``--peak-tflops``).

Usage (CUDA; one command per pair keeps each under ten minutes)::

    python bench/bench_throughput.py --pairs baseline --reference .device/parity/ref_train_gpt.py --data .device/parity/sp1024
    python bench/bench_throughput.py --pairs pr1787 --reference-1787 .device/ref1787.py --data-1787 .device/data/sp8192
    python bench/bench_throughput.py --smoke        # CPU, toy size: golf side, shim and MFU arithmetic only
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for entry in (str(REPO), str(BENCH)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import torch  # noqa: E402

from golf_core.catalog import load_catalog  # noqa: E402
from golf_core.errors import GolfError  # noqa: E402
from golf_core.model import attention  # noqa: E402
from golf_core.stack import resolve  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment, most specific first.
PEAK_BF16_TFLOPS = (
    ("GH200", 989.4), ("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0),
)

REF_1787_LINE = re.compile(r"^(\d+)/(\d+) train_loss: ([0-9.naninf]+) train_time: [0-9.]+m tok/s: (\d+)", re.M)
REF_1787_LOOP = re.compile(r"layer_loop:enabled step:(\d+)")
GOLF_LOOP = re.compile(r"depth_recurrence: loop on after step (\d+)")

SHIM_SOURCE = '''
"""flash_attn_interface stand-in for benchmarks: FlashAttention-3's two entry points on golf's torch kernels."""
from golf_core.model.attention import dense_causal_attention, varlen_attention


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False,
                           window_size=(-1, -1), softmax_scale=None, **unused):
    if not causal or softmax_scale is not None or tuple(window_size) not in ((-1, -1), (-1, 0)):
        raise NotImplementedError("the benchmark shim implements causal attention with the default scale only")
    return varlen_attention(q, k, v, cu_seqlens_q, max_seqlen_q)


def flash_attn_func(q, k, v, causal=False, softmax_scale=None, window_size=(-1, -1), **unused):
    if not causal or softmax_scale is not None or tuple(window_size) not in ((-1, -1), (-1, 0)):
        raise NotImplementedError("the benchmark shim implements causal attention with the default scale only")
    return dense_causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
'''


# ---------------------------------------------------------------------------------------------
# FLOPs and peaks (also used by bench_scaling.py)
# ---------------------------------------------------------------------------------------------


def peak_tflops(device: torch.device, override: float | None = None) -> tuple[float | None, str]:
    """Dense bf16 peak per GPU and the device name it was looked up for."""
    if device.type != "cuda":
        return override, "cpu"
    name = torch.cuda.get_device_name(device)
    if override:
        return override, name
    for fragment, tflops in PEAK_BF16_TFLOPS:
        if fragment in name:
            return tflops, name
    return None, name


def flops_per_token(stack) -> dict[str, dict]:
    """FLOPs per trained token for every layout of the stack's model (built on CPU through the hooks)."""
    from golf_core.testing import build_model

    model, spec, _ = build_model(stack)
    blocks = [sum(p.numel() for p in block.parameters()) for block in model.blocks]
    embed = model.tok_emb.weight.numel()
    head = 0 if model.lm_head is None else model.lm_head.weight.numel()
    other = sum(p.numel() for p in model.parameters()) - embed - head - sum(blocks)
    head_matmul = spec.vocab_size * spec.model_dim
    seq_len = stack.core.train.train_seq_len
    out = {}
    for layout in model.layouts:
        slots = model.slot_layers(layout)
        n = sum(blocks[i] for i in slots) + head_matmul + other
        attn = 6 * len(slots) * spec.num_heads * spec.head_dim * seq_len
        out[layout or "default"] = {"N": n, "blocks_run": len(slots), "attention": attn, "flops": 6 * n + attn, "seq_len": seq_len}
    return out


def describe_flops(name: str, table: dict[str, dict]) -> list[str]:
    lines = []
    for layout, f in table.items():
        lines.append(
            f"  {name} [{layout}]: FLOPs/token = 6 x {f['N']:,} + 6 x {f['blocks_run']} x d_model x {f['seq_len']} "
            f"= {f['flops'] / 1e6:,.1f} MFLOP ({f['attention'] / f['flops']:.1%} attention)"
        )
    return lines


def mfu(tokens_per_second: float, flops: float, peak: float | None, gpus: int = 1) -> str:
    if not peak or not math.isfinite(tokens_per_second):
        return "n/a"
    return f"{tokens_per_second * flops / (peak * 1e12 * gpus):.1%}"


# ---------------------------------------------------------------------------------------------
# Windows of steps
# ---------------------------------------------------------------------------------------------


def window_rate(elapsed: dict[int, float], tokens_per_step: int, first: int, last: int) -> float:
    """Tokens per second over steps first+1..last, from cumulative training seconds per step."""
    if first not in elapsed or last not in elapsed or last <= first:
        return float("nan")
    return (last - first) * tokens_per_step / max(elapsed[last] - elapsed[first], 1e-9)


def loop_windows(steps: int, switch: int | None) -> dict[str, tuple[int, int]]:
    """Steady windows before and after the loop switch (a few steps skipped at each start)."""
    if switch is None or switch >= steps:
        return {"all": (min(5, steps // 2), steps)}
    return {"loop off": (min(5, switch // 2), switch), "loop on": (min(switch + 3, steps - 1), steps)}


# ---------------------------------------------------------------------------------------------
# The pr1787 pair
# ---------------------------------------------------------------------------------------------


def write_shim(directory: Path) -> Path:
    path = directory / "flash_attn_interface.py"
    path.write_text(textwrap.dedent(SHIM_SOURCE).lstrip(), encoding="utf-8")
    return path


def check_shim(shim: Path) -> float:
    """The shim against golf's kernel and per-document SDPA on a small packed batch; max |diff|."""
    spec = importlib.util.spec_from_file_location("flash_attn_interface_shim", shim)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    q = torch.randn(40, 4, 64, device=device, dtype=dtype)
    k, v = torch.randn(40, 2, 64, device=device, dtype=dtype), torch.randn(40, 2, 64, device=device, dtype=dtype)
    cu = torch.tensor([0, 9, 25, 40, 40, 40, 40, 40], dtype=torch.int32, device=device)
    out = module.flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=16, max_seqlen_k=16, causal=True)
    ref = []
    for a, b in ((0, 9), (9, 25), (25, 40)):
        y = torch.nn.functional.scaled_dot_product_attention(
            *(t[a:b].transpose(0, 1)[None].float() for t in (q, k, v)), is_causal=True, enable_gqa=True
        )
        ref.append(y[0].transpose(0, 1))
    dense = module.flash_attn_func(q[None], k[None], v[None], causal=True)
    assert dense.shape == (1, 40, 4, 64)
    return float((out.float() - torch.cat(ref)).abs().max())


def run_reference_1787(script: Path, data: Path, steps: int, warmup: int, seed: int, shim_dir: Path, workdir: Path, backend: str) -> dict:
    env = dict(os.environ)
    env.update(
        DATA_PATH=str(data), TOKENIZER_PATH=str(data / "tokenizer.model"), VOCAB_SIZE="8192", CASEOPS_ENABLED="0",
        ITERATIONS=str(steps), WARMUP_STEPS=str(warmup), MAX_WALLCLOCK_SECONDS="0", TRAIN_LOG_EVERY="1", VAL_LOSS_EVERY="0",
        TTT_ENABLED="0", PREQUANT_ONLY="1", SEED=str(seed), RUN_ID="throughput_reference", ARTIFACT_DIR=str(workdir),
        PYTHONUNBUFFERED="1", GOLF_ATTENTION=backend,
        # The record's run command (README): the settings whose code defaults differ.
        MIN_LR="0.10", FUSED_CE_ENABLED="1", SPARSE_ATTN_GATE_ENABLED="1", SPARSE_ATTN_GATE_INIT_STD="0.0",
        SPARSE_ATTN_GATE_SCALE="1.0", GATED_ATTN_ENABLED="0", ATTN_OUT_GATE_ENABLED="0", GATED_ATTN_QUANT_GATE="1",
        MATRIX_LR="0.026", GPTQ_RESERVE_SECONDS="0.5",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(shim_dir), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"PR #1787 reference failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    batch = 786_432
    elapsed = {int(m.group(1)): int(m.group(1)) * batch / max(int(m.group(4)), 1) for m in REF_1787_LINE.finditer(proc.stdout)}
    losses = {int(m.group(1)): float(m.group(3)) for m in REF_1787_LINE.finditer(proc.stdout)}
    loop = REF_1787_LOOP.search(proc.stdout)
    params = re.search(r"model_params:(\d+)", proc.stdout)
    return {
        "elapsed": elapsed, "losses": losses, "tokens_per_step": batch, "wall_s": wall,
        "loop_switch": int(loop.group(1)) if loop else None, "model_params": int(params.group(1)) if params else None,
    }


def golf_1787_stack(stack_path: Path, data: Path | None, steps: int, warmup: int, seed: int, out: Path, smoke: bool):
    catalog = load_catalog()
    overrides = [
        f"train.iterations={steps}", f"train.compile_warmup_steps={warmup}", "train.train_log_every=1", "train.val_loss_every=0",
        "run.max_wallclock_seconds=0", f"run.seed={seed}", f"run.out_dir='{out}'", "eval.pre_quant=false",
        "techniques.brotli.quality=1",
    ]
    if smoke:
        overrides += [
            "run.device='cpu'", "data.dataset='sample'", "data.tokenizer=''", "model.vocab_size=1024", "model.num_layers=6",
            "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2", "train.train_batch_tokens=2048",
            "train.train_seq_len=64", "eval.seq_len=64", "data.val_tokens_limit=2048", "train.val_batch_tokens=2048",
        ]
    else:
        overrides += [f"data.dataset='{data}'", f"data.tokenizer='{data / 'tokenizer.model'}'", "model.vocab_size=8192",
                      "data.val_tokens_limit=131072"]
    first = resolve(stack_path, catalog, overrides=overrides)
    skip = {"quant", "eval"}
    disable = [n for n in first.techniques if catalog.get(n).cls.stage in skip or n == "caseops"]
    enable = [] if "doc_packing" in first.techniques else ["doc_packing"]
    if smoke:  # Triton kernels run interpreted on CPU: minutes for what --smoke checks in seconds
        disable += [n for n in ("fused_mlp", "fused_ce") if n in first.techniques]
    if not smoke:
        overrides.append(f"techniques.doc_packing.warmup_buckets={list(buckets_seen(first, data, steps))}")
    try:
        stack = resolve(stack_path, catalog, overrides=overrides, enable=enable, disable=disable)
    except GolfError:  # a technique requires one of them: keep it (it costs nothing per step)
        stack = resolve(stack_path, catalog, overrides=overrides, enable=enable, disable=["caseops"] if "caseops" in first.techniques else [])
    return stack, catalog


def buckets_seen(stack, data: Path, steps: int) -> list[int]:
    """The cu_seqlens lengths the timed steps will meet (the stream is deterministic): golf warms
    exactly these instead of all four record buckets, to keep the pair inside ten minutes."""
    from golf_core.data import find_shards
    from plugins.doc_packing.loader import DocumentPackingLoader

    t = stack.core.train
    accum = t.grad_accum_steps or 8
    loader = DocumentPackingLoader(find_shards(data, "train"), 0, 1, "cpu")
    return sorted({loader.next_batch(t.train_batch_tokens, t.train_seq_len, accum)[2]["cu_seqlens"].numel() for _ in range(steps * accum)})


def run_golf_1787(stack, catalog) -> dict:
    from golf_core.train import train

    lines: list[str] = []
    report = train(stack, catalog, echo=lines.append, quiet=False)
    loop = next((GOLF_LOOP.search(line) for line in lines if GOLF_LOOP.search(line)), None)
    return {
        "elapsed": {int(s): t for s, _, t in report["train_curve"]},
        "losses": {int(s): loss for s, loss, _ in report["train_curve"]},
        "tokens_per_step": report["tokens_per_step"], "loop_switch": int(loop.group(1)) if loop else None,
        "model_params": report["model_params"], "compile_warmup_s": report["phases"].get("compile_warmup", 0.0),
        "train_s": report["phases"]["train"],
    }


def pair_1787(args, device, peak) -> None:
    print("\n== pr1787: stacks/pr1787.toml + doc_packing vs the PR #1787 record script, same torch attention kernel")
    if not args.stack_1787.is_file():
        print(f"skipped: {args.stack_1787} not found (the PR #1787 stack is not written yet)")
        return
    backend = "torch_varlen" if device.type == "cuda" else "sdpa_mask"
    attention.set_backend(backend)
    print(f"attention kernel for packed documents: {backend} (golf forced; the reference through the flash_attn_interface shim)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shim = write_shim(tmp)
        print(f"shim check: flash_attn_varlen_func vs per-document SDPA, max |diff| = {check_shim(shim):.2e}")
        stack, catalog = golf_1787_stack(args.stack_1787, args.data_1787, args.steps_1787, args.warmup_steps, args.seed, tmp / "golf", args.smoke)
        print(f"golf stack: {', '.join(stack.techniques)}")
        table = flops_per_token(stack)
        ref = None
        if args.smoke or device.type != "cuda":
            print("reference: skipped (the record script needs CUDA and FlashAttention's interface)")
        elif args.reference_1787 is None or args.data_1787 is None:
            print("reference: skipped (pass --reference-1787 and --data-1787)")
        else:
            ref = run_reference_1787(args.reference_1787.resolve(), args.data_1787.resolve(), args.steps_1787, args.warmup_steps,
                                     args.seed, tmp, tmp, backend)
        golf = run_golf_1787(stack, catalog)
    attention.set_backend("auto")
    print(f"model params: golf {golf['model_params']:,}" + (f"  reference {ref['model_params']:,}" if ref and ref["model_params"] else ""))
    print(f"golf compile warm-up {golf['compile_warmup_s']:.1f}s (off the clock), training {golf['train_s']:.1f}s for {args.steps_1787} steps")
    print("FLOPs assumed:")
    for line in describe_flops("pr1787", table):
        print(line)
    looped = next((k for k in table if k != "default"), "default")
    for name, (a, b) in loop_windows(args.steps_1787, golf["loop_switch"]).items():
        flops = table[looped if name == "loop on" else "default"]["flops"]
        g = window_rate(golf["elapsed"], golf["tokens_per_step"], a, b)
        line = f"[{name}] steps {a + 1}-{b}: golf {g:,.0f} tok/s (MFU {mfu(g, flops, peak)})"
        if ref is not None:
            ra, rb = loop_windows(args.steps_1787, ref["loop_switch"]).get(name, (a, b))
            r = window_rate(ref["elapsed"], ref["tokens_per_step"], ra, rb)
            line += f"  reference {r:,.0f} tok/s (MFU {mfu(r, flops, peak)})  golf/reference {g / r:.3f}x"
        print(line)
    if ref is not None:
        common = sorted(set(golf["losses"]) & set(ref["losses"]))
        last = common[-1] if common else None
        if last:
            print(f"train loss at step {last}: golf {golf['losses'][last]:.4f}, reference {ref['losses'][last]:.4f}")


# ---------------------------------------------------------------------------------------------
# The baseline pair
# ---------------------------------------------------------------------------------------------


def pair_baseline(args, device, peak) -> None:
    print("\n== baseline: stacks/baseline.toml vs the root train_gpt.py")
    stack_path = REPO / "stacks" / "baseline.toml"
    catalog = load_catalog()
    steps = args.steps
    if args.smoke or device.type != "cuda":
        from golf_core.testing import MICRO_OVERRIDES
        from golf_core.train import train

        overrides = [*MICRO_OVERRIDES, "data.tokenizer=''", f"train.iterations={steps}", "train.train_log_every=1", "train.compile_warmup_steps=1",
                     "eval.pre_quant=false", "techniques.brotli.quality=1"]
        with tempfile.TemporaryDirectory() as tmp:
            stack = resolve(stack_path, catalog, overrides=[*overrides, f"run.out_dir='{tmp}'"])
            report = train(stack, catalog, echo=lambda msg: None, quiet=True)
        elapsed = {int(s): t for s, _, t in report["train_curve"]}
        table = flops_per_token(stack)
        golf_tps = window_rate(elapsed, report["tokens_per_step"], steps // 2, steps)
        print("reference: skipped (the root train_gpt.py needs CUDA)")
        print("FLOPs assumed:")
        for line in describe_flops("baseline", table):
            print(line)
        print(f"steps {steps // 2 + 1}-{steps}: golf {golf_tps:,.0f} tok/s (MFU {mfu(golf_tps, table['default']['flops'], peak)})")
        return
    if args.reference is None or args.data is None:
        print("skipped: pass --reference (root train_gpt.py) and --data (an sp1024 shard directory)")
        return
    from baseline_parity import run_golf, run_reference

    with tempfile.TemporaryDirectory() as tmp:
        ref = run_reference(args.reference.resolve(), args.data.resolve(), args.vocab, steps, args.seed, Path(tmp))
        gc.collect()
        golf = run_golf(args.data.resolve(), args.vocab, steps, args.seed, Path(tmp) / "golf_runs")
    torch._dynamo.reset()
    stack = resolve(stack_path, catalog, overrides=[f"model.vocab_size={args.vocab}"])
    table = flops_per_token(stack)
    tokens = stack.core.train.train_batch_tokens
    half = steps // 2

    def steady(avg: dict) -> float:  # tok/s over steps half+1..steps from cumulative step averages
        return (steps - half) * tokens / ((avg[steps] * steps - avg[half] * half) / 1000)

    r, g = steady(ref["step_avg_ms"]), steady(golf["step_avg_ms"])
    print(f"model params: golf {golf['model_params']:,}  reference {ref['model_params']:,}")
    print("FLOPs assumed:")
    for line in describe_flops("baseline", table):
        print(line)
    flops = table["default"]["flops"]
    print(f"steps {half + 1}-{steps}: golf {g:,.0f} tok/s (MFU {mfu(g, flops, peak)})  reference {r:,.0f} tok/s "
          f"(MFU {mfu(r, flops, peak)})  golf/reference {g / r:.3f}x")
    print(f"train loss at step {steps}: golf {golf['losses'][steps]:.4f}, reference {ref['losses'][steps]:.4f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="baseline,pr1787", help="comma list: baseline, pr1787")
    ap.add_argument("--reference", type=Path, help="openai/parameter-golf's root train_gpt.py")
    ap.add_argument("--data", type=Path, help="sp1024 shard directory with tokenizer.model (baseline pair)")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=50, help="baseline pair: training steps (steady state = second half)")
    ap.add_argument("--reference-1787", type=Path, help="PR #1787's record train_gpt.py")
    ap.add_argument("--data-1787", type=Path, help="SP8192 shard directory with tokenizer.model (pr1787 pair)")
    ap.add_argument("--stack-1787", type=Path, default=REPO / "stacks" / "pr1787.toml")
    ap.add_argument("--steps-1787", type=int, default=60, help="pr1787 pair: training steps (the loop switches on at 35%%)")
    ap.add_argument("--warmup-steps", type=int, default=5, help="pr1787 pair: compile warm-up steps per layout, both programs")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak per GPU for MFU (default: by the detected GPU)")
    ap.add_argument("--smoke", action="store_true", help="CPU toy size: golf side, the shim and the MFU arithmetic only")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.steps_1787, args.warmup_steps = 4, 6, 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    peak, name = peak_tflops(device, args.peak_tflops)
    print(f"device: {name}; peak bf16 {f'{peak:g} TFLOP/s' if peak else 'unknown (MFU n/a; pass --peak-tflops)'}; torch {torch.__version__}")
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    unknown = set(pairs) - {"baseline", "pr1787"}
    if unknown:
        ap.error(f"unknown pairs {sorted(unknown)}; choose from baseline, pr1787")
    if "baseline" in pairs:
        pair_baseline(args, device, peak)
    if "pr1787" in pairs:
        gc.collect()
        pair_1787(args, device, peak)
    return 0


if __name__ == "__main__":
    sys.exit(main())
