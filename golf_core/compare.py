"""Compare finished runs: a table from their ``report.json`` and loss-curve plots.

Plots need matplotlib (``pip install 'golf[plot]'``); the table does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from golf_core.errors import GolfError


def load_report(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise GolfError(f"{run_dir}: no report.json (not a finished golf run directory)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GolfError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    report["_dir"] = str(run_dir)
    return report


def table_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in reports:
        rows.append(
            {
                "run": Path(r["_dir"]).name,
                "stack": r.get("stack"),
                "seed": r.get("seed"),
                "steps": r.get("steps"),
                "tokens_per_second": r.get("tokens_per_second"),
                "val_bpb_pre_quant": (r.get("pre_quant") or {}).get("val_bpb"),
                "val_bpb_post_quant": (r.get("post_quant") or {}).get("val_bpb"),
                "val_bpb_adapted": (r.get("adapted") or {}).get("val_bpb"),
                "artifact_bytes": (r.get("artifact") or {}).get("total_bytes"),
                "phases": r.get("phases", {}),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    head = f"{'run':<36} {'stack':<14} {'seed':>5} {'steps':>6} {'tok/s':>10} {'pre-q bpb':>9} {'post-q':>8} {'adapted':>8} {'artifact B':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['run'][:36]:<36} {str(r['stack'])[:14]:<14} {f(r['seed'], '>5')} {f(r['steps'], '>6')} "
            f"{f(r['tokens_per_second'], '>10,.0f')} {f(r['val_bpb_pre_quant'], '>9.4f')} {f(r['val_bpb_post_quant'], '>8.4f')} "
            f"{f(r['val_bpb_adapted'], '>8.4f')} {f(r['artifact_bytes'], '>11,')}"
        )
    phases = sorted({p for r in rows for p in r["phases"]})
    if phases:
        lines.append("")
        lines.append("seconds per phase: " + ", ".join(phases))
        for r in rows:
            lines.append(f"{r['run'][:36]:<36} " + " ".join(f"{r['phases'].get(p, 0.0):.1f}" for p in phases))
    return "\n".join(lines)


def plot_curves(reports: list[dict[str, Any]], out_path: Path) -> Path:
    """Training loss against step and against wall-clock seconds, one line per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GolfError("plotting needs matplotlib: pip install 'golf[plot]' (or pass --no-plot)") from None
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in reports:
        curve = r.get("train_curve") or []
        if not curve:
            continue
        techniques = "+".join(r.get("techniques") or []) or "core"
        label = f"{r.get('stack')} [{techniques}] s{r.get('seed')}"
        steps, losses, seconds = zip(*curve, strict=True)
        by_step.plot(steps, losses, label=label)
        by_time.plot(seconds, losses, label=label)
    by_step.set_xlabel("step")
    by_time.set_xlabel("training wall clock (s)")
    for ax in (by_step, by_time):
        ax.set_ylabel("training loss (nats/token)")
        ax.grid(alpha=0.3)
    by_step.legend(fontsize=8)
    fig.suptitle("golf compare: training loss")
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out_path)
    return out_path
