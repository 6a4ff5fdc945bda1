"""What the plugin machinery costs per training step: the core model against identity-set techniques.

Each configuration is a full ``golf train`` of ``stacks/baseline.toml`` (same data, seed and
batch) in this process; the step time is the steady state of its training curve (second half of
the steps; every step logged, so every step ends with a host sync and per-step host work shows).
Configurations run interleaved (core, A, B, core, A, B, ...) and each is summarised by its median
over the repetitions. Goal: within 1% of ``core``.

``A = no-op identities``: techniques at a setting where they add nothing to the compiled graph;
what remains is the machinery itself (hooks at set-up, a schedule wrapper and such per step):

    parallel_residuals  start_layer = num_layers (no block in parallel)
    partial_rope        dims = head_dim (every dim rotated: full RoPE)
    qk_gain             init = model.qk_gain_init (the core's value)
    leaky_relu_sq       negative_slope = 0, mlp_mult = 0 (relu², the core's width)
    min_lr              min_lr = 0 (the floor never binds)

``B = all identities``: A plus the techniques that compute the identity function at init but still
run their (small) modules every step:

    smear_gate          defaults (lambda = 0 and W = 0 at init)
    attn_out_gate       defaults (W = 0: 2 sigmoid(0) = 1)
    bigram_hash         scale_init = 0
    value_embeddings    scale_init = 0, layers = the last two
    ema                 decay = 0 (the average is the live weights), still updated every step

Every other technique in the catalog has no identity setting and is left out; the bench prints
each with the reason.

Usage::

    python bench/bench_plugin_overhead.py --data .device/parity/sp1024      # CUDA, 1 GPU
    python bench/bench_plugin_overhead.py --smoke                           # CPU, toy size
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from golf_core.catalog import load_catalog  # noqa: E402
from golf_core.stack import resolve  # noqa: E402

NO_OP = ("parallel_residuals", "partial_rope", "qk_gain", "leaky_relu_sq", "min_lr")
COMPUTING = ("smear_gate", "attn_out_gate", "bigram_hash", "value_embeddings", "ema")

LEFT_OUT = {
    "xsa": "always projects out the self-value component (last_n >= 1)",
    "ln_scale": "always scales the normed inputs by 1/sqrt(layer+1)",
    "skip_gates": "sigmoid(gamma) never reaches 1: the merge is a blend",
    "gated_attn": "sigmoid(W x) is 0.5 at zero init: halves the heads' output",
    "sparse_attn_gate": "sigmoid(scale W x) is 0.5 at zero init: halves the heads' output",
    "depth_recurrence": "the loop is always on by train end (num_loops >= 1, enable_at <= 1)",
    "mtp": "auxiliary heads always add to the loss (loss_weight > 0)",
    "muon_eq_r": "changes every Muon update (row normalization)",
    "polar_express": "changes every Newton-Schulz coefficient",
    "fused_ce": "same math through a Triton kernel: a speed technique (bench_fused_ce.py)",
    "fused_mlp": "same math through a Triton kernel: a speed technique (bench_fused_mlp.py)",
    "doc_packing": "changes the batches and the attention pattern",
    "caseops": "changes the data (needs CaseOps shards)",
}


def identity_overrides(stack) -> dict[str, list[str]]:
    m = stack.core.model
    head_dim = m.model_dim // m.num_heads
    return {
        "parallel_residuals": [f"techniques.parallel_residuals.start_layer={m.num_layers}"],
        "partial_rope": [f"techniques.partial_rope.dims={head_dim}"],
        "qk_gain": [f"techniques.qk_gain.init={m.qk_gain_init}"],
        "leaky_relu_sq": ["techniques.leaky_relu_sq.negative_slope=0.0", "techniques.leaky_relu_sq.mlp_mult=0.0"],
        "min_lr": ["techniques.min_lr.min_lr=0.0"],
        "smear_gate": [],
        "attn_out_gate": [],
        "bigram_hash": ["techniques.bigram_hash.scale_init=0.0"],
        "value_embeddings": ["techniques.value_embeddings.scale_init=0.0", "techniques.value_embeddings.layers=[-2, -1]"],
        "ema": ["techniques.ema.decay=0.0"],
    }


def base_overrides(args, out: str) -> list[str]:
    common = [
        f"train.iterations={args.steps}", "train.train_log_every=1", "train.val_loss_every=0", "eval.pre_quant=false",
        "run.max_wallclock_seconds=0", f"run.seed={args.seed}", f"run.out_dir='{out}'", "techniques.brotli.quality=1",
        f"train.compile_warmup_steps={args.warmup_steps}",
    ]
    if args.smoke:
        from golf_core.testing import MICRO_OVERRIDES

        return [*MICRO_OVERRIDES, "data.tokenizer=''", "model.num_layers=4", *common]
    return [
        f"data.dataset='{args.data}'", f"data.tokenizer='{args.data / 'tokenizer.model'}'", f"model.vocab_size={args.vocab}",
        f"train.train_batch_tokens={args.batch_tokens}", "data.val_tokens_limit=65536", *common,
    ]


def step_ms(report: dict) -> float:
    """Mean step time over the second half of the run, from the per-step cumulative training time."""
    elapsed = {int(s): t for s, _, t in report["train_curve"]}
    last = max(elapsed)
    half = last // 2
    return 1000 * (elapsed[last] - elapsed[half]) / (last - half)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="sp1024 shard directory with tokenizer.model (CUDA runs)")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of every configuration")
    ap.add_argument("--batch-tokens", type=int, default=131_072, help="train_batch_tokens (the baseline's 524288 works too, 4x slower)")
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--smoke", action="store_true", help="CPU toy size (4 layers x 64, 6 steps, 1 repetition)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.reps, args.warmup_steps = 6, 1, 0
    elif not torch.cuda.is_available():
        ap.error("no CUDA device: run with --smoke for the CPU toy check")
    elif args.data is None:
        ap.error("--data DIR (an sp1024 shard directory) is required on CUDA")

    from golf_core.train import train

    catalog = load_catalog()
    stack_path = REPO / "stacks" / "baseline.toml"
    with tempfile.TemporaryDirectory() as tmp:
        overrides = base_overrides(args, tmp)
        core = resolve(stack_path, catalog, overrides=overrides)
        table = identity_overrides(core)
        present = set(catalog.names()) if hasattr(catalog, "names") else {e.name for e in catalog}
        configs = {
            "core": [],
            "no-op identities": [n for n in NO_OP if n in present],
            "all identities": [n for n in (*NO_OP, *COMPUTING) if n in present],
        }
        stacks = {
            name: resolve(stack_path, catalog, overrides=[*overrides, *(o for n in names for o in table[n])], enable=names)
            for name, names in configs.items()
        }
        times: dict[str, list[float]] = {name: [] for name in configs}
        for rep in range(args.reps):
            for name, stack in stacks.items():
                report = train(stack, catalog, echo=lambda msg: None, quiet=True)
                times[name].append(step_ms(report))
                print(f"rep {rep + 1}/{args.reps} {name}: {times[name][-1]:.2f} ms/step "
                      f"(compile warm-up {report['phases'].get('compile_warmup', 0.0):.1f}s, params {report['model_params']:,})", flush=True)
                del report
                gc.collect()
                torch._dynamo.reset()

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu"
    print(f"\nstep time, median of {args.reps} (device {device}; {args.steps} steps, steady = second half):")
    base = statistics.median(times["core"])
    for name, names in configs.items():
        med = statistics.median(times[name])
        verdict = "" if name == "core" else f"  {'within' if med / base <= 1.01 else 'OVER'} the 1% goal"
        print(f"  {name:<18} {med:8.2f} ms  ratio {med / base:.4f}{verdict}   {', '.join(names) or '(no technique)'}")
    left = sorted(e.name for e in catalog if not e.cls.core_default and e.name not in configs["all identities"])
    print("\nleft out (no identity setting):")
    for name in left:
        stage = catalog.get(name).cls.stage
        reason = LEFT_OUT.get(name) or (f"{stage} stage: not part of the training step" if stage in ("quant", "eval") else "no identity setting known to this bench")
        print(f"  {name:<18} {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
