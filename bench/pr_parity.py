"""Parity of golf's PR stacks with the records' own train_gpt.py, at a reduced number of steps.

For PR #1493, #1787 or #1855 this runs the record's script (fetched from the openai/parameter-golf
mirror, never committed) and golf's ``stacks/pr<N>.toml`` on the same shards, tokenizer and seed,
for ``--steps`` optimizer steps, and prints side by side: the training loss at every logged step,
the artifact bytes, and val_bpb before and after quantization, against the targets of issue 7:

* training loss within 1% at every logged step;
* post-quantization val_bpb within 0.01;
* artifact bytes within 2%.

Both sides run with the record's settings (the reference gets every setting of the record log's
Hyperparameters dump as its environment variable; golf reads the stack file, which the import test
keeps equal to that dump), on one GPU (so both accumulate 8 micro-batches per step), without a
wall-clock cap (the schedule runs on step / ITERATIONS in both), with the same 20-step compile
warm-up, and without the eval-time passes golf cannot run yet (TTT, sliding windows): the
post-quantization score is the plain one of both (the records' "quantized val_bpb" line).

FlashAttention-3 is replaced for the reference by a shim module ``flash_attn_interface`` put on
its PYTHONPATH: ``flash_attn_func`` is torch SDPA (causal, grouped-query) and
``flash_attn_varlen_func`` runs each ``cu_seqlens`` segment as a padded row of SDPA, with static
shapes so ``torch.compile(fullgraph=True)`` traces it. golf uses torch SDPA itself.

Steps (``--prepare`` needs no GPU; everything it writes goes to the git-ignored ``.device/``)::

    python bench/pr_parity.py --prepare            # scripts, FA3 shim, record envs, datasets
    python bench/pr_parity.py --pr 1855 --steps 40 # on the GPU machine (needs CUDA)
    python bench/pr_parity.py --pr 1855 --only reference   # one side per command if time is short
    python bench/pr_parity.py --pr 1855 --only golf         # (results are kept under .device/)
    python bench/pr_parity.py --pr 1855 --compare           # the table from the kept results

Requirements on the GPU machine: a CUDA torch with triton (the #1787/#1855 scripts import
``triton.tools.tensor_descriptor``), sentencepiece, numpy, brotli; ``lrzip`` for PR #1855's
per-group compressor (without it both sides fall back to brotli, and the report says so);
Python >= 3.12 for PR #1493's script (its decoded source uses PEP 701 f-strings; pass
``--ref-python`` to run the reference with another interpreter). The script reports what it finds.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORK = REPO / ".device" / "pr_parity"
SHARED = REPO.parent / "shared"
MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")
RECORD_DIRS = {
    1493: "records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT",
    1787: "records/track_10min_16mb/2026-04-23_SP8192_CaseOps_SparseGate_QuantGate_Loop45_PhasedTTT_PolarNS_MinLR_FusedCE",
    1855: "records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611",
}
CASEOPS = {1787, 1855}
DATASETS = {
    False: ("fineweb10B_sp8192", "fineweb_8192_bpe.model"),
    True: ("fineweb10B_sp8192_lossless_caps_caseops_v1_reserved", "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"),
}
LOSS_TOL, BPB_TOL, BYTES_TOL = 0.01, 0.01, 0.02

# Techniques golf runs at eval time that the reduced comparison leaves out on both sides.
EVAL_PASSES = ("sliding_window", "score_first_ttt", "lora_ttt", "phased_ttt", "ngram_tilt", "ngram_mixer")
# Record settings forced for the reduced run (besides ITERATIONS, SEED and the data paths).
REFERENCE_OVERRIDES = {
    "MAX_WALLCLOCK_SECONDS": "0", "TRAIN_LOG_EVERY": "1", "VAL_LOSS_EVERY": "0", "GPTQ_RESERVE_SECONDS": "0",
    "TTT_ENABLED": "0", "SLIDING_WINDOW_ENABLED": "0", "ETLB_ENABLED": "0", "PHASED_TTT_ENABLED": "0",
}

SHIM = '''"""A stand-in for FlashAttention-3's ``flash_attn_interface`` built on torch SDPA (written by bench/pr_parity.py).

Layouts as in FA3: q, k, v are [batch, seq, heads, head_dim] (varlen: [total, heads, head_dim]).
"""
import torch
import torch.nn.functional as F


def _sdpa(q, k, v, causal, softmax_scale):
    # [B, T, H, D] -> [B, H, T, D]; grouped-query heads are repeated by SDPA itself.
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        is_causal=causal, scale=softmax_scale, enable_gqa=q.size(2) != k.size(2),
    )
    return out.transpose(1, 2)


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, *args, **kwargs):
    return _sdpa(q, k, v, causal, softmax_scale)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           softmax_scale=None, causal=False, *args, **kwargs):
    """Each segment [cu[i], cu[i+1]) attends only to itself: one padded SDPA row per segment.

    Shapes depend only on len(cu_seqlens) and max_seqlen (both static per compiled graph); the
    padding sits at the end of each row, after every real query, so the causal mask hides it.
    """
    total = q.size(0)
    starts = cu_seqlens_q[:-1].long()
    lengths = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).long()
    pos = torch.arange(int(max_seqlen_q), device=q.device)
    idx = (starts[:, None] + pos[None, :]).clamp(max=total - 1)
    valid = (pos[None, :] < lengths[:, None])
    out = _sdpa(q[idx], k[idx], v[idx], causal, softmax_scale)
    out = out * valid[:, :, None, None].to(out.dtype)
    result = torch.zeros_like(q)
    result.index_add_(0, idx.reshape(-1), out.reshape(-1, q.size(1), q.size(2)))
    return result
'''

STEP_LOSS = re.compile(r"^(?:step:)?(\d+)/\d+ train_loss:\s*([0-9.]+|nan|inf)", re.M)


def say(msg: str) -> None:
    print(msg, flush=True)


def die(msg: str) -> None:
    """Stop with exit status 2: something is missing (exit 1 is reserved for a parity failure)."""
    print(f"pr_parity: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# Preparation (CPU): reference scripts, shim, record environments, datasets
# ---------------------------------------------------------------------------------------------


def fetch_reference(pr: int, work: Path) -> Path:
    """The record's train_gpt.py from the mirror into .device/ (LZMA wrappers decoded)."""
    from golf_core.importer import unwrap_script

    out = work / "ref" / f"pr{pr}_train_gpt.py"
    if out.is_file():
        return out
    if not MIRROR.exists():
        die(f"openai/parameter-golf mirror not found at {MIRROR}; pass --reference PATH to a fetched train_gpt.py")
    blob = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{RECORD_DIRS[pr]}/train_gpt.py"], capture_output=True, check=False)
    if blob.returncode != 0:
        die(f"{RECORD_DIRS[pr]}/train_gpt.py not in the mirror: {blob.stderr.decode()[:300]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(portable_source(unwrap_script(blob.stdout.decode("utf-8"))), encoding="utf-8")
    return out


FSTRING_REWRITE = r"""
import ast, sys

class NoFStrings(ast.NodeTransformer):
    # f"a{x!r:>{w}}" -> "".join(("a", format(repr(x), "".join((">", format(w, "")))))): the same value,
    # and no f-string left, so the source parses on Python < 3.12 (PEP 701 nested quotes gone).
    def visit_JoinedStr(self, node):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                inner = self.visit(value.value)
                conv = {115: "str", 114: "repr", 97: "ascii"}.get(value.conversion)
                if conv:
                    inner = ast.Call(ast.Name(conv, ast.Load()), [inner], [])
                spec = self.visit(value.format_spec) if value.format_spec is not None else ast.Constant("")
                parts.append(ast.Call(ast.Name("format", ast.Load()), [inner, spec], []))
            else:
                parts.append(value)
        return ast.Call(ast.Attribute(ast.Constant(""), "join", ast.Load()), [ast.Tuple(parts, ast.Load())], [])

tree = NoFStrings().visit(ast.parse(sys.stdin.read()))
sys.stdout.write(ast.unparse(ast.fix_missing_locations(tree)))
"""


def python312() -> str | None:
    """An interpreter that parses PEP 701 f-strings, to rewrite a source for older ones."""
    if sys.version_info >= (3, 12):
        return sys.executable
    candidates = [shutil.which("python3.13"), shutil.which("python3.12"), *sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.1[2-9]*/bin/python3"))]
    for cand in candidates:
        if cand and subprocess.run([cand, "-c", "import sys; assert sys.version_info >= (3, 12)"], capture_output=True).returncode == 0:
            return cand
    return None


def portable_source(source: str) -> str:
    """``source`` unchanged if it compiles here, else rewritten without f-strings (needs a Python >= 3.12)."""
    try:
        compile(source, "train_gpt.py", "exec")
        return source
    except SyntaxError:
        pass
    py = python312()
    if py is None:
        say("  the decoded script needs Python >= 3.12 to parse and none is installed here: kept as is (use --ref-python)")
        return source
    done = subprocess.run([py, "-c", FSTRING_REWRITE], input=source, capture_output=True, text=True)
    if done.returncode != 0:
        say(f"  rewriting the f-strings failed ({done.stderr.strip()[-200:]}): kept as is (use --ref-python)")
        return source
    compile(done.stdout, "train_gpt.py", "exec")
    say(f"  f-strings rewritten with {py} so the script parses on Python {sys.version_info[0]}.{sys.version_info[1]}")
    return done.stdout


def record_env(pr: int, work: Path) -> dict[str, str]:
    """The record log's Hyperparameters dump as environment variables (run-environment rows left out)."""
    from golf_core.importer import ROW_BY_NAME, parse_hyperparameter_dump

    cached = work / f"pr{pr}.env.json"
    log = SHARED / "records" / f"pr{pr}" / "train_seed42.log"
    if log.is_file():
        dump = parse_hyperparameter_dump(log.read_text(encoding="utf-8")) or {}
        env = {}
        for name, value in dump.items():
            row = ROW_BY_NAME.get(name)
            if row is not None and row.kind == "environment" or name in ("grad_accum_steps", "datasets_dir", "world_size"):
                continue
            env[name.upper()] = {"True": "1", "False": "0"}.get(value, value)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(env, indent=1, sort_keys=True))
        return env
    if cached.is_file():
        return json.loads(cached.read_text())
    die(f"no record log at {log} and no {cached}; run --prepare where ../shared/records exists")


def prepare_dataset(caseops: bool, work: Path, val_docs: int) -> Path:
    from golf_core.data import prepare_dataset as golf_prepare

    name, tokenizer = DATASETS[caseops]
    out = work / "data" / "datasets" / name
    if (out / "manifest.json").is_file():
        return out
    corpus = SHARED / "data" / "fineweb_sample.jsonl.gz"
    tok = SHARED / "data" / tokenizer
    if not corpus.is_file() or not tok.is_file():
        die(f"need {corpus} and {tok} to prepare {name}; or pass --dataset DIR")
    say(f"preparing {name} from {corpus.name} ({'caseops, ' if caseops else ''}{val_docs} validation docs) ...")
    t0 = time.perf_counter()
    golf_prepare(corpus, out, tokenizer_path=tok, val_docs=val_docs, caseops=caseops, log=lambda m: None)
    say(f"  {out} in {time.perf_counter() - t0:.0f}s")
    return out


def prepare(args: argparse.Namespace) -> None:
    work = args.workdir
    (work / "shim").mkdir(parents=True, exist_ok=True)
    (work / "shim" / "flash_attn_interface.py").write_text(SHIM, encoding="utf-8")
    for pr in sorted(RECORD_DIRS):
        say(f"PR #{pr}: reference {fetch_reference(pr, work)}; record env {len(record_env(pr, work))} settings")
    for caseops in (False, True):
        prepare_dataset(caseops, work, args.val_docs)
    say(f"prepared under {work} (git-ignored); carry .device/pr_parity to the GPU machine")


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


PROBE = """
import importlib, importlib.util, json, sys
found = {m: importlib.util.find_spec(m) is not None for m in ("torch", "numpy", "sentencepiece", "brotli", "triton")}
try:
    importlib.import_module("triton.tools.tensor_descriptor")
    found["triton.tools.tensor_descriptor"] = True
except Exception:
    found["triton.tools.tensor_descriptor"] = False
try:
    compile(open(sys.argv[1]).read(), "train_gpt.py", "exec")
    found["compiles"] = True
except SyntaxError:
    found["compiles"] = False
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "found": found}))
"""


def dependency_report(pr: int, reference: Path, ref_python: str) -> tuple[list[str], list[str]]:
    """What the reference's interpreter and this machine have: (lines, blocking problems)."""
    lines, problems = [], []
    probe = subprocess.run([ref_python, "-c", PROBE, str(reference)], capture_output=True, text=True)
    if probe.returncode != 0:
        return lines, [f"cannot run {ref_python}: {probe.stderr.strip()[-300:]}"]
    info = json.loads(probe.stdout)
    lines.append(f"  reference interpreter {ref_python}: Python {info['version']}")
    for module in ("torch", "numpy", "sentencepiece", "brotli", "triton"):
        ok = info["found"][module]
        lines.append(f"    module {module}: {'found' if ok else 'MISSING'}")
        if not ok:
            problems.append(f"python module {module} is missing for {ref_python} (pip install {module})")
    if pr in CASEOPS:
        ok = info["found"]["triton.tools.tensor_descriptor"]
        lines.append(f"    triton.tools.tensor_descriptor: {'found' if ok else 'MISSING'}")
        if not ok:
            problems.append("triton.tools.tensor_descriptor is missing: the PR #1787/#1855 scripts need triton >= 3.4")
    if not info["found"]["compiles"]:
        problems.append(f"the reference script does not compile on Python {info['version']} (PR #1493's decoded source needs >= 3.12): "
                        "pass --ref-python /path/to/python3.12 with torch installed")
    lines.append(f"  golf interpreter {sys.executable}: triton {'found' if importlib.util.find_spec('triton') else 'MISSING (fused kernels)'}")
    lines.append(f"  lrzip: {shutil.which('lrzip') or 'not installed (PR #1855 per-group compression falls back to brotli on both sides)'}")
    lines.append(f"  pyminify: {shutil.which('pyminify') or 'not installed (the reference counts its code unminified)'}")
    return lines, problems


def auto_batch_tokens(dataset: Path, steps: int, record: int = 786_432) -> int:
    """The record's batch, or the largest multiple of 8 x 2048 tokens that reads the train split at most once.

    On one GPU both sides take 8 micro-batches of ``batch / 8 + 1`` tokens per step from the start
    of the stream; past its end golf's stream continues from the start while the record's
    DocumentPackingLoader drops the shard's remainder, so the batches would stop matching.
    """
    manifest = json.loads((dataset / "manifest.json").read_text())
    train = int(manifest["splits"]["train"]["tokens"])
    per_step = train // max(steps, 1) - 8
    batch = min(record, per_step // 16_384 * 16_384)
    if batch < 16_384:
        die(f"the train split ({train:,} tokens) is too small for {steps} steps; lower --steps or pass --batch-tokens")
    return batch


def needs_cuda() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return f"needs CUDA: torch {torch.__version__} sees no GPU here (the record scripts and the comparison run on one CUDA device)"
    return None


# ---------------------------------------------------------------------------------------------
# The two runs
# ---------------------------------------------------------------------------------------------


def parse_reference_log(text: str) -> dict:
    def num(pattern: str) -> float | None:
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else None

    return {
        "losses": {int(s): float(v) for s, v in STEP_LOSS.findall(text)},
        "model_params": int(num(r"model_params:(\d+)") or 0) or None,
        "pre_quant_val_bpb": num(r"pre-quantization post-ema val_loss:[0-9.]+ val_bpb:([0-9.]+)"),
        "post_quant_val_bpb": num(r"^(?:diagnostic )?quantized val_loss:[0-9.]+ val_bpb:([0-9.]+)"),
        "artifact_bytes": int(num(r"Total submission size [^:]*: (\d+) bytes") or 0) or None,
        "model_bytes": int(num(r"Serialized model quantized[^:]*: (\d+) bytes") or 0) or None,
    }


def run_reference(args: argparse.Namespace, env_record: dict[str, str], dataset: Path, lrzip: bool, out: Path) -> dict:
    caseops = args.pr in CASEOPS
    name, tokenizer = DATASETS[caseops]
    data_dir = out / "ref_data"  # the layout the scripts derive their paths from
    (data_dir / "datasets").mkdir(parents=True, exist_ok=True)
    (data_dir / "tokenizers").mkdir(parents=True, exist_ok=True)
    link = data_dir / "datasets" / name
    if not link.exists():
        link.symlink_to(dataset.resolve(), target_is_directory=True)
    tok_link = data_dir / "tokenizers" / tokenizer
    if not tok_link.exists():
        tok_link.symlink_to((dataset / "tokenizer.model").resolve())
    env = dict(os.environ)
    env.update(env_record)
    env.update(REFERENCE_OVERRIDES)
    env.update(
        ITERATIONS=str(args.steps), SEED=str(args.seed), RUN_ID=f"parity_pr{args.pr}", DATA_DIR=str(data_dir),
        DATA_PATH=str(link), TOKENIZER_PATH=str(tok_link), PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(args.workdir / "shim"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    if args.batch_tokens:
        env["TRAIN_BATCH_TOKENS"] = str(args.batch_tokens)
    if not lrzip and env.get("COMPRESSOR") == "pergroup":
        env["COMPRESSOR"] = "brotli"
    run_dir = out / "reference_run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    say(f"reference: {args.reference} ({args.steps} steps, seed {args.seed}) ...")
    t0 = time.perf_counter()
    with open(out / "reference.log", "w", encoding="utf-8") as fh:
        proc = subprocess.run([args.ref_python, str(args.reference)], cwd=run_dir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    text = (out / "reference.log").read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        die(f"reference script failed (exit {proc.returncode}); last lines of {out / 'reference.log'}:\n{text[-4000:]}")
    result = parse_reference_log(text)
    result["wall_s"] = time.perf_counter() - t0
    result["compressor"] = env.get("COMPRESSOR")
    (out / "reference.json").write_text(json.dumps(result, indent=1))
    return result


def run_golf(args: argparse.Namespace, dataset: Path, lrzip: bool, out: Path) -> dict:
    from golf_core.catalog import load_catalog
    from golf_core.stack import resolve
    from golf_core.train import train

    catalog = load_catalog()
    path = REPO / "stacks" / f"pr{args.pr}.toml"
    base = resolve(path, catalog)
    disable = [t for t in EVAL_PASSES if t in base.techniques]
    if not lrzip and "pergroup_compress" in base.techniques:
        disable.append("pergroup_compress")  # the core brotli serializer, as the reference's COMPRESSOR=brotli
    overrides = [
        f"data.dataset='{dataset.resolve().as_posix()}'", "data.tokenizer=''", f"train.iterations={args.steps}",
        "train.train_log_every=1", "train.val_loss_every=0", "run.max_wallclock_seconds=0", f"run.seed={args.seed}",
        f"run.out_dir='{(out / 'golf_runs').as_posix()}'", "run.device='cuda'",
    ]
    if args.batch_tokens:
        overrides.append(f"train.train_batch_tokens={args.batch_tokens}")
    stack = resolve(path, catalog, overrides=overrides, disable=disable)
    say(f"golf: {path.name} without {', '.join(disable) or 'nothing'} ({args.steps} steps, seed {args.seed}) ...")
    t0 = time.perf_counter()
    report = train(stack, catalog, echo=lambda msg: None)
    result = {
        "losses": {int(s): float(v) for s, v, _ in report["train_curve"]},
        "model_params": report["model_params"],
        "pre_quant_val_bpb": report.get("pre_quant", {}).get("val_bpb"),
        "post_quant_val_bpb": report["post_quant"]["val_bpb"],
        "artifact_bytes": report["artifact"]["total_bytes"],
        "model_bytes": report["artifact"]["model_bytes"],
        "wall_s": time.perf_counter() - t0,
        "disabled": disable,
        "run_dir": report.get("run_dir"),
    }
    (out / "golf.json").write_text(json.dumps(result, indent=1))
    return result


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def compare(pr: int, ref: dict, golf: dict, notes: list[str]) -> tuple[str, bool]:
    ref_l = {int(k): v for k, v in ref["losses"].items()}
    golf_l = {int(k): v for k, v in golf["losses"].items()}
    steps = sorted(set(ref_l) & set(golf_l))
    lines = [f"PR #{pr} parity: reference train_gpt.py vs golf stacks/pr{pr}.toml", *notes, ""]
    lines.append(f"model params: reference {ref.get('model_params') or '?':,} golf {golf['model_params']:,}"
                 if isinstance(ref.get("model_params"), int) else f"model params: golf {golf['model_params']:,}")
    lines.append(f"{'step':>5} {'reference':>10} {'golf':>10} {'rel diff':>9}")
    worst = 0.0
    for s in steps:
        rel = abs(golf_l[s] - ref_l[s]) / max(abs(ref_l[s]), 1e-12)
        worst = max(worst, rel)
        lines.append(f"{s:>5} {ref_l[s]:>10.4f} {golf_l[s]:>10.4f} {rel:>8.2%}" + ("  <" if rel > LOSS_TOL else ""))
    checks = []
    ok_loss = bool(steps) and worst <= LOSS_TOL
    checks.append(("training loss, every logged step", f"max {worst:.2%} over {len(steps)} steps", f"<= {LOSS_TOL:.0%}", ok_loss))
    post_r, post_g = ref.get("post_quant_val_bpb"), golf.get("post_quant_val_bpb")
    ok_bpb = post_r is not None and post_g is not None and abs(post_g - post_r) <= BPB_TOL
    checks.append(("post-quant val_bpb", f"{post_r} vs {post_g:.5f}" if post_g is not None else "-", f"|diff| <= {BPB_TOL}", ok_bpb))
    bytes_r, bytes_g = ref.get("artifact_bytes"), golf.get("artifact_bytes")
    rel_b = (bytes_g - bytes_r) / bytes_r if bytes_r and bytes_g else None
    ok_bytes = rel_b is not None and abs(rel_b) <= BYTES_TOL
    checks.append(("artifact bytes", f"{bytes_r:,} vs {bytes_g:,} ({rel_b:+.2%})" if rel_b is not None else "-", f"within {BYTES_TOL:.0%}", ok_bytes))
    lines.append("")
    lines.append(f"pre-quant val_bpb: reference {ref.get('pre_quant_val_bpb')} golf {golf.get('pre_quant_val_bpb')}")
    lines.append(f"model bytes (without code): reference {ref.get('model_bytes')} golf {golf.get('model_bytes')}")
    lines.append(f"{'target':34} {'reference vs golf':34} {'goal':12} result")
    for name, value, goal, ok in checks:
        lines.append(f"{name:34} {value:34} {goal:12} {'PASS' if ok else 'FAIL'}")
    passed = all(c[3] for c in checks)
    lines.append(f"wall time: reference {ref.get('wall_s', 0):.0f}s, golf {golf.get('wall_s', 0):.0f}s")
    lines.append("PARITY " + ("PASS" if passed else "FAIL"))
    return "\n".join(lines), passed


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Run a record's train_gpt.py and golf's stacks/pr<N>.toml on the same shards and seed for a few steps; "
        "print loss per step, artifact bytes and val_bpb side by side with issue 7's targets.",
        epilog=__doc__[__doc__.index("Steps ("):],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pr", type=int, choices=sorted(RECORD_DIRS), default=1855, help="which record (default 1855)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps on both sides (default 40)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-tokens", type=int, default=0,
                        help="TRAIN_BATCH_TOKENS for both (default: the record's 786,432, lowered to a multiple of 16,384 "
                        "so that --steps steps read the train split once: the two loaders wrap around differently)")
    parser.add_argument("--workdir", type=Path, default=WORK, help=f"prepared inputs and results (default {WORK.relative_to(REPO)})")
    parser.add_argument("--reference", type=Path, help="the record's train_gpt.py (default: <workdir>/ref/pr<N>_train_gpt.py)")
    parser.add_argument("--dataset", type=Path, help="golf shard directory (default: <workdir>/data/datasets/<the record's dataset>)")
    parser.add_argument("--ref-python", default=sys.executable, help="interpreter for the reference (PR #1493 needs Python >= 3.12)")
    parser.add_argument("--prepare", action="store_true", help="fetch the scripts, write the FA3 shim and record envs, prepare both datasets; no GPU needed")
    parser.add_argument("--val-docs", type=int, default=300, help="validation documents when preparing the sample datasets (default 300)")
    parser.add_argument("--only", choices=("reference", "golf"), help="run one side and keep its result (for per-command time limits)")
    parser.add_argument("--compare", action="store_true", help="only compare results kept by earlier --only runs")
    parser.add_argument("--json-out", type=Path, help="also write both sides' figures here")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()

    if args.prepare:
        prepare(args)
        return
    out = args.workdir / "results" / f"pr{args.pr}_s{args.seed}_n{args.steps}"
    out.mkdir(parents=True, exist_ok=True)
    lrzip = shutil.which("lrzip") is not None
    notes = [] if lrzip or args.pr != 1855 else ["lrzip not installed: both sides compress with brotli instead of per-group lrzip"]

    if not args.compare:
        args.reference = (args.reference or args.workdir / "ref" / f"pr{args.pr}_train_gpt.py").resolve()
        if args.only != "golf" and not args.reference.is_file():
            die(f"reference script not found: {args.reference}; run `python bench/pr_parity.py --prepare` or pass --reference")
        dataset = (args.dataset or args.workdir / "data" / "datasets" / DATASETS[args.pr in CASEOPS][0]).resolve()
        if not (dataset / "manifest.json").is_file():
            die(f"dataset not found: {dataset}; run `python bench/pr_parity.py --prepare` or pass --dataset")
        if not args.batch_tokens:
            args.batch_tokens = auto_batch_tokens(dataset, args.steps)
        say(f"PR #{args.pr}: {args.steps} steps of {args.batch_tokens:,} tokens, seed {args.seed}, dataset {dataset}")
        env_record = record_env(args.pr, args.workdir) if args.only != "golf" else {}
        if args.only != "golf":
            found, problems = dependency_report(args.pr, args.reference, args.ref_python)
            say("dependencies:\n" + "\n".join(found))
            if problems:
                die("cannot run the reference: " + "; ".join(problems))
        problem = needs_cuda()
        if problem:
            die(problem)
        if args.only in (None, "reference"):
            run_reference(args, env_record, dataset, lrzip, out)
        if args.only in (None, "golf"):
            run_golf(args, dataset, lrzip, out)
        if args.only:
            say(f"kept {out / (args.only + '.json')}; run the other side, then --compare")
            return
    try:
        ref = json.loads((out / "reference.json").read_text())
        golf = json.loads((out / "golf.json").read_text())
    except FileNotFoundError as exc:
        die(f"missing result {exc.filename}: run --only reference and --only golf first (same --pr/--seed/--steps)")
    if golf.get("disabled"):
        notes.append(f"eval-time passes left out on both sides: {', '.join(golf['disabled'])}")
    table, passed = compare(args.pr, ref, golf, notes)
    print(table)
    if args.json_out:
        args.json_out.write_text(json.dumps({"reference": ref, "golf": golf, "passed": passed}, indent=1))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
