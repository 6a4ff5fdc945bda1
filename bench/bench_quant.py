"""Post-training quantization side by side: int8 (core default), gptq, gptq+lqer — and compressors.

One set of trained weights (a checkpoint, or a reduced PR #1855-like model trained here for
``--steps`` steps), then for each method: quantize (GPTQ Hessians from training batches), serialize
with each requested compressor, deserialize, check the round trip is bit-exact, load the dequantized
weights and score the validation tokens. Printed per row: model bytes, counted code bytes, total
against the 16,000,000-byte budget, the seconds of each phase, the post-quantization val_bpb and
its increase over the unquantized weights (scored the same way, in the same process).

Usage::

    golf data prepare ... --out DIR                    # shards + tokenizer.model
    python bench/bench_quant.py --data DIR --steps 300 --device cuda --save-checkpoint ckpt.pt
    python bench/bench_quant.py --checkpoint ckpt.pt --compressors brotli,pergroup_compress
    python bench/bench_quant.py --toy                  # CPU smoke check on the built-in sample corpus

The model: the core GPT at the top record's shape (11 x 512, 8/4 heads, MLP 4x, vocab of the
tokenizer) plus the PR #1855 architecture techniques present in the catalog (``--arch``; ``--arch
none`` for the plain core GPT), with the record's optimizer settings and warm-down fraction; or
any stack file (``--stack``), whose quantization and evaluation techniques are set aside.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from golf_core import hookimpl  # noqa: E402

PR1855_ARCH = ("leaky_relu_sq", "partial_rope", "qk_gain", "ln_scale", "xsa", "smear_gate", "sparse_attn_gate", "skip_gates")
QUANT_METHODS = {"int8": [], "gptq": ["gptq"], "gptq+lqer": ["gptq", "lqer"]}
COMPRESSORS = ("brotli", "lzma_compress", "byteshuffle_brotli", "pergroup_compress")
# The top record's optimizer settings the core Muon/Adam technique exposes, and its warm-down.
PR1855_TRAIN = (
    "techniques.muon.matrix_lr=0.026", "techniques.muon.tied_embed_lr=0.03", "techniques.muon.scalar_lr=0.02",
    "techniques.muon.momentum=0.97", "techniques.muon.momentum_warmup_start=0.92", "techniques.muon.momentum_warmup_steps=1500",
    "techniques.muon.beta2=0.99", "techniques.muon.weight_decay=0.095", "techniques.muon.embed_weight_decay=0.085",
    "techniques.muon.scalar_weight_decay=0.02", "techniques.muon.grad_clip_norm=0.3", "techniques.warmdown.warmdown_frac=0.85",
)
TOY = (
    "model.num_layers=2", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2", "model.mlp_mult=4",
    "train.train_seq_len=128", "train.train_batch_tokens=2048", "train.grad_accum_steps=1", "train.val_batch_tokens=8192",
)
TOY_QUANT = ("techniques.gptq.passthrough_max_numel=1024", "techniques.gptq.calibration_batches=4", "techniques.pergroup_compress.min_group_numel=1024")


class Snapshot:
    """Keeps the final weights of the training run (after every other train_end: EMA applied)."""

    name = "bench_snapshot"

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    @hookimpl(trylast=True)
    def golf_train_end(self, model, ctx):
        self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sample", help="dataset dir from `golf data prepare` (shards + tokenizer.model), or 'sample'")
    ap.add_argument("--stack", default=None, help="stack file defining the model (default: core GPT + --arch techniques)")
    ap.add_argument("--arch", action="append", default=None, help=f"architecture technique to enable (repeatable; default: those of {PR1855_ARCH} in the catalog; 'none' for none)")
    ap.add_argument("--steps", type=int, default=300, help="training steps when no --checkpoint is given")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--checkpoint", default=None, help="weights saved by --save-checkpoint: skip training")
    ap.add_argument("--save-checkpoint", default=None, help="where to save the trained weights (default: OUT/checkpoint.pt)")
    ap.add_argument("--layers", type=int, default=11)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--mlp-mult", type=float, default=4.0)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-tokens", type=int, default=131_072, help="training tokens per step")
    ap.add_argument("--val-tokens", type=int, default=2_000_000, help="validation tokens scored per method (0 = all)")
    ap.add_argument("--methods", default=",".join(QUANT_METHODS), help=f"comma list of {', '.join(QUANT_METHODS)}")
    ap.add_argument("--compressors", default="brotli", help=f"comma list of {', '.join(COMPRESSORS)}; each method is serialized with each")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra stack override a.b=VALUE (training and methods)")
    ap.add_argument("--method-set", dest="method_overrides", action="append", default=[], help="override for the quantization stacks only")
    ap.add_argument("--compile-eval", default="auto", choices=("auto", "on", "off"), help="score with a compiled forward (auto: on CUDA)")
    ap.add_argument("--toy", action="store_true", help="CPU smoke check: 2 x 64 model, 20 steps, 16k validation tokens")
    ap.add_argument("--out", default="runs/bench_quant", help="directory for the training run, checkpoint and results.json")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args(argv)
    if args.toy:
        args.steps = min(args.steps, 20)
        args.val_tokens = min(args.val_tokens or 16_384, 16_384)
        args.device = "cpu" if args.device == "auto" else args.device
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from golf_core.catalog import load_catalog
        from golf_core.data import load_tokenizer
        from golf_core.train import pick_device, resolve_dataset

        self.args = args
        self.catalog = load_catalog()
        self.device = pick_device(args.device, 0)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False) if args.checkpoint else None
        if self.ckpt:
            self.stack_path, self.arch, self.base_overrides = self.ckpt["stack"], self.ckpt["arch"], self.ckpt["overrides"]
        else:
            self.stack_path = args.stack
            self.arch = self._arch(args.arch)
            self.base_overrides = self._base_overrides()
        probe = self.resolve([], method=False)
        self.data_dir = resolve_dataset(probe)
        tok_path = Path(probe.core.data.tokenizer) if probe.core.data.tokenizer else self.data_dir / "tokenizer.model"
        self.tokenizer = load_tokenizer(tok_path)

    # ---- stacks ---------------------------------------------------------------------------

    def _arch(self, requested) -> list[str]:
        if requested is None:
            return [n for n in PR1855_ARCH if n in self.catalog]
        if requested == ["none"]:
            return []
        return list(requested)

    def _base_overrides(self) -> list[str]:
        a = self.args
        data = "sample" if a.data == "sample" else str(Path(a.data).resolve())
        over = [
            f"data.dataset='{data}'", f"run.device='{a.device}'", f"run.seed={a.seed}", "run.max_wallclock_seconds=0",
            f"train.iterations={a.steps}", "train.val_loss_every=0", "eval.pre_quant=false", "data.val_tokens_limit=65536",
            "train.train_log_every=50",
        ]
        if a.data != "sample":
            from golf_core.data import load_tokenizer

            vocab = load_tokenizer(Path(data) / "tokenizer.model").vocab_size()
            over.append(f"model.vocab_size={vocab}")
        if self.stack_path is None:
            over += [
                f"model.num_layers={a.layers}", f"model.model_dim={a.dim}", f"model.num_heads={a.heads}",
                f"model.num_kv_heads={a.kv_heads}", f"model.mlp_mult={a.mlp_mult}", f"train.train_seq_len={a.seq_len}",
                f"train.train_batch_tokens={a.batch_tokens}", f"train.val_batch_tokens={max(a.batch_tokens, 4 * a.seq_len)}",
                *PR1855_TRAIN,
            ]
        if a.toy:
            over += list(TOY)
        return over + list(a.overrides)

    def resolve(self, enable: list[str], method: bool, compressor: str = "brotli"):
        from golf_core.stack import resolve

        set_aside = [e.name for e in self.catalog.techniques() if e.cls.stage in ("quant", "eval") and e.name not in enable]
        overrides = list(self.base_overrides)
        if method:
            overrides += ([*TOY_QUANT] if self.args.toy else []) + list(self.args.method_overrides)
        if compressor != "brotli":
            enable = [*enable, compressor]
            set_aside = [n for n in set_aside if n != compressor]
        path = Path(self.stack_path) if self.stack_path else None
        return resolve(path, self.catalog, overrides=overrides, enable=[*self.arch, *enable], disable=set_aside)

    # ---- phases ---------------------------------------------------------------------------

    def train(self) -> dict[str, torch.Tensor]:
        if self.ckpt:
            print(f"weights: {self.args.checkpoint} ({self.ckpt['steps']} steps)")
            return self.ckpt["state_dict"]
        from golf_core.train import train

        stack = self.resolve([], method=False)
        snap = Snapshot()
        run_dir = self.out / "train"
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"training {self.args.steps} steps: {', '.join(stack.techniques) or 'core GPT'} on {self.device}")
        t0 = time.perf_counter()
        report = train(stack, self.catalog, run_dir=run_dir, extra_plugins=[snap], echo=lambda m: print("  " + m))
        print(f"trained in {time.perf_counter() - t0:.0f}s ({report['model_params']:,} parameters)")
        path = Path(self.args.save_checkpoint) if self.args.save_checkpoint else self.out / "checkpoint.pt"
        torch.save({"state_dict": snap.state, "stack": self.stack_path, "arch": self.arch, "overrides": self.base_overrides,
                    "steps": report["steps"]}, path)
        print(f"checkpoint: {path}")
        return snap.state

    def context(self, stack):
        from golf_core.context import RunContext
        from golf_core.data import ByteTable, find_shards
        from golf_core.manager import make_plugin_manager

        pm = make_plugin_manager(stack, self.catalog)
        ctx = RunContext(
            stack=stack, device=self.device, pm=pm, log=lambda msg, console=True: print("    " + msg), tokenizer=self.tokenizer,
            byte_table=ByteTable.from_sentencepiece(self.tokenizer, stack.core.model.vocab_size).to(self.device),
            data_dir=self.data_dir, train_files=find_shards(self.data_dir, "train"), val_files=find_shards(self.data_dir, "val"),
        )
        pm.hook.golf_configure(ctx=ctx)
        return ctx

    def model(self, stack, ctx, weights):
        from golf_core.model.gpt import cast_for_device
        from golf_core.model.spec import ModelSpec

        pm = ctx.pm
        torch.manual_seed(0)
        spec = ModelSpec.from_config(stack.core.model)
        spec.loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
        pm.hook.golf_model_spec(spec=spec, ctx=ctx)
        model = pm.hook.golf_build_model(spec=spec, ctx=ctx)
        pm.hook.golf_patch_model(model=model, ctx=ctx)
        cast_for_device(model, self.device)
        self.load(model, weights)
        return model

    @staticmethod
    def load(model, weights) -> None:
        current = model.state_dict()
        model.load_state_dict({k: v.to(dtype=current[k].dtype, device=current[k].device) for k, v in weights.items()}, strict=True)

    def scorer(self, model, ctx):
        from golf_core.data import find_byte_sidecars, load_byte_sidecar, load_validation_tokens
        from golf_core.eval.scoring import evaluate

        cfg = ctx.cfg
        seq_len = cfg.eval.seq_len or cfg.train.train_seq_len
        val = load_validation_tokens(ctx.val_files, seq_len)
        if self.args.val_tokens > 0:
            keep = min(val.numel() - 1, self.args.val_tokens) // seq_len * seq_len
            val = val[: keep + 1]
        sidecars = find_byte_sidecars(self.data_dir)
        side = load_byte_sidecar(sidecars, val.numel()) if sidecars else None
        use = self.args.compile_eval == "on" or (self.args.compile_eval == "auto" and self.device.type == "cuda")
        fwd = torch.compile(model.forward_logits, dynamic=False, fullgraph=True) if use else None

        def score():
            _sync(self.device)
            return evaluate(model, val, ctx, seq_len=seq_len, batch_tokens=cfg.train.val_batch_tokens, byte_sidecar=side, forward_logits=fwd)

        return score, int(val.numel() - 1)

    def run(self) -> list[dict[str, Any]]:
        from golf_core.quant.state import CalibrationData
        from golf_core.train import counted_stack_code

        weights = self.train()
        methods = [m.strip() for m in self.args.methods.split(",") if m.strip()]
        compressors = [c.strip() for c in self.args.compressors.split(",") if c.strip()]
        for m in methods:
            if m not in QUANT_METHODS:
                sys.exit(f"--methods: unknown method {m!r}; choose from {', '.join(QUANT_METHODS)}")
        for c in compressors:
            if c not in COMPRESSORS:
                sys.exit(f"--compressors: unknown compressor {c!r}; choose from {', '.join(COMPRESSORS)}")

        stack0 = self.resolve([], method=True)
        ctx0 = self.context(stack0)
        model = self.model(stack0, ctx0, weights)
        score, n_val = self.scorer(model, ctx0)
        t0 = time.perf_counter()
        pre = score()
        print(f"unquantized: val_bpb {pre.val_bpb:.5f} on {n_val:,} tokens ({time.perf_counter() - t0:.1f}s)")
        rows = []
        for method in methods:
            for comp in compressors:
                stack = self.resolve(QUANT_METHODS[method], method=True, compressor=comp)
                ctx = self.context(stack)
                self.load(model, weights)
                model.eval()
                tcfg = stack.core.train
                grad_accum = tcfg.grad_accum_steps or 8
                calib = CalibrationData(
                    make_loader=lambda ctx=ctx: ctx.pm.hook.golf_data_loader(ctx=ctx),
                    batch_tokens=tcfg.train_batch_tokens // grad_accum, seq_len=tcfg.train_seq_len,
                    seconds_left=lambda: float("inf"),
                )
                print(f"{method} + {comp}:")
                _sync(self.device)
                t = time.perf_counter()
                qstate = ctx.pm.hook.golf_quantize(model=model, calib=calib, ctx=ctx)
                _sync(self.device)
                t_quant = time.perf_counter() - t
                t = time.perf_counter()
                ctx.pm.hook.golf_refine_quant(qstate=qstate, model=model, calib=calib, ctx=ctx)
                t_refine = time.perf_counter() - t
                t = time.perf_counter()
                blob = ctx.pm.hook.golf_serialize(qstate=qstate, ctx=ctx)
                t_ser = time.perf_counter() - t
                t = time.perf_counter()
                back = ctx.pm.hook.golf_deserialize(blob=blob, ctx=ctx)
                t_deser = time.perf_counter() - t
                exact = back.same_as(qstate)
                self.load(model, back.dequantize())
                t = time.perf_counter()
                post = score()
                t_eval = time.perf_counter() - t
                code = counted_stack_code(stack, self.catalog)["code_bytes"]
                budget = stack.core.artifact.budget_bytes
                row = {
                    "method": method, "compressor": comp, "model_bytes": len(blob), "code_bytes": code,
                    "total_bytes": len(blob) + code, "headroom_bytes": budget - len(blob) - code,
                    "quantize_s": t_quant, "refine_s": t_refine, "serialize_s": t_ser, "deserialize_s": t_deser,
                    "eval_s": t_eval, "pre_bpb": pre.val_bpb, "post_bpb": post.val_bpb, "delta_bpb": post.val_bpb - pre.val_bpb,
                    "bit_exact": exact, "routes": sorted({qt.route for _, qt in qstate}),
                }
                rows.append(row)
                print(f"    {len(blob):,} B model + {code:,} B code; quantize {t_quant:.1f}s refine {t_refine:.1f}s "
                      f"serialize {t_ser:.1f}s deserialize {t_deser:.1f}s; val_bpb {post.val_bpb:.5f} ({row['delta_bpb']:+.5f})"
                      + ("" if exact else "  ROUND TRIP NOT BIT-EXACT"))
        self.load(model, weights)
        return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'method':<10} {'compressor':<19} {'model B':>12} {'total B':>12} {'headroom':>11} {'quant s':>8} {'lqer s':>7} {'ser s':>7} {'deser s':>8} {'val_bpb':>9} {'d bpb':>9}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['method']:<10} {r['compressor']:<19} {r['model_bytes']:>12,} {r['total_bytes']:>12,} {r['headroom_bytes']:>+11,} "
              f"{r['quantize_s']:>8.1f} {r['refine_s']:>7.1f} {r['serialize_s']:>7.1f} {r['deserialize_s']:>8.1f} "
              f"{r['post_bpb']:>9.5f} {r['delta_bpb']:>+9.5f}" + ("" if r["bit_exact"] else "  NOT BIT-EXACT"))
    base = next((r for r in rows if r["method"] == "int8" and r["compressor"] == "brotli"), None)
    if base:
        print("\nvs int8 + brotli:")
        for r in rows:
            if r is not base:
                extra = sum(r[k] - base[k] for k in ("quantize_s", "refine_s", "serialize_s"))
                print(f"  {r['method']} + {r['compressor']}: model bytes x{r['model_bytes'] / base['model_bytes']:.3f} "
                      f"({r['model_bytes'] - base['model_bytes']:+,} B), quantization loss {r['delta_bpb'] - base['delta_bpb']:+.5f} bpb, "
                      f"{extra:+.1f}s quantize+serialize")


def main(argv=None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    rows = bench.run()
    print_table(rows)
    out = Path(args.out) / "results.json"
    out.write_text(json.dumps({"args": vars(args), "arch": bench.arch, "device": str(bench.device), "rows": rows}, indent=2))
    print(f"\nresults: {out}")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
