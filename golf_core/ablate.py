"""Ablations: a base stack and variants (techniques dropped or added), each over several seeds.

Every (variant, seed) is a full run (train, quantize, reload, score) executed one after another
in this process. The summary compares each variant with the base on post-evaluation val_bpb:
mean and standard deviation, the difference in bpb and in nats per token (through the validation
set's bytes per token), Welch's one-sided p-value, and whether it clears the challenge's record
rule (an improvement of at least 0.005 nats at p < 0.01).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golf_core.catalog import Catalog
from golf_core.errors import GolfError
from golf_core.quant.artifact import atomic_write_bytes
from golf_core.stack import resolve
from golf_core.stats import RECORD_MAX_P, RECORD_MIN_NATS, compare_seeds


@dataclass(frozen=True)
class Variant:
    label: str
    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()


def plan_variants(drop: list[str], add: list[str]) -> list[Variant]:
    if not drop and not add:
        raise GolfError("golf ablate needs at least one --drop NAME or --add NAME")
    return [Variant("base")] + [Variant(f"-{n}", disable=(n,)) for n in drop] + [Variant(f"+{n}", enable=(n,)) for n in add]


def run_ablation(
    stack_path: Path | None,
    catalog: Catalog,
    *,
    drop: list[str],
    add: list[str],
    seeds: list[int],
    overrides: list[str],
    out_dir: Path,
    train_fn: Callable[..., dict[str, Any]],
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every variant over every seed and return (and write) the summary."""
    variants = plan_variants(drop, add)
    if len(seeds) < 2:
        raise GolfError("golf ablate needs at least two seeds for a p-value (e.g. --seeds 3)")
    base = resolve(stack_path, catalog, overrides=overrides)
    for name in drop:
        if name not in base.techniques:
            raise GolfError(f"--drop {name}: the stack does not enable '{name}' (enabled: {', '.join(base.techniques) or 'none'})")
    for name in add:
        if name in base.techniques:
            raise GolfError(f"--add {name}: the stack already enables '{name}'")
    # Validate every variant before spending time on any run.
    stacks = {
        v.label: {
            seed: resolve(stack_path, catalog, overrides=[*overrides, f"run.seed={seed}", f"run.out_dir='{out_dir.as_posix()}'"], enable=v.enable, disable=v.disable)
            for seed in seeds
        }
        for v in variants
    }
    results: dict[str, list[dict[str, Any]]] = {}
    for v in variants:
        results[v.label] = []
        for seed in seeds:
            echo(f"ablate: {v.label} seed {seed}")
            report = train_fn(stacks[v.label][seed], catalog)
            results[v.label].append(
                {"seed": seed, "val_bpb": report["val_bpb"], "val_loss": report["val_loss"], "run_dir": report.get("run_dir"),
                 "bytes_per_token": _bytes_per_token(report)}
            )
    summary = summarize(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "ablation.json", json.dumps({"stack": str(stack_path), "seeds": seeds, "runs": results, "summary": summary}, indent=2).encode())
    return {"runs": results, "summary": summary, "path": str(out_dir / "ablation.json")}


def _bytes_per_token(report: dict[str, Any]) -> float:
    final = report.get("adapted") or report["post_quant"]
    return final["bytes"] / max(final["tokens"], 1)


def summarize(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    base = results["base"]
    base_bpb = [r["val_bpb"] for r in base]
    bytes_per_token = sum(r["bytes_per_token"] for r in base) / len(base)
    rows = []
    for label, runs in results.items():
        bpb = [r["val_bpb"] for r in runs]
        cmp = compare_seeds(base_bpb, bpb, bytes_per_token)
        row = {"variant": label, "seeds": len(runs), **cmp.as_dict()}
        if label == "base":
            row.update(delta_bpb=0.0, delta_nats=0.0, p_value=float("nan"), clears_record_rule=False)
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'variant':<24} {'n':>2} {'val_bpb mean':>12} {'std':>8} {'Δbpb':>9} {'Δnats':>9} {'p':>8}  record rule"
    lines = [head, "-" * len(head)]
    for r in rows:
        rule = "-" if r["variant"] == "base" else ("CLEARS" if r["clears_record_rule"] else "no")
        p = "-" if r["variant"] == "base" else f"{r['p_value']:.4f}"
        lines.append(
            f"{r['variant']:<24} {r['seeds']:>2} {r['variant_mean']:>12.5f} {r['variant_std']:>8.5f} "
            f"{r['delta_bpb']:>+9.5f} {r['delta_nats']:>+9.5f} {p:>8}  {rule}"
        )
    lines.append(f"record rule: an improvement of at least {RECORD_MIN_NATS} nats/token at one-sided p < {RECORD_MAX_P} (Welch)")
    return "\n".join(lines)
