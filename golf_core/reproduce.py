"""``golf reproduce``: run a stack's recorded seeds and compare with what its PR reported.

A stack file records its PR's seeds (``[run] seeds``) and results
(``[provenance] expect = {val_bpb, val_bpb_std, artifact_bytes_max}``). :func:`reproduce` trains
the stack once per seed (one full run each: train, quantize, reload, score) and :func:`summarize`
compares the mean and spread of the final val_bpb (``golf_core.stats``) and the largest artifact
with those numbers:

* mean val_bpb within ``tolerance`` of the reported mean (default 0.003 BPB: about 3x the
  records' seed standard deviation, and well below the 0.005-nat record threshold);
* artifact bytes within 2% of the reported maximum, and within the budget.

With ``--set`` overrides (a short run, another dataset) the comparison is still printed but
marked as not comparable: a reduced run cannot be held to the record's numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from golf_core.catalog import Catalog
from golf_core.errors import GolfError
from golf_core.quant.artifact import atomic_write_bytes
from golf_core.stack import ResolvedStack, resolve
from golf_core.stats import mean, sample_std

DEFAULT_TOLERANCE_BPB = 0.003
ARTIFACT_TOLERANCE = 0.02


def parse_seeds(text: str | None) -> list[int] | None:
    """``"42,0,1234"`` -> [42, 0, 1234]; None or empty -> None (use the stack's seeds)."""
    if text is None or not text.strip():
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise GolfError(f"--seeds {text!r}: expected a comma-separated list of integers, e.g. --seeds 42,0,1234") from None


def expected(stack: ResolvedStack) -> dict[str, Any]:
    """``[provenance].expect`` with its numbers checked."""
    expect = stack.meta.get("provenance", {}).get("expect", {})
    if not isinstance(expect, dict):
        raise GolfError(f"{stack.path}: provenance.expect must be a table like {{ val_bpb = 1.081, val_bpb_std = 0.0002 }}")
    out = {}
    for key in ("val_bpb", "val_bpb_std", "artifact_bytes_max"):
        if key in expect:
            if isinstance(expect[key], bool) or not isinstance(expect[key], (int, float)):
                raise GolfError(f"{stack.path}: provenance.expect.{key} = {expect[key]!r}: expected a number")
            out[key] = expect[key]
    return out


def _row(seed: int, report: dict[str, Any]) -> dict[str, Any]:
    art = report.get("artifact", {})
    return {
        "seed": seed,
        "steps": report.get("steps"),
        "pre_quant_val_bpb": report.get("pre_quant", {}).get("val_bpb"),
        "post_quant_val_bpb": report.get("post_quant", {}).get("val_bpb"),
        "val_bpb": report.get("val_bpb"),
        "artifact_bytes": art.get("total_bytes"),
        "within_budget": art.get("within_budget"),
        "train_seconds": report.get("training_budget", {}).get("train_seconds"),
        "eval_seconds": report.get("eval_budget", {}).get("seconds"),
        "run_dir": report.get("run_dir"),
    }


def summarize(rows: list[dict[str, Any]], expect: dict[str, Any], *, tolerance: float = DEFAULT_TOLERANCE_BPB,
              comparable: bool = True, stack_name: str = "") -> dict[str, Any]:
    """Mean and spread of the runs against ``expect``, with a verdict for each number."""
    bpbs = [float(r["val_bpb"]) for r in rows if r.get("val_bpb") is not None]
    sizes = [int(r["artifact_bytes"]) for r in rows if r.get("artifact_bytes") is not None]
    got = {
        "val_bpb": mean(bpbs) if bpbs else None,
        "val_bpb_std": sample_std(bpbs) if len(bpbs) >= 2 else None,
        "artifact_bytes_max": max(sizes) if sizes else None,
    }
    checks: dict[str, Any] = {}
    if got["val_bpb"] is not None and "val_bpb" in expect:
        delta = got["val_bpb"] - float(expect["val_bpb"])
        checks["val_bpb"] = {"delta": delta, "tolerance": tolerance, "ok": abs(delta) <= tolerance}
    if got["val_bpb_std"] is not None and expect.get("val_bpb_std"):
        checks["val_bpb_std"] = {"ratio": got["val_bpb_std"] / float(expect["val_bpb_std"])}
    if got["artifact_bytes_max"] is not None and "artifact_bytes_max" in expect:
        rel = (got["artifact_bytes_max"] - float(expect["artifact_bytes_max"])) / float(expect["artifact_bytes_max"])
        checks["artifact_bytes_max"] = {"relative": rel, "tolerance": ARTIFACT_TOLERANCE, "ok": abs(rel) <= ARTIFACT_TOLERANCE}
    within_budget = all(r.get("within_budget") is not False for r in rows)
    verdicts = [c["ok"] for c in checks.values() if "ok" in c]
    return {
        "stack": stack_name,
        "runs": rows,
        "got": got,
        "expect": expect,
        "checks": checks,
        "within_budget": within_budget,
        "comparable": comparable,
        "reproduced": bool(verdicts) and all(verdicts) and within_budget and comparable,
    }


def reproduce(
    stack_path: Path,
    catalog: Catalog,
    *,
    seeds: Iterable[int] | None = None,
    overrides: Iterable[str] = (),
    enable: Iterable[str] = (),
    disable: Iterable[str] = (),
    out_dir: Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE_BPB,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``stack_path`` once per seed and compare with its ``[provenance].expect``; returns the summary."""
    overrides, enable, disable = list(overrides), list(enable), list(disable)
    base = resolve(stack_path, catalog, overrides=overrides, enable=enable, disable=disable)
    seed_list = list(seeds) if seeds is not None else list(base.core.run.seeds)
    if not seed_list:
        raise GolfError(f"{stack_path}: [run] seeds is empty; set it or pass --seeds 42,0,1234")
    expect = expected(base)
    out = Path(out_dir) if out_dir is not None else Path(base.core.run.out_dir) / f"reproduce-{base.name}"
    # Validate every seed's stack before the first (long) run starts.
    stacks = {
        seed: resolve(stack_path, catalog, overrides=[*overrides, f"run.seed={seed}", f"run.out_dir='{out.as_posix()}'"],
                      enable=enable, disable=disable)
        for seed in seed_list
    }
    if train_fn is None:
        from golf_core.train import train

        def train_fn(stack: ResolvedStack, cat: Catalog) -> dict[str, Any]:
            return train(stack, cat, quiet=True)

    rows = []
    for i, seed in enumerate(seed_list, 1):
        echo(f"reproduce {base.name}: seed {seed} ({i}/{len(seed_list)})")
        rows.append(_row(seed, train_fn(stacks[seed], catalog)))
        echo(f"  val_bpb {rows[-1]['val_bpb']:.5f}  artifact {rows[-1]['artifact_bytes']:,} B")
    summary = summarize(rows, expect, tolerance=tolerance, comparable=not overrides and not enable and not disable, stack_name=base.name)
    summary["seeds"] = seed_list
    summary["overrides"] = overrides
    out.mkdir(parents=True, exist_ok=True)
    path = out / "reproduce.json"
    atomic_write_bytes(path, json.dumps(summary, indent=2, default=float).encode())
    summary["path"] = str(path)
    return summary


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(summary: dict[str, Any]) -> str:
    """The per-seed table and the comparison with the reported numbers."""
    lines = [f"{'seed':>6} {'steps':>6} {'pre-quant':>10} {'post-quant':>10} {'val_bpb':>9} {'artifact B':>12}"]
    for r in summary["runs"]:
        lines.append(
            f"{r['seed']:>6} {_num(r['steps'], 'd'):>6} {_num(r['pre_quant_val_bpb'], '.5f'):>10} "
            f"{_num(r['post_quant_val_bpb'], '.5f'):>10} {_num(r['val_bpb'], '.5f'):>9} {_num(r['artifact_bytes'], ',d'):>12}"
        )
    got, exp, checks = summary["got"], summary["expect"], summary["checks"]
    lines.append("")
    lines.append(f"{'':22} {'golf':>12} {'reported':>12}  verdict")
    c = checks.get("val_bpb")
    verdict = "-" if c is None else (f"{'ok' if c['ok'] else 'OFF'} ({c['delta']:+.5f}, tolerance {c['tolerance']:g})")
    lines.append(f"{'val_bpb mean':22} {_num(got['val_bpb'], '.5f'):>12} {_num(exp.get('val_bpb'), '.5f'):>12}  {verdict}")
    c = checks.get("val_bpb_std")
    lines.append(f"{'val_bpb std':22} {_num(got['val_bpb_std'], '.5f'):>12} {_num(exp.get('val_bpb_std'), '.5f'):>12}  "
                 + ("-" if c is None else f"x{c['ratio']:.2f} of the reported spread"))
    c = checks.get("artifact_bytes_max")
    verdict = "-" if c is None else f"{'ok' if c['ok'] else 'OFF'} ({c['relative']:+.2%}, tolerance {c['tolerance']:.0%})"
    lines.append(f"{'artifact bytes (max)':22} {_num(got['artifact_bytes_max'], ',d'):>12} {_num(exp.get('artifact_bytes_max'), ',d'):>12}  {verdict}")
    if not summary["within_budget"]:
        lines.append("an artifact is OVER the byte budget")
    if not summary["comparable"]:
        lines.append("overrides applied (" + ", ".join(summary.get("overrides", [])) + "): a reduced run, not comparable with the record")
    else:
        lines.append("REPRODUCED" if summary["reproduced"] else "NOT REPRODUCED")
    return "\n".join(lines)


__all__ = ["DEFAULT_TOLERANCE_BPB", "expected", "format_table", "parse_seeds", "reproduce", "summarize"]
