"""GPTQ: the section-J invariants against independent computations, routing, Hessians, size estimate, a micro run."""

from __future__ import annotations

import math

import pytest
import torch

from golf_core.quant.fixtures import reload_and_score
from golf_core.quant.state import CalibrationData, QuantizedTensor, entropy_bytes
from golf_core.testing import build_model, make_ctx, micro_stack, run_micro
from plugins.gptq import GPTQ, RESERVE_KEY
from plugins.gptq.gptq import gptq_quantize_weight, sdclip_scale
from plugins.gptq.hessians import collect_hessians


def _correlated_hessian(cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols // 4, cols, generator=g)
    X = torch.randn(4 * cols, cols // 4, generator=g) @ mix + 0.05 * torch.randn(4 * cols, cols, generator=g)
    return X.T @ X


def _h_error(W, W_hat, H):
    d = (W - W_hat).double()
    return float(torch.trace(d @ H.double() @ d.T))


@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize("bits", [4, 6, 7])
def test_identity_hessian_without_clipping_is_round_to_nearest(bits, act_order):
    torch.manual_seed(bits)
    W = torch.randn(40, 200)
    R = 2 ** (bits - 1) - 1
    # k above every row's max |w| / std: the clamp at +-R never bites.
    k = float((W.abs().amax(dim=1) / W.std(dim=1)).max()) * 1.01
    q, s = gptq_quantize_weight(W, torch.eye(200), clip_sigmas=k, bits=bits, act_order=act_order, block_size=64)
    expected = torch.round(W / s.float()[:, None])
    assert expected.abs().max() <= R and expected.abs().max() >= R // 2  # codes really used, none clipped
    assert torch.equal(q.to(torch.float32), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bits,k", [(3, 3.0), (6, 12.85), (7, 14.0)])
def test_hessian_norm_error_at_most_round_to_nearest(seed, bits, k):
    g = torch.Generator().manual_seed(100 + seed)
    W = torch.randn(32, 128, generator=g)
    H = _correlated_hessian(128, seed)
    q, s = gptq_quantize_weight(W, H, clip_sigmas=k, bits=bits)
    R = 2 ** (bits - 1) - 1
    rtn = torch.clamp(torch.round(W / s.float()[:, None]), -R, R)
    err_gptq = _h_error(W, q.float() * s.float()[:, None], H)
    err_rtn = _h_error(W, rtn * s.float()[:, None], H)
    assert err_gptq <= err_rtn
    assert q.dtype == torch.int8 and int(q.abs().max()) <= R


def test_scales_are_k_std_over_range_in_fp16():
    W = torch.randn(16, 64) * torch.linspace(0.1, 3.0, 16)[:, None]
    s = sdclip_scale(W, 11.5, 6)
    assert s.dtype == torch.float16
    # Independent: unbiased row std by hand.
    mean = W.mean(dim=1, keepdim=True)
    std = torch.sqrt(((W - mean) ** 2).sum(dim=1) / (W.shape[1] - 1))
    assert torch.equal(s, (11.5 * std / 31).to(torch.float16))
    q, s2 = gptq_quantize_weight(W, _correlated_hessian(64, 0), clip_sigmas=11.5, bits=6)
    assert torch.equal(s2, s)
    q7, s7 = gptq_quantize_weight(W, torch.eye(64), clip_sigmas=14.0, bits=7)
    assert torch.equal(s7, (14.0 * std / 63).to(torch.float16))


def test_clipping_at_k_sigma_and_dead_columns():
    torch.manual_seed(0)
    W = torch.randn(8, 32)
    W[0, 5] = 100.0  # far beyond 3 sigma: must clip to the top code
    H = _correlated_hessian(32, 1)
    H[:, 7] = 0
    H[7, :] = 0  # input 7 never fires
    q, s = gptq_quantize_weight(W, H, clip_sigmas=3.0, bits=4)
    assert int(q[0, 5]) == 7
    assert torch.isfinite(s.float()).all() and (s.float() > 0).all()
    assert torch.equal(q[:, 7], torch.zeros(8, dtype=torch.int8))
    zero_row = torch.zeros(4, 16)
    qz, sz = gptq_quantize_weight(zero_row, torch.eye(16), clip_sigmas=12.0, bits=6)
    assert torch.equal(qz, torch.zeros(4, 16, dtype=torch.int8)) and (sz.float() > 0).all()


def test_routing_follows_the_top_record():
    gptq = GPTQ()
    r = gptq.route
    assert (r("blocks.0.attn.c_q.weight", (512, 512)).bits, r("blocks.0.attn.c_q.weight", (512, 512)).clip_sigmas) == (6, 13.0)
    assert (r("blocks.3.mlp.fc.weight", (2048, 512)).bits, r("blocks.3.mlp.fc.weight", (2048, 512)).clip_sigmas) == (6, 11.5)
    assert (r("tok_emb.weight", (8192, 512)).bits, r("tok_emb.weight", (8192, 512)).clip_sigmas) == (7, 14.0)
    assert r("lm_head.weight", (8192, 512)).clip_sigmas == 12.85
    assert r("blocks.0.attn.attn_gate_w", (8, 12)).kind == "gate_int8"
    assert r("blocks.0.attn.attn_gate_w", (8, 2)).kind == "passthrough"  # below 32 elements
    assert r("smear_gate.weight", (1, 12)).kind == "passthrough"
    assert r("blocks.0.attn.q_gain", (8,)).kind == "passthrough"
    assert r("blocks.0.attn.c_k.weight", (256, 256)).kind == "passthrough"  # exactly 65,536 elements
    assert r("step", (70000,), is_float=False).kind == "passthrough"
    assert r("big_vector", (70000,)).kind == "int8"


def test_params_validate():
    with pytest.raises(ValueError, match="matrix_bits"):
        GPTQ.Params(matrix_bits=9).validate()
    with pytest.raises(ValueError, match="gate_int8_min_numel"):
        GPTQ.Params(gate_int8_min_numel=100, gate_int8_max_numel=10).validate()


def test_hessians_match_layer_outputs_and_come_from_the_calibration_batches():
    stack = micro_stack(overrides=["model.num_layers=2"])
    model, _, ctx = build_model(stack, seed=1)
    with torch.no_grad():
        for block in model.blocks:  # zero-initialized projections would make block 1's input trivial
            block.attn.proj.weight.normal_(0, 0.05)
            block.mlp.proj.weight.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 1024, (2, 32), generator=g), torch.zeros(2, 32, dtype=torch.long)) for _ in range(3)]
    targets = {"blocks.0.attn.c_q.weight", "blocks.0.attn.c_k.weight", "blocks.1.mlp.proj.weight", "tok_emb.weight"}
    H, n = collect_hessians(model, iter(batches), targets, torch.device("cpu"))
    assert n == 3 and set(H) == targets
    # Independent path: ||X W^T||^2 summed over batches = n * tr(W H W^T), X seen through output hooks.
    outs = {"c_q": 0.0, "proj": 0.0, "logits": 0.0}
    hooks = [
        model.blocks[0].attn.c_q.register_forward_hook(lambda m, a, o: outs.__setitem__("c_q", outs["c_q"] + float((o.double() ** 2).sum()))),
        model.blocks[1].mlp.proj.register_forward_hook(lambda m, a, o: outs.__setitem__("proj", outs["proj"] + float((o.double() ** 2).sum()))),
    ]
    with torch.no_grad():
        for x, _ in batches:
            outs["logits"] += float((model.head(model.hidden(x)).double() ** 2).sum())
    for h in hooks:
        h.remove()
    for name, key, w in [
        ("blocks.0.attn.c_q.weight", "c_q", model.blocks[0].attn.c_q.weight),
        ("blocks.1.mlp.proj.weight", "proj", model.blocks[1].mlp.proj.weight),
        ("tok_emb.weight", "logits", model.tok_emb.weight),
    ]:
        w = w.detach().double()
        assert n * float(torch.trace(w @ H[name].double() @ w.T)) == pytest.approx(outs[key], rel=1e-4)
    assert torch.allclose(H["blocks.0.attn.c_q.weight"], H["blocks.0.attn.c_k.weight"])  # same input
    assert torch.allclose(H["tok_emb.weight"], H["tok_emb.weight"].T)
    assert "head" not in vars(model)  # the temporary wrapper is gone


def test_quantize_reads_exactly_calibration_batches_of_training_data():
    stack = micro_stack(enable=["gptq"], overrides=["techniques.gptq.passthrough_max_numel=1024", "techniques.gptq.calibration_batches=5"])
    model, _, _ = build_model(stack)
    ctx = make_ctx(stack)
    served = []

    class Loader:
        def next_batch(self, tokens, seq_len, accum):
            served.append(tokens)
            x = torch.randint(0, 1024, (tokens // seq_len, seq_len))
            return x, x

    calib = CalibrationData(lambda: Loader(), batch_tokens=256, seq_len=64, seconds_left=lambda: float("inf"))
    plugin = [p for p in ctx.pm.get_plugins() if getattr(p, "name", "") == "gptq"][0]
    state = plugin.golf_quantize(model, calib, ctx)
    assert len(served) == 5
    assert state.entries["blocks.0.mlp.fc.weight"].route == "gptq (int6)"
    assert state.entries["tok_emb.weight"].route == "gptq (int7)"
    assert state.entries["blocks.0.attn.q_gain"].route == "passthrough (float16)"
    for name, qt in state:
        w = model.state_dict()[name].float()
        assert torch.allclose(qt.dequantize().float(), w, atol=float(w.abs().max()) * 0.2 + 1e-6)


def test_estimate_tracks_the_entropy_of_real_codes():
    gptq = GPTQ()
    torch.manual_seed(0)
    for name, shape in [("blocks.0.mlp.fc.weight", (1024, 256)), ("tok_emb.weight", (2048, 128)), ("blocks.0.attn.c_q.weight", (512, 256))]:
        route = gptq.route(name, shape)
        W = torch.randn(shape)
        s = sdclip_scale(W, route.clip_sigmas, route.bits)
        q = torch.clamp(torch.round(W / s.float()[:, None]), -(2 ** (route.bits - 1) - 1), 2 ** (route.bits - 1) - 1).to(torch.int8)
        actual = entropy_bytes(QuantizedTensor("int8_row", shape, "float32", {"q": q, "scale": s}))
        assert gptq.estimate_tensor_bytes(name, shape) == pytest.approx(actual, rel=0.05)
    assert gptq.estimate_tensor_bytes("blocks.0.attn_scale", (512,)) == 1024
    assert gptq.estimate_tensor_bytes("blocks.0.attn.attn_gate_w", (8, 12)) == 96 + 16


def test_reserve_goes_to_the_trainer_through_ctx_shared():
    stack = micro_stack(enable=["gptq"], overrides=["techniques.gptq.reserve_seconds=2.5"])
    ctx = make_ctx(stack)
    ctx.shared[RESERVE_KEY] = 1.0  # another technique's reserve adds up
    ctx.pm.hook.golf_configure(ctx=ctx)
    assert ctx.shared[RESERVE_KEY] == 3.5


def test_micro_run_quantizes_with_gptq(tmp_path):
    overrides = ["techniques.gptq.passthrough_max_numel=1024", "techniques.gptq.calibration_batches=2"]
    report = run_micro(tmp_path, enable=["gptq"], overrides=overrides)
    routes = {r["name"]: r["route"] for r in report["artifact"]["routes"]}
    assert routes["blocks.1.attn.proj.weight"] == "gptq (int6)"
    assert routes["tok_emb.weight"] == "gptq (int7)"
    assert routes["skip_weights"] == "passthrough (float16)"
    assert abs(report["post_quant"]["val_bpb"] - report["pre_quant"]["val_bpb"]) < 0.05
    assert math.isfinite(report["val_bpb"])
    reloaded = reload_and_score(micro_stack(enable=["gptq"], overrides=overrides), tmp_path / "run")
    assert reloaded.val_bpb == report["post_quant"]["val_bpb"]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "gptq: collected 13 Hessians from 2 training batches" in log
    assert "gptq (int6): blocks.attn.c_k.weight" in log
