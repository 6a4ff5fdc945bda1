"""golf ablate and golf compare on real micro runs; statistics are checked in test_stats.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from golf_core.ablate import format_table, plan_variants, run_ablation, summarize
from golf_core.compare import format_table as compare_table
from golf_core.compare import load_report, plot_curves, table_rows
from golf_core.errors import GolfError
from golf_core.testing import MICRO_OVERRIDES, catalog
from golf_core.train import train


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate")
    return run_ablation(
        None, catalog(), drop=[], add=["qk_gain", "partial_rope"], seeds=[1, 2],
        overrides=list(MICRO_OVERRIDES), out_dir=out,
        train_fn=lambda stack, cat: train(stack, cat, quiet=True), echo=lambda msg: None,
    )


def test_ablation_runs_every_variant_over_every_seed(ablation):
    runs = ablation["runs"]
    assert list(runs) == ["base", "+qk_gain", "+partial_rope"]
    for label, seeds in runs.items():
        assert [r["seed"] for r in seeds] == [1, 2]
        assert all(math.isfinite(r["val_bpb"]) for r in seeds)
    # Different seeds give different models; the same seed and stack would give the same number.
    assert runs["base"][0]["val_bpb"] != runs["base"][1]["val_bpb"]
    # The summary row of a variant is recomputable from its runs.
    row = next(r for r in ablation["summary"] if r["variant"] == "+qk_gain")
    bpb = [r["val_bpb"] for r in runs["+qk_gain"]]
    base = [r["val_bpb"] for r in runs["base"]]
    assert row["delta_bpb"] == pytest.approx(sum(bpb) / 2 - sum(base) / 2)
    bpt = sum(r["bytes_per_token"] for r in runs["base"]) / 2
    assert row["delta_nats"] == pytest.approx(row["delta_bpb"] * math.log(2) * bpt)
    table = format_table(ablation["summary"])
    assert "+partial_rope" in table and "record rule" in table
    saved = json.loads(Path(ablation["path"]).read_text())
    assert saved["summary"] == json.loads(json.dumps(ablation["summary"]))


def test_summarize_base_row_is_zero():
    runs = {
        "base": [{"val_bpb": 1.0, "bytes_per_token": 2.0}, {"val_bpb": 1.2, "bytes_per_token": 2.0}],
        "-x": [{"val_bpb": 1.3, "bytes_per_token": 2.0}, {"val_bpb": 1.5, "bytes_per_token": 2.0}],
    }
    rows = summarize(runs)
    assert rows[0]["delta_bpb"] == 0.0 and not rows[0]["clears_record_rule"]
    assert rows[1]["delta_bpb"] == pytest.approx(0.3)
    assert not rows[1]["clears_record_rule"]  # worse, so it cannot clear


def test_ablation_input_errors():
    with pytest.raises(GolfError, match="at least one --drop"):
        plan_variants([], [])
    with pytest.raises(GolfError, match="two seeds"):
        run_ablation(None, catalog(), drop=[], add=["qk_gain"], seeds=[1], overrides=[], out_dir=Path("."), train_fn=None)
    with pytest.raises(GolfError, match="does not enable 'ema'"):
        run_ablation(None, catalog(), drop=["ema"], add=[], seeds=[1, 2], overrides=[], out_dir=Path("."), train_fn=None)


def test_compare_table_and_plot(ablation, tmp_path):
    dirs = [Path(r["run_dir"]) for r in ablation["runs"]["base"]]
    reports = [load_report(d) for d in dirs]
    rows = table_rows(reports)
    assert [r["seed"] for r in rows] == [1, 2]
    assert rows[0]["val_bpb_post_quant"] == pytest.approx(reports[0]["post_quant"]["val_bpb"])
    text = compare_table(rows)
    assert "tok/s" in text and "seconds per phase" in text
    pytest.importorskip("matplotlib")
    png = plot_curves(reports, tmp_path / "curves.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_compare_rejects_a_directory_without_report(tmp_path):
    with pytest.raises(GolfError, match="no report.json"):
        load_report(tmp_path)
