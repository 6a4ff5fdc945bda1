"""Data-parallel scaling from one GPU to two: tokens/s, efficiency, and the loss at the same global batch.

Launches ``torchrun --standalone --nproc_per_node N -m golf_core STACK`` (``golf_core.launch``) for
N = 1 and N = 2 with the same global batch (``grad_accum = 8 // N``: the two runs read the same
tokens in every step) and the same seed, then prints, in this process:

* tokens/s of each (steady state: the second half of the steps, from the logged training time),
  and the scaling efficiency ``tok/s(2) / (2 x tok/s(1))`` (goal >= 90%);
* the training loss after the last step (the mean over all ranks' micro-batches, i.e. the whole
  global batch) and the pre-quantization val_bpb of both: equal within bf16 noise
  (``--loss-tolerance``, relative);
* compile warm-up time (``phases.compile_warmup``, off the clock) apart from training time;
* the cost of the gradient and Muon communication on 2 ranks (a third torchrun of this script in
  ``--comm-worker`` mode): the Muon step (each rank orthogonalizes its share of the matrices, one
  all-reduce of the flat bf16 updates: the baseline's scheme, which golf keeps), the update
  all-reduce alone, and DDP's all-reduce of the float32 gradients (all of them, and the matrices
  only: what PR #1855's banked reduce-scatter scheme would replace).

Usage::

    python bench/bench_scaling.py --data .device/parity/sp1024                 # 2 GPUs (nvidia-h200-x2)
    python bench/bench_scaling.py --smoke                                      # CPU: 2 gloo ranks, toy size
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for entry in (str(REPO), str(BENCH)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import torch  # noqa: E402

from golf_core.launch import torchrun_command, train_arguments  # noqa: E402


def run_overrides(args, out: Path) -> list[str]:
    common = [
        f"train.iterations={args.steps}", f"train.train_log_every={args.log_every}", "train.val_loss_every=0",
        f"train.compile_warmup_steps={args.warmup_steps}", "run.max_wallclock_seconds=0", f"run.seed={args.seed}",
        f"run.out_dir='{out}'", "techniques.brotli.quality=1",
    ]
    if args.smoke:
        from golf_core.testing import MICRO_OVERRIDES

        # 4 micro-batches of 256 tokens per step: 1 rank x 4, or 2 ranks x 2 (grad_accum_steps 0 = 8 // N is for 8 GPUs)
        return [*MICRO_OVERRIDES, "data.tokenizer=''", "train.grad_accum_steps=0", "train.train_batch_tokens=2048", *common]
    return [
        f"data.dataset='{args.data}'", f"data.tokenizer='{args.data / 'tokenizer.model'}'", f"model.vocab_size={args.vocab}",
        f"data.val_tokens_limit={args.val_tokens}", *common,
    ]


def launch_run(args, nproc: int, out: Path) -> dict:
    run_dir = out / f"nproc{nproc}"
    cmd = torchrun_command(nproc, train_arguments(args.stack, overrides=run_overrides(args, out), run_dir=run_dir))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{nproc}-process run failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    report = json.loads((run_dir / "report.json").read_text())
    report["_wall_s"] = time.perf_counter() - t0
    return report


def steady(report: dict) -> tuple[float, int, int]:
    """Tokens/s over the second half of the logged steps; and the window."""
    elapsed = {int(s): t for s, _, t in report["train_curve"]}
    last = max(elapsed)
    first = max((s for s in elapsed if s <= last // 2), default=min(elapsed))
    if first == last:
        return report["tokens_per_second"], 0, last
    return (last - first) * report["tokens_per_step"] / (elapsed[last] - elapsed[first]), first, last


# ---------------------------------------------------------------------------------------------
# --comm-worker: timed communication on N ranks
# ---------------------------------------------------------------------------------------------


def _timed(fn, device: torch.device, iters: int) -> float:
    import torch.distributed as dist

    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - t0) / iters


def comm_worker(args) -> None:
    import torch.distributed as dist

    from golf_core.context import RunContext
    from golf_core.manager import make_plugin_manager
    from golf_core.model.gpt import cast_for_device
    from golf_core.optim.muon import Muon
    from golf_core.stack import resolve
    from golf_core.testing import build_model, catalog
    from golf_core.train import init_distributed, pick_device

    layout = init_distributed("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    device = pick_device("cpu" if args.smoke else "auto", layout.local_rank)
    stack = resolve(args.stack, catalog(), overrides=run_overrides(args, Path(tempfile.gettempdir())))
    model, _, _ = build_model(stack)
    cast_for_device(model, device)
    pm = make_plugin_manager(stack, catalog())
    ctx = RunContext(stack=stack, device=device, pm=pm, rank=layout.rank, world_size=layout.world_size,
                     local_rank=layout.local_rank, log=lambda msg, console=True: None)
    bundle = pm.hook.golf_build_optimizer(model=model, ctx=ctx)
    torch.manual_seed(layout.rank)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    muon_params = [p for opt in bundle.optimizers if isinstance(opt, Muon) for g in opt.param_groups for p in g["params"]]
    all_params = list(model.parameters())
    n_muon, n_all = sum(p.numel() for p in muon_params), sum(p.numel() for p in all_params)
    flat_bf16 = torch.zeros(n_muon, device=device, dtype=torch.bfloat16)
    flat_all = torch.zeros(n_all, device=device, dtype=torch.float32)
    flat_matrix = torch.zeros(n_muon, device=device, dtype=torch.float32)
    muon = [opt for opt in bundle.optimizers if isinstance(opt, Muon)]
    iters = 5 if args.smoke else 20
    result = {
        "world_size": layout.world_size, "muon_params": n_muon, "all_params": n_all,
        "muon_step_ms": _timed(lambda: [opt.step() for opt in muon], device, iters),
        "muon_allreduce_ms": _timed(lambda: dist.all_reduce(flat_bf16), device, iters),
        "ddp_allreduce_all_ms": _timed(lambda: dist.all_reduce(flat_all), device, iters),
        "ddp_allreduce_matrices_ms": _timed(lambda: dist.all_reduce(flat_matrix), device, iters),
    }
    if layout.rank == 0:
        print("COMM " + json.dumps(result), flush=True)
    dist.destroy_process_group()


def launch_comm(args, nproc: int) -> dict:
    head = torchrun_command(nproc, [])[:-2]  # python -m torch.distributed.run <options>
    cmd = [*head, str(Path(__file__).resolve()), "--comm-worker", "--stack", str(args.stack), *(["--smoke"] if args.smoke else [])]
    if not args.smoke:
        cmd += ["--data", str(args.data), "--vocab", str(args.vocab)]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True, timeout=args.timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("COMM ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"communication worker failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[5:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", type=Path, default=REPO / "stacks" / "baseline.toml")
    ap.add_argument("--data", type=Path, help="shard directory with tokenizer.model (CUDA runs)")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--warmup-steps", type=int, default=10, help="compile warm-up steps (off the clock)")
    ap.add_argument("--val-tokens", type=int, default=262_144, help="validation tokens scored (pre-quant val_bpb of both)")
    ap.add_argument("--nproc", type=int, default=2, help="the larger run's process count")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--loss-tolerance", type=float, default=0.01, help="allowed relative difference of the final loss (bf16 noise)")
    ap.add_argument("--timeout", type=int, default=480, help="seconds allowed per torchrun")
    ap.add_argument("--smoke", action="store_true", help="CPU, gloo, toy size")
    ap.add_argument("--comm-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.log_every, args.warmup_steps = 6, 1, 0
    if args.comm_worker:
        comm_worker(args)
        return 0
    if not args.smoke:
        if not torch.cuda.is_available() or torch.cuda.device_count() < args.nproc:
            ap.error(f"needs {args.nproc} CUDA devices (found {torch.cuda.device_count() if torch.cuda.is_available() else 0}); --smoke runs on CPU")
        if args.data is None:
            ap.error("--data DIR (a shard directory with tokenizer.model) is required on CUDA")
        args.data = args.data.resolve()
    args.stack = args.stack.resolve()
    device = "cpu (gloo)" if args.smoke else torch.cuda.get_device_name()
    print(f"device: {device}; stack {args.stack.name}; {args.steps} steps; same global batch at 1 and {args.nproc} processes")
    with tempfile.TemporaryDirectory() as tmp:
        reports = {n: launch_run(args, n, Path(tmp)) for n in (1, args.nproc)}
    comm = launch_comm(args, args.nproc)

    one, many = reports[1], reports[args.nproc]
    (tps1, a1, b1), (tpsn, an, bn) = steady(one), steady(many)
    print(f"\n{'procs':>5} {'tok/step':>9} {'accum':>5} {'warm-up s':>9} {'train s':>8} {'tok/s (steady)':>15} {'final loss':>10} {'pre-quant bpb':>13} {'in sync':>7}")
    for n, r, tps, a, b in ((1, one, tps1, a1, b1), (args.nproc, many, tpsn, an, bn)):
        print(f"{n:>5} {r['tokens_per_step']:>9,} {8 // n:>5} "
              f"{r['phases'].get('compile_warmup', 0.0):>9.1f} {r['phases']['train']:>8.1f} {tps:>15,.0f} "
              f"{r['train_curve'][-1][1]:>10.4f} {r.get('pre_quant', {}).get('val_bpb', float('nan')):>13.4f} {str(r.get('ranks_in_sync')):>7}")
    efficiency = tpsn / (args.nproc * tps1)
    verdict = "not meaningful on a shared CPU (--smoke)" if args.smoke else ("PASS" if efficiency >= 0.9 else "FAIL")
    print(f"\nscaling efficiency 1 -> {args.nproc}: {efficiency:.1%} (steps {an + 1}-{bn}; goal >= 90%): {verdict}")
    l1, ln = one["train_curve"][-1][1], many["train_curve"][-1][1]
    rel = abs(ln - l1) / abs(l1)
    print(f"final training loss (step {one['steps']}): 1 proc {l1:.5f}, {args.nproc} procs {ln:.5f}, relative difference {rel:.2e} "
          f"(tolerance {args.loss_tolerance:g}): {'PASS' if rel <= args.loss_tolerance else 'FAIL'}")
    if "pre_quant" in one and "pre_quant" in many:
        v1, vn = one["pre_quant"]["val_bpb"], many["pre_quant"]["val_bpb"]
        print(f"pre-quant val_bpb: 1 proc {v1:.5f}, {args.nproc} procs {vn:.5f} (difference {vn - v1:+.5f})")

    step_ms = 1000 * many["tokens_per_step"] / tpsn if math.isfinite(tpsn) and tpsn > 0 else float("nan")
    print(f"\ncommunication on {comm['world_size']} ranks ({comm['muon_params']:,} Muon parameters of {comm['all_params']:,}); "
          f"{args.nproc}-process step {step_ms:.1f} ms:")
    rows = [
        ("Muon step (orthogonalize own share + update all-reduce)", comm["muon_step_ms"]),
        ("  of which the bf16 update all-reduce", comm["muon_allreduce_ms"]),
        ("DDP gradient all-reduce, float32, all parameters", comm["ddp_allreduce_all_ms"]),
        ("  of which the Muon matrices (replaced by PR #1855's reduce-scatter)", comm["ddp_allreduce_matrices_ms"]),
    ]
    for label, ms in rows:
        print(f"  {label:<72} {ms:8.2f} ms  {ms / step_ms:6.1%} of the step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
