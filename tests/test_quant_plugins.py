"""Post-train quantization across plugins: every compressor round-trips real GPTQ+LQER states, a
micro run's reloaded artifact scores exactly what the report says with each compressor, the training
reserve shortens training, the report lists routes and headroom, and an artifact over the budget
fails the run after report.json is written."""

from __future__ import annotations

import base64
import json

import brotli
import pytest
import torch

from golf_core.errors import BudgetError
from golf_core.quant.artifact import _strip_source, counted_code_bytes, route_summary
from golf_core.quant.fixtures import reload_and_score
from golf_core.quant.state import CalibrationData
from golf_core.testing import build_model, make_ctx, micro_stack, run_micro
from plugins.pergroup_compress.pergroup import lrzip_available

GPTQ_SMALL = "techniques.gptq.passthrough_max_numel=1024"
CALIB_SMALL = "techniques.gptq.calibration_batches=2"
PERGROUP_SMALL = "techniques.pergroup_compress.min_group_numel=1024"

COMPRESSORS = [
    pytest.param([], [], id="brotli"),
    pytest.param(["lzma_compress"], [], id="lzma"),
    pytest.param(["byteshuffle_brotli"], [], id="byteshuffle_brotli"),
    pytest.param(["pergroup_compress"], ["techniques.pergroup_compress.backend='brotli'", PERGROUP_SMALL], id="pergroup-brotli"),
    pytest.param(
        ["pergroup_compress"], ["techniques.pergroup_compress.backend='lrzip'", PERGROUP_SMALL], id="pergroup-lrzip",
        marks=pytest.mark.skipif(not lrzip_available(), reason="the lrzip program is not installed"),
    ),
]


def _quantized_state(stack):
    """GPTQ + LQER on a micro model with trained-looking weights, calibration from a fixed loader."""
    model, _, _ = build_model(stack, seed=11)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.05)
    ctx = make_ctx(stack)

    class Loader:
        def next_batch(self, tokens, seq_len, accum):
            x = torch.randint(0, 1024, (tokens // seq_len, seq_len), generator=torch.Generator().manual_seed(7))
            return x, x

    calib = CalibrationData(Loader, batch_tokens=256, seq_len=64, seconds_left=lambda: float("inf"))
    state = ctx.pm.hook.golf_quantize(model=model, calib=calib, ctx=ctx)
    ctx.pm.hook.golf_refine_quant(qstate=state, model=model, calib=calib, ctx=ctx)
    return state, ctx


@pytest.mark.parametrize("enable,overrides", COMPRESSORS)
def test_every_compressor_round_trips_a_gptq_lqer_state_bit_exactly(enable, overrides):
    stack = micro_stack(enable=["gptq", "lqer", *enable], overrides=[GPTQ_SMALL, CALIB_SMALL, *overrides])
    state, ctx = _quantized_state(stack)
    assert any(qt.scheme == "lqer_asym" for _, qt in state)
    blob = ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx)
    back = ctx.pm.hook.golf_deserialize(blob=blob, ctx=ctx)
    assert back.same_as(state)
    for name, qt in state:
        assert torch.equal(back.entries[name].dequantize(), qt.dequantize())


def test_reloaded_artifact_scores_what_the_report_says_and_the_report_lists_every_route(tmp_path):
    # The default brotli serializer here; each compressor plugin's own test repeats the reload check.
    overrides = [GPTQ_SMALL, CALIB_SMALL]
    report = run_micro(tmp_path, enable=["gptq", "lqer"], overrides=overrides)
    run_dir = tmp_path / "run"
    art = report["artifact"]
    assert (run_dir / "model.golf").stat().st_size == art["model_bytes"]
    result = reload_and_score(micro_stack(enable=["gptq", "lqer"], overrides=overrides), run_dir)
    assert result.val_bpb == report["post_quant"]["val_bpb"] and result.tokens == report["post_quant"]["tokens"]

    names = [r["name"] for r in art["routes"]]
    model, _, _ = build_model(micro_stack())
    assert names == list(model.state_dict())  # every tensor, in state-dict order
    assert all(r["payload_bytes"] > 0 and r["entropy_bytes"] > 0 for r in art["routes"])
    assert art["total_bytes"] == art["model_bytes"] + art["code_bytes"]
    assert art["headroom_bytes"] == art["budget_bytes"] - art["total_bytes"] and art["within_budget"]
    log = (run_dir / "train.log").read_text()
    assert "quantized weights:" in log
    assert "+lqer_asym: " in log and "gptq (int6): blocks.attn.c_k.weight" in log
    assert "  gptq (int7): tok_emb.weight [1024, 64]" in log  # the per-tensor lines, as the records print them
    assert f"= {art['total_bytes']:,} B of 16,000,000 ({art['headroom_bytes']:+,} headroom)" in log
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["artifact"]["routes"] == art["routes"]


def test_route_summary_folds_layers_like_the_records():
    rows = [
        {"name": "blocks.0.attn.c_q.weight", "route": "gptq (int6)", "payload_bytes": 10},
        {"name": "blocks.1.attn.c_q.weight", "route": "gptq (int6)", "payload_bytes": 10},
        {"name": "tok_emb.weight", "route": "gptq (int7)+lqer_asym", "payload_bytes": 5},
    ]
    assert route_summary(rows) == [
        "gptq (int6): blocks.attn.c_q.weight [2 tensors, 20 B]",
        "gptq (int7)+lqer_asym: tok_emb.weight [1 tensors, 5 B]",
    ]


def test_over_budget_fails_after_the_report_is_written(tmp_path):
    with pytest.raises(BudgetError, match=r"over the 1,000-byte budget by .*report written to") as info:
        run_micro(tmp_path, overrides=["artifact.budget_bytes=1000"])
    assert info.value.exit_code == 1
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["artifact"]["within_budget"] is False
    assert report["artifact"]["headroom_bytes"] < 0
    assert "val_bpb" in report  # the run finished evaluating before failing


def test_training_reserve_stops_training_earlier(tmp_path):
    # The first CPU step takes a few seconds (compilation of the optimizer step), so the cap is large.
    report = run_micro(tmp_path, enable=["gptq"], overrides=[
        "run.max_wallclock_seconds=9", "techniques.gptq.reserve_seconds=4.5", "train.iterations=100000",
        "train.train_log_every=0", "techniques.gptq.calibration_batches=1", "eval.pre_quant=false",
    ])
    budget = report["training_budget"]
    assert budget["reserve_seconds"] == 4.5 and budget["train_cap_seconds"] == 4.5
    assert 4.5 <= budget["train_seconds"] < 7.0  # without the reserve it would run to 9 s
    assert budget["total_seconds"] == pytest.approx(budget["train_seconds"] + budget["quantize_seconds"])
    assert budget["within_cap"]
    assert "training cap: 4.5s (9s wall-clock cap - 4.5s reserved" in (tmp_path / "run" / "train.log").read_text()


def test_counted_code_is_the_self_extracting_wrapper(tmp_path):
    src = tmp_path / "pkg"
    src.mkdir()
    (src / "a.py").write_text('"""Doc."""\n# comment\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    (src / "test_a.py").write_text("def test(): pass\n")
    info = counted_code_bytes([src], root=tmp_path)
    stripped = f"# pkg/a.py\n{_strip_source((src / 'a.py').read_text())}\n"
    assert "Doc" not in stripped and "comment" not in stripped and "return x + 1" in stripped
    packed = base64.b85encode(brotli.compress(stripped.encode(), quality=11)).decode()
    wrapper = f'import brotli as B,base64 as b\nexec(B.decompress(b.b85decode("{packed}")))\n'
    assert info == {"files": 1, "raw_bytes": len((src / "a.py").read_bytes()), "stripped_bytes": len(stripped), "code_bytes": len(wrapper)}
