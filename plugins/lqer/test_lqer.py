"""LQER: factor ranges, the dequantization formula by hand, error reduction on the picked tensors, a micro run."""

from __future__ import annotations

import pytest
import torch

from golf_core.errors import GolfError
from golf_core.quant.fixtures import reload_and_score
from golf_core.quant.state import CalibrationData
from golf_core.testing import build_model, make_ctx, make_pm, micro_stack, run_micro
from plugins.lqer import LQER
from plugins.lqer.lqer import attach, base_entry, low_rank_factors, pack_asym, pack_sym

QUANT_OVERRIDES = ["techniques.gptq.passthrough_max_numel=1024", "techniques.gptq.calibration_batches=2"]


def _gptq_state(stack):
    model, _, _ = build_model(stack, seed=3)
    with torch.no_grad():
        for p in model.parameters():  # trained-looking weights: no zero-initialized projections
            if p.ndim == 2:
                p.normal_(0, 0.05)
    ctx = make_ctx(stack)

    class Loader:
        def next_batch(self, tokens, seq_len, accum):
            x = torch.randint(0, 1024, (tokens // seq_len, seq_len), generator=torch.Generator().manual_seed(tokens))
            return x, x

    calib = CalibrationData(Loader, batch_tokens=256, seq_len=64, seconds_left=lambda: float("inf"))
    state = ctx.pm.hook.golf_quantize(model=model, calib=calib, ctx=ctx)
    return model, state, calib, ctx


def test_asymmetric_factors_are_in_range_with_one_scale_per_64():
    torch.manual_seed(0)
    A, B = low_rank_factors(torch.randn(96, 128), 4)
    qA, sA, qB, sB = pack_asym(A, B, 64)
    assert set(qA.unique().tolist()) <= {-2, -1, 0, 1} and qA.dtype == torch.int8
    assert int(qB.min()) >= -8 and int(qB.max()) <= 7 and qB.dtype == torch.int8
    assert sA.dtype == sB.dtype == torch.float16 and sA.numel() == 1
    assert sB.numel() == B.numel() // 64
    # The scales are max|.| / 1.5 and max|group| / 7.5 (checked by hand for the first group).
    assert float(sA) == pytest.approx(float(A.abs().max()) / 1.5, rel=1e-3)
    assert float(sB[0]) == pytest.approx(float(B.reshape(-1)[:64].abs().max()) / 7.5, rel=1e-3)
    assert torch.equal(qB.reshape(-1)[:64], torch.clamp(torch.round(B.reshape(-1)[:64] / sB[0].float()), -8, 7).to(torch.int8))


def test_svd_factors_are_the_best_rank_r_approximation():
    torch.manual_seed(1)
    E = torch.randn(40, 64)
    A, B = low_rank_factors(E, 4)
    s = torch.linalg.svdvals(E)
    assert float((E - A @ B).norm() ** 2) == pytest.approx(float((s[4:] ** 2).sum()), rel=1e-4)


def test_symmetric_fallback_when_b_does_not_split_into_groups():
    torch.manual_seed(2)
    A, B = low_rank_factors(torch.randn(30, 50), 3)  # 3 x 50 = 150, not a multiple of 64
    qA, sA, qB, sB = pack_sym(A, B, 4)
    assert int(qA.abs().max()) <= 7 and int(qB.abs().max()) <= 7
    assert sA.shape == (30,) and sB.shape == (3,)


def test_refine_lowers_the_error_of_the_largest_error_tensors_and_dequantizes_by_hand():
    stack = micro_stack(enable=["gptq", "lqer"], overrides=QUANT_OVERRIDES)
    model, state, calib, ctx = _gptq_state(stack)
    weights = {k: v.detach().float() for k, v in model.state_dict().items()}
    before = {name: float((weights[name] - qt.dequantize().float()).norm()) for name, qt in state if qt.meta.get("method") == "gptq"}
    expected = sorted(before, key=lambda n: -before[n])[:3]
    ctx.pm.hook.golf_refine_quant(qstate=state, model=model, calib=calib, ctx=ctx)
    picked = [name for name, qt in state if qt.scheme.startswith("lqer")]
    assert sorted(picked) == sorted(expected)
    for name in picked:
        qt = state.entries[name]
        assert qt.route.endswith("+lqer_asym") and qt.scheme == "lqer_asym"
        after = float((weights[name] - qt.dequantize().float()).norm())
        assert after < before[name]
        t = qt.tensors
        group = t["lqB"].numel() // t["lqBs"].numel()
        by_hand = t["q"].float() * t["scale"].float()[:, None] + (t["lqA"].float() * float(t["lqAs"])) @ (
            (t["lqB"].float().reshape(-1, group) * t["lqBs"].float()[:, None]).reshape(t["lqB"].shape)
        )
        assert torch.allclose(qt.dequantize().float(), by_hand, atol=1e-6)
        assert base_entry(qt).route == qt.route.removesuffix("+lqer_asym")
    untouched = [name for name in before if name not in picked]
    assert all(state.entries[n].scheme == "int8_row" for n in untouched)


def test_attach_keeps_the_base_payload_bit_exact():
    stack = micro_stack(enable=["gptq", "lqer"], overrides=QUANT_OVERRIDES)
    model, state, _, _ = _gptq_state(stack)
    qt = state.entries["blocks.0.mlp.fc.weight"]
    E = model.state_dict()["blocks.0.mlp.fc.weight"].float() - qt.dequantize().float()
    refined = attach(qt, E, rank=4, asym=True, group=64, factor_bits=4)
    assert torch.equal(refined.tensors["q"], qt.tensors["q"]) and torch.equal(refined.tensors["scale"], qt.tensors["scale"])
    assert base_entry(refined).same_as(qt)


def test_requires_gptq_and_validates_params():
    with pytest.raises(GolfError, match="requires 'gptq'"):
        make_pm(micro_stack(enable=["lqer"]))
    with pytest.raises(ValueError, match="rank"):
        LQER.Params(rank=0).validate()


def test_micro_run_with_gptq_and_lqer(tmp_path):
    report = run_micro(tmp_path, enable=["gptq", "lqer"], overrides=QUANT_OVERRIDES)
    routes = [r["route"] for r in report["artifact"]["routes"]]
    assert sum(r.endswith("+lqer_asym") for r in routes) == 3
    assert abs(report["post_quant"]["val_bpb"] - report["pre_quant"]["val_bpb"]) < 0.05
    assert "lqer: rank-4 corrections on" in (tmp_path / "run" / "train.log").read_text()
    reloaded = reload_and_score(micro_stack(enable=["gptq", "lqer"], overrides=QUANT_OVERRIDES), tmp_path / "run")
    assert reloaded.val_bpb == report["post_quant"]["val_bpb"]
