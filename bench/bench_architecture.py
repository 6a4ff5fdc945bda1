"""Training-step time of the core baseline against a stack with every architecture technique, same process.

    python bench/bench_architecture.py                      # CUDA if present: the record's shape
    python bench/bench_architecture.py --device cpu --preset tiny --backend eager   # smoke check

Builds each model through golf's own hooks (ModelSpec -> build -> patch), moves it to the device
with the trainer's dtype policy, compiles it with ``torch.compile(fullgraph=True, dynamic=False)``
(a graph break raises, naming the technique's code) and times full training steps: forward and
backward under autocast, then the stack's optimizer step. Rows:

* ``core``: the baseline GPT with the preset's ``[model]`` table;
* ``all (loop off)``: smear_gate, xsa, sparse_attn_gate, partial_rope, ln_scale, qk_gain,
  depth_recurrence, parallel_residuals, skip_gates, leaky_relu_sq at their defaults (the top
  record's values), before depth recurrence switches on;
* ``all (loop on)``: the same model after the switch (17 virtual blocks at 11 layers).

Both models share the ``[model]`` table; ``leaky_relu_sq`` keeps its width (``mlp_mult = 0``), so
the ratio measures the techniques, not a wider MLP (the record preset is 4x already). Techniques
missing from the catalog are skipped with a note. Prints compile time, median step time,
tokens per second and the ratio to ``core``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from golf_core.context import RunContext  # noqa: E402
from golf_core.eval.scoring import autocast_for  # noqa: E402
from golf_core.manager import make_plugin_manager  # noqa: E402
from golf_core.model.gpt import cast_for_device  # noqa: E402
from golf_core.model.spec import ModelSpec  # noqa: E402
from golf_core.stack import resolve  # noqa: E402
from golf_core.testing import catalog  # noqa: E402

ARCHITECTURE = (
    "smear_gate", "xsa", "sparse_attn_gate", "partial_rope", "ln_scale", "qk_gain",
    "depth_recurrence", "parallel_residuals", "skip_gates", "leaky_relu_sq",
)

# The [model] tables and batch shapes. "record" is PR #1855's per-GPU shape (48 x 2048 tokens);
# "tiny" keeps 11 layers so the record's loop (3-5) and parallel start (8) apply, at width 64.
PRESETS = {
    "record": dict(model=dict(vocab_size=8192, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=4.0),
                   batch_seqs=48, seq_len=2048),
    "tiny": dict(model=dict(vocab_size=1024, num_layers=11, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=4.0),
                 batch_seqs=2, seq_len=128),
}


def build(enable: list[str], model_table: dict, device: torch.device):
    overrides = [f"model.{k}={v!r}" if not isinstance(v, str) else f"model.{k}='{v}'" for k, v in model_table.items()]
    overrides += ["run.device='cpu'", "data.dataset='sample'"]
    if "leaky_relu_sq" in enable:
        overrides.append("techniques.leaky_relu_sq.mlp_mult=0.0")
    stack = resolve(None, catalog(), overrides=overrides, enable=enable)
    pm = make_plugin_manager(stack, catalog())
    ctx = RunContext(stack=stack, device=device, pm=pm, log=lambda msg, console=True: None)
    torch.manual_seed(0)
    spec = ModelSpec.from_config(ctx.cfg.model)
    spec.loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
    pm.hook.golf_model_spec(spec=spec, ctx=ctx)
    problems = spec.check()
    if problems:
        raise SystemExit("; ".join(problems))
    model = pm.hook.golf_build_model(spec=spec, ctx=ctx)
    pm.hook.golf_patch_model(model=model, ctx=ctx)
    cast_for_device(model, device)
    optimizer = pm.hook.golf_build_optimizer(model=model, ctx=ctx)
    return model, spec, optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step_fn, device, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        step_fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS), help="default: record on CUDA, tiny on CPU")
    parser.add_argument("--batch-seqs", type=int, default=None, help="sequences per step (default: the preset's)")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per graph (compilation happens in the first)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (eager/aot_eager for a quick CPU check)")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    preset = PRESETS[args.preset or ("record" if device.type == "cuda" else "tiny")]
    batch_seqs, seq_len = args.batch_seqs or preset["batch_seqs"], args.seq_len or preset["seq_len"]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    present = [name for name in ARCHITECTURE if name in catalog()]
    missing = [name for name in ARCHITECTURE if name not in catalog()]
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})  torch {torch.__version__}  "
          f"backend {args.backend}  batch {batch_seqs} x {seq_len} tokens  model {preset['model']}")
    print(f"techniques: {', '.join(present)}")
    if missing:
        print(f"note: not in the catalog yet, skipped: {', '.join(missing)}")

    g = torch.Generator().manual_seed(0)
    vocab = preset["model"]["vocab_size"]
    x = torch.randint(0, vocab, (batch_seqs, seq_len), generator=g).to(device)
    y = torch.randint(0, vocab, (batch_seqs, seq_len), generator=g).to(device)
    tokens = batch_seqs * seq_len

    rows = []
    for label, enable in (("core", []), ("all", present)):
        model, spec, optimizer = build(enable, preset["model"], device)
        compiled = torch.compile(model, backend=args.backend, fullgraph=True, dynamic=False)
        model.train()
        optimizer.set_lr_multiplier(1.0)
        step_count = [0]

        def train_step():
            optimizer.zero_grad()
            with autocast_for(device):
                loss = compiled(x, y)
            loss.backward()
            optimizer.step(step_count[0])
            step_count[0] += 1

        layouts = [""] + (["looped"] if "looped" in getattr(model, "layouts", {}) else [])
        for layout in layouts:
            model.set_layout(layout)
            sync(device)
            t0 = time.perf_counter()
            train_step()  # compiles this layout's graph; a graph break raises here
            sync(device)
            compile_s = time.perf_counter() - t0
            time_steps(train_step, device, max(args.warmup - 1, 0))
            times = time_steps(train_step, device, args.steps)
            name = label if label == "core" else f"{label} (loop {'on' if layout else 'off'})"
            rows.append((name, compile_s, statistics.median(times), model.num_slots(), sum(p.numel() for p in model.parameters())))
        del model, compiled, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()

    base = rows[0][2]
    print(f"\n{'stack':<18} {'blocks':>6} {'params':>12} {'compile s':>10} {'step ms':>10} {'tok/s':>14} {'x core':>8}")
    for name, compile_s, step_s, blocks, params in rows:
        print(f"{name:<18} {blocks:>6} {params:>12,} {compile_s:>10.1f} {step_s * 1e3:>10.2f} {tokens / step_s:>14,.0f} {step_s / base:>8.3f}")


if __name__ == "__main__":
    main()
