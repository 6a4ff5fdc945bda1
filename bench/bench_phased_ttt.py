"""Phased TTT on a small trained model: bpb gain and eval time next to plain evaluation.

Trains a small model with golf (``--stack``, default the baseline 9x512 GPT; ``--steps``
iterations, no wall-clock cap) on ``--data`` (a directory made by ``golf data prepare``, or
``sample`` for the built-in corpus), quantizes and reloads it as every run does, then scores the
reloaded model twice over the prepared validation documents: plainly (the baseline's
non-overlapping windows) and with ``lora_ttt`` + ``phased_ttt`` (per-document LoRA TTT with the
global-SGD phases; PR #1855's settings scaled to the model and the number of documents). Prints
both val_bpb, the gain, both eval times against the eval budget, and the phases. Usage::

    golf data prepare --input ../shared/data/fineweb_sample.jsonl.gz --vocab 1024 --val-docs 300 --out DIR
    python bench/bench_phased_ttt.py --data DIR --device cuda --steps 500
    python bench/bench_phased_ttt.py --data sample --device cpu --steps 20 --stack stacks/tiny.toml   # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared dataset directory (golf data prepare), or 'sample'")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=500, help="training iterations")
    ap.add_argument("--stack", type=Path, default=REPO / "stacks" / "baseline.toml", help="stack to train (default: the baseline)")
    ap.add_argument("--val-tokens", type=int, default=0, help="score only the first N validation tokens (0 = all)")
    ap.add_argument("--seq-len", type=int, default=1024, help="training and evaluation sequence length")
    ap.add_argument("--batch-tokens", type=int, default=131_072, help="training tokens per step")
    ap.add_argument("--rank", type=int, default=80, help="LoRA rank (record: 80)")
    ap.add_argument("--batch-docs", type=int, default=64, help="documents per LoRA batch (record: 64)")
    ap.add_argument("--chunk", type=int, default=48, help="targets per score-then-update chunk (record: 48)")
    ap.add_argument("--prefix-docs", type=int, default=0, help="documents for the global phases (default: a twentieth of the documents, as 2,500 of 50,000)")
    ap.add_argument("--phases", type=int, default=3, help="global-SGD phases (record: 3)")
    ap.add_argument("--global-chunk", type=int, default=0, help="global-SGD chunk tokens (default: the record's 32,768, scaled down so each phase spans about 8 chunks)")
    ap.add_argument("--no-phases", action="store_true", help="LoRA TTT alone (no global SGD)")
    ap.add_argument("--set", action="append", default=[], help="extra stack override a.b=VALUE (repeatable)")
    ap.add_argument("--json-out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()

    from golf_core.catalog import load_catalog
    from golf_core.data import find_shards, load_tokenizer, load_validation_tokens
    from golf_core.eval.stream import find_doc_starts
    from golf_core.stack import resolve
    from golf_core.train import resolve_dataset, train

    catalog = load_catalog()
    data_over = ["data.dataset='sample'"] if args.data == "sample" else [f"data.dataset='{Path(args.data).resolve()}'"]
    base = resolve(args.stack, catalog, overrides=data_over)
    data_dir = resolve_dataset(base)
    tokenizer = load_tokenizer(data_dir / "tokenizer.model")
    val = load_validation_tokens(find_shards(data_dir, "val"), args.seq_len)
    if args.val_tokens:
        val = val[: args.val_tokens + 1]
    num_docs = int(find_doc_starts(val).numel())
    prefix = args.prefix_docs or max(num_docs // 20, 1)
    # The record's phases span 1.9M tokens in 32,768-token chunks (the last one skipped): keep a
    # few chunks per phase on a small set.
    prefix_tokens = (val.numel() - 1) * prefix // max(num_docs, 1)
    global_chunk = args.global_chunk or max(args.seq_len, min(32768, prefix_tokens // 8))
    techniques = ["lora_ttt"] + ([] if args.no_phases else ["phased_ttt"])
    out = Path(tempfile.mkdtemp(prefix="golf-bench-phased-"))
    overrides = [
        *data_over, f"data.tokenizer='{data_dir / 'tokenizer.model'}'", f"model.vocab_size={tokenizer.vocab_size()}",
        f"run.device='{args.device}'", "run.max_wallclock_seconds=0", f"run.out_dir='{out}'", "run.nproc_per_node=1",
        f"train.iterations={args.steps}", f"train.train_seq_len={args.seq_len}", f"train.train_batch_tokens={args.batch_tokens}",
        "train.grad_accum_steps=1", f"train.val_batch_tokens={max(args.batch_tokens, args.seq_len)}", "train.val_loss_every=0",
        f"data.val_tokens_limit={args.val_tokens}", "eval.pre_quant=false",
        f"techniques.lora_ttt.rank={args.rank}", f"techniques.lora_ttt.batch_docs={args.batch_docs}",
        f"techniques.lora_ttt.chunk_size={args.chunk}",
        *([] if args.no_phases else [
            f"techniques.phased_ttt.prefix_docs={prefix}", f"techniques.phased_ttt.num_phases={args.phases}",
            f"techniques.phased_ttt.chunk_tokens={global_chunk}",
        ]),
        *args.set,
    ]
    stack = resolve(args.stack, catalog, overrides=overrides, enable=techniques)
    print(f"training {stack.name} for {args.steps} steps on {data_dir} ({args.device}); {val.numel() - 1:,} validation targets in {num_docs} documents")
    t0 = time.perf_counter()
    report = train(stack, catalog, echo=lambda msg: None)
    wall = time.perf_counter() - t0
    plain, adapted = report["post_quant"], report["adapted"]
    phases = report["phases"]
    budget = stack.core.run.eval_budget_seconds
    name = "+".join(techniques)
    rows = [
        ("plain (post-quant)", plain["val_bpb"], phases.get("eval_post_quant", plain["seconds"])),
        (name, adapted["val_bpb"], phases.get("eval_adapters", adapted["seconds"])),
    ]
    print(f"{'evaluation':28s} {'val_bpb':>9s} {'eval s':>8s} {'of budget':>9s}")
    for label, bpb, seconds in rows:
        print(f"{label:28s} {bpb:9.5f} {seconds:8.1f} {seconds / budget:9.1%}")
    gain = adapted["val_bpb"] - plain["val_bpb"]
    print(f"gain: {gain:+.5f} bpb ({gain / plain['val_bpb']:+.2%}); exactly once: {adapted['ledger']['exactly_once']}; "
          f"train {report['training_budget']['train_seconds']:.0f}s, whole run {wall:.0f}s")
    ttt = adapted["adapters"]
    print(f"lora_ttt: {json.dumps(ttt['lora_ttt'])}")
    for ph in ttt.get("phased_ttt", {}).get("phases", []):
        print(f"  phase {ph['phase']}: after round {ph['after_round']}, {ph['trained_docs']} docs / {ph['tokens']:,} tokens, "
              f"{ph['steps']} SGD steps, {ph['seconds']:.1f}s")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "plain_bpb": plain["val_bpb"], "ttt_bpb": adapted["val_bpb"], "gain": gain,
            "plain_eval_seconds": rows[0][2], "ttt_eval_seconds": rows[1][2], "budget_seconds": budget,
            "techniques": techniques, "adapters": ttt, "docs": num_docs, "steps": args.steps, "device": report["device"],
        }, indent=2))


if __name__ == "__main__":
    main()
