"""Parity of golf's baseline stack with openai/parameter-golf's root train_gpt.py, in one command.

Runs the reference script (path given; fetched, never committed) and then golf's
``stacks/baseline.toml`` on the same shards, tokenizer, seed and settings, and prints the
training loss of both at every step, the largest relative difference, and throughput.

Both runs use a constant LR multiplier (WARMDOWN_ITERS=0, no wall-clock cap) so steps 1..N are
exactly the first N steps of a real record run, and the same compile warm-up (20 steps, state
restored). Usage (on a CUDA machine; the reference script needs CUDA)::

    golf data prepare --input fineweb_sample.jsonl.gz --vocab 1024 --val-docs 300 --out DIR
    python bench/baseline_parity.py --reference /path/to/train_gpt.py --data DIR --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STEP_LINE = re.compile(r"step:(\d+)/\d+ train_loss:([0-9.naninf]+) train_time:(\d+)ms step_avg:([0-9.]+)ms")


def run_reference(script: Path, data: Path, vocab: int, steps: int, seed: int, workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        DATA_PATH=str(data), TOKENIZER_PATH=str(data / "tokenizer.model"), VOCAB_SIZE=str(vocab),
        ITERATIONS=str(steps), WARMDOWN_ITERS="0", MAX_WALLCLOCK_SECONDS="0", TRAIN_LOG_EVERY="1",
        VAL_LOSS_EVERY="0", SEED=str(seed), RUN_ID="parity_reference", PYTHONUNBUFFERED="1",
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"reference script failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    losses, step_avg = {}, {}
    for m in STEP_LINE.finditer(proc.stdout):
        losses[int(m.group(1))] = float(m.group(2))
        step_avg[int(m.group(1))] = float(m.group(4))
    params = re.search(r"model_params:(\d+)", proc.stdout)
    final = re.search(r"final_int8_zlib_roundtrip_exact val_loss:([0-9.]+) val_bpb:([0-9.]+)", proc.stdout)
    pre = re.search(rf"step:{steps}/{steps} val_loss:([0-9.]+) val_bpb:([0-9.]+)", proc.stdout)
    return {
        "pre_quant_val_bpb": float(pre.group(2)) if pre else None,
        "losses": losses, "step_avg_ms": step_avg, "wall_s": wall,
        "model_params": int(params.group(1)) if params else None,
        "final_val_bpb": float(final.group(2)) if final else None,
    }


def run_golf(data: Path, vocab: int, steps: int, seed: int, out: Path) -> dict:
    from golf_core.catalog import load_catalog
    from golf_core.stack import resolve
    from golf_core.train import train

    catalog = load_catalog()
    stack = resolve(
        REPO / "stacks" / "baseline.toml", catalog,
        overrides=[
            f"data.dataset='{data}'", f"data.tokenizer='{data / 'tokenizer.model'}'", f"model.vocab_size={vocab}",
            f"train.iterations={steps}", "train.train_log_every=1", "train.val_loss_every=0",
            "run.max_wallclock_seconds=0", f"run.seed={seed}", f"run.out_dir='{out}'",
            "techniques.warmdown.warmdown_iters=0",
        ],
    )
    t0 = time.perf_counter()
    report = train(stack, catalog, echo=lambda msg: None)
    wall = time.perf_counter() - t0
    losses = {int(s): loss for s, loss, _ in report["train_curve"]}
    elapsed = {int(s): t for s, _, t in report["train_curve"]}
    step_avg = {s: 1000 * elapsed[s] / s for s in elapsed if s}
    return {
        "losses": losses, "step_avg_ms": step_avg, "wall_s": wall, "model_params": report["model_params"],
        "pre_quant_val_bpb": report["pre_quant"]["val_bpb"],
        "final_val_bpb": report["post_quant"]["val_bpb"], "tokens_per_second": report["tokens_per_second"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="path to openai/parameter-golf's root train_gpt.py")
    parser.add_argument("--data", type=Path, required=True, help="shard directory with tokenizer.model (golf data prepare)")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--tolerance", type=float, default=0.02, help="allowed relative loss difference")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ref = run_reference(args.reference.resolve(), args.data.resolve(), args.vocab, args.steps, args.seed, Path(tmp))
        golf = run_golf(args.data.resolve(), args.vocab, args.steps, args.seed, Path(tmp) / "golf_runs")

    print(f"model params: reference {ref['model_params']:,}  golf {golf['model_params']:,}")
    print(f"{'step':>5} {'reference':>10} {'golf':>10} {'rel diff':>9}")
    worst = 0.0
    for step in range(1, args.steps + 1):
        a, b = ref["losses"].get(step), golf["losses"].get(step)
        if a is None or b is None:
            continue
        rel = abs(b - a) / abs(a)
        worst = max(worst, rel)
        if step <= 10 or step % 5 == 0:
            print(f"{step:>5} {a:>10.4f} {b:>10.4f} {rel:>8.2%}")
    last = args.steps
    # Steady-state step time: average over the second half of the run (compile and warm-up excluded).
    half = args.steps // 2

    def steady_ms(avg: dict) -> float:
        return (avg[last] * last - avg[half] * half) / (last - half)

    ref_ms, golf_ms = steady_ms(ref["step_avg_ms"]), steady_ms(golf["step_avg_ms"])
    print(f"max relative loss difference over steps 1..{args.steps}: {worst:.3%} (tolerance {args.tolerance:.0%}): {'PASS' if worst <= args.tolerance else 'FAIL'}")
    print(f"steady step time (steps {half + 1}..{last}): reference {ref_ms:.1f} ms, golf {golf_ms:.1f} ms, golf speed ratio {ref_ms / golf_ms:.3f}x")
    print(f"val_bpb after {args.steps} steps, pre-quant: reference {ref['pre_quant_val_bpb']}, golf {golf['pre_quant_val_bpb']:.4f}")
    print(f"val_bpb after {args.steps} steps, int8 round trip: reference {ref['final_val_bpb']}, golf {golf['final_val_bpb']:.4f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"reference": ref, "golf": golf, "max_rel_diff": worst}, indent=1, default=str))
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
