"""Fused LeakyReLU² MLP: kernels against a float64 reference, the module swap, end-to-end runs.

On CPU the kernels run under Triton's interpreter, which works only when ``TRITON_INTERPRET=1``
was set before Triton was imported, so ``test_kernels_under_the_interpreter`` re-runs this file's
``test_kernel_*`` tests in a subprocess started with it (they run directly in a session started
with it). The interpreter's bf16 ``tl.dot`` is unreliable, so CPU kernel checks are float32;
bf16 is checked on the device (``pytest -m cuda``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from golf_core import GolfError, Technique, hookimpl
from golf_core.model.spec import ModelSpec, relu_squared
from golf_core.testing import (
    build_model,
    interpreted_session,
    make_ctx,
    make_pm,
    micro_stack,
    rerun_under_triton_interpreter,
    run_micro,
)
import plugins.fused_mlp as plugin
from plugins.fused_mlp import FusedLeakyReLUSqMLP, computes_leaky_relu_sq, ops
from plugins.fused_mlp.ops import fused_leaky_relu_sq_mlp

cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_triton = pytest.mark.skipif(ops.triton is None, reason="triton is not installed")
INTERPRETED = interpreted_session()
kernel_test = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 subprocess of test_kernels_under_the_interpreter"
)

# (tokens, width, hidden): odd token counts, widths and hiddens that are not multiples of the
# 32-wide interpreter tiles (boundary masking / TMA padding on every edge).
SHAPES = [(37, 48, 80), (64, 32, 96), (5, 16, 40)]


@pytest.fixture
def no_interpret(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _weights(tokens, width, hidden, seed=0, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, width, generator=gen)
    w1 = torch.randn(hidden, width, generator=gen) / width**0.5
    w2 = torch.randn(width, hidden, generator=gen) / hidden**0.5
    g = torch.randn(tokens, width, generator=gen)
    return [t.to(device=device, dtype=dtype) for t in (x, w1, w2, g)]


def _reference(x, w1, w2, g, slope):
    """Float64 eager MLP, its output and the gradients of ``<out, g>``."""
    xs = [t.detach().double().requires_grad_() for t in (x, w1, w2)]
    out = F.leaky_relu(xs[0] @ xs[1].t(), slope).square() @ xs[2].t()
    grads = torch.autograd.grad(out, xs, g.double())
    return out.detach(), grads


def _fused(x, w1, w2, g, slope, impl):
    xs = [t.detach().clone().requires_grad_() for t in (x, w1, w2)]
    out = fused_leaky_relu_sq_mlp(xs[0], xs[1], xs[2], slope, impl)
    grads = torch.autograd.grad(out, xs, g)
    return out.detach(), grads


def _assert_close_to_reference(x, w1, w2, g, slope, impl, rtol=1e-4):
    ref_out, ref_grads = _reference(x, w1, w2, g, slope)
    out, grads = _fused(x, w1, w2, g, slope, impl)
    for got, want in zip((out, *grads), (ref_out, *ref_grads)):
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=rtol * float(want.abs().max()))


@needs_triton
def test_kernels_under_the_interpreter():
    if INTERPRETED:
        pytest.skip("this session is the interpreter run")
    rerun_under_triton_interpreter(__file__, expected_passed=2 * len(SHAPES) + 2)


@kernel_test
@pytest.mark.parametrize("impl", ["portable", "tma"])
@pytest.mark.parametrize("tokens,width,hidden", SHAPES)
def test_kernel_matches_float64_reference(impl, tokens, width, hidden):
    x, w1, w2, g = _weights(tokens, width, hidden)
    _assert_close_to_reference(x, w1, w2, g, 0.5, impl)


@kernel_test
def test_kernel_other_slope_and_leading_dims():
    x, w1, w2, g = _weights(2 * 9, 24, 56, seed=3)
    ref_out, ref_grads = _reference(x, w1, w2, g, 0.1)
    xs = [t.clone().requires_grad_() for t in (x.reshape(2, 9, 24), w1, w2)]
    out = fused_leaky_relu_sq_mlp(*xs, 0.1, "tma")
    assert out.shape == (2, 9, 24)
    grads = torch.autograd.grad(out, xs, g.reshape(2, 9, 24))
    torch.testing.assert_close(out.reshape(18, 24).double(), ref_out, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[0].reshape(18, 24).double(), ref_grads[0], rtol=1e-4, atol=1e-6)


@kernel_test
def test_kernel_launches_are_the_kernels(monkeypatch):
    launched = []
    real = ops.kernel
    monkeypatch.setattr(ops, "kernel", lambda fn: launched.append(fn.__name__) or real(fn))
    x, w1, w2, g = _weights(9, 16, 32)
    _fused(x, w1, w2, g, 0.5, "auto")
    _fused(x, w1, w2, g, 0.5, "portable")
    assert launched == ["mlp_act_matmul_tma"] * 2 + ["mlp_act_matmul"] * 2


@pytest.mark.parametrize("slope", [0.5, 0.0])
def test_torch_fallback_matches_reference(no_interpret, slope):
    x, w1, w2, g = _weights(13, 24, 40, seed=1)
    _assert_close_to_reference(x, w1, w2, g, slope, "auto")


def test_activation_derivative_by_hand():
    pre = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(ops.leaky_relu_sq(pre, 0.5), torch.tensor([1.0, 0.0625, 0.0, 0.25, 9.0]))
    assert torch.equal(ops.leaky_relu_sq_grad(pre, 0.5), torch.tensor([-1.0, -0.25, 0.0, 1.0, 6.0]))


def _stack(extra=()):
    return micro_stack(["leaky_relu_sq", "fused_mlp"], ["techniques.leaky_relu_sq.mlp_mult=3.0", *extra])


def test_patch_swaps_every_mlp_and_keeps_names_and_values(no_interpret):
    fused, spec, _ = build_model(_stack(), seed=7)
    plain, _, _ = build_model(micro_stack(["leaky_relu_sq"], ["techniques.leaky_relu_sq.mlp_mult=3.0"]), seed=7)
    assert all(isinstance(block.mlp, FusedLeakyReLUSqMLP) for block in fused.blocks)
    assert fused.blocks[0].mlp.fc.weight.shape == (3 * spec.model_dim, spec.model_dim)
    fused_state, plain_state = fused.state_dict(), plain.state_dict()
    assert list(fused_state) == list(plain_state)
    assert "blocks.0.mlp.fc.weight" in fused_state and "blocks.0.mlp.proj.weight" in fused_state
    assert all(torch.equal(fused_state[k], plain_state[k]) for k in plain_state)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in plain.named_parameters()]


def test_training_forward_equals_the_eager_mlp(no_interpret):
    model, _, _ = build_model(_stack(), seed=3)
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        mlp.proj.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, 7, mlp.fc.weight.shape[1], generator=torch.Generator().manual_seed(2))
    mlp.train()
    out_fused = mlp(x)
    out_fused.square().sum().backward()
    grads_fused = [p.grad.clone() for p in (mlp.fc.weight, mlp.proj.weight)]
    mlp.zero_grad()
    mlp.eval()
    out_eager = mlp(x)
    out_eager.square().sum().backward()
    torch.testing.assert_close(out_fused, out_eager, rtol=1e-5, atol=1e-6)
    for got, p in zip(grads_fused, (mlp.fc.weight, mlp.proj.weight)):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-6)


def test_the_model_trains_through_the_fused_op(no_interpret, monkeypatch):
    # The swap must not be bypassed by the way blocks call their MLP: count the fused calls.
    calls = []
    real = plugin.fused_leaky_relu_sq_mlp
    monkeypatch.setattr(plugin, "fused_leaky_relu_sq_mlp", lambda *a: calls.append(a[0].shape) or real(*a))
    model, spec, _ = build_model(_stack(), seed=1)
    ids = torch.randint(0, spec.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    model.train()
    model(ids, ids).backward()
    assert len(calls) == spec.num_layers and model.blocks[0].mlp.fc.weight.grad is not None
    calls.clear()
    model.eval()
    with torch.no_grad():
        model.forward_logits(ids)
    assert calls == []
    mlp = model.blocks[0].mlp
    mlp.train()
    x = torch.randn(1, 4, spec.model_dim)
    mlp(x, torch.nn.ModuleDict({"mlp": torch.nn.Identity()}))  # a whole-sublayer adapter: still fused
    assert len(calls) == 1
    lora = torch.nn.Linear(spec.model_dim, mlp.fc.weight.shape[0], bias=False)
    torch.testing.assert_close(mlp(x, torch.nn.ModuleDict({"mlp_fc": lora})), mlp.proj(mlp.activation(mlp.fc(x) + lora(x))))
    assert len(calls) == 1  # an adapter inside the MLP takes the core forward


def test_requires_leaky_relu_sq():
    with pytest.raises(GolfError, match="requires 'leaky_relu_sq'"):
        micro_stack(["fused_mlp"])


def test_activation_probe():
    assert computes_leaky_relu_sq(lambda t: ops.leaky_relu_sq(t, 0.5), 0.5)
    assert not computes_leaky_relu_sq(lambda t: ops.leaky_relu_sq(t, 0.5), 0.1)
    assert not computes_leaky_relu_sq(relu_squared, 0.5)


class Relu2Back(Technique):
    """Throwaway plugin: puts relu^2 back into one block after the model is built."""

    name = "relu2_back"
    stage = "model"

    @hookimpl
    def golf_patch_model(self, model, ctx):
        model.blocks[1].mlp.activation = relu_squared


def test_refuses_a_different_activation():
    stack = _stack()
    pm = make_pm(stack, extra_plugins=[Relu2Back()])  # extra plugins run first
    ctx = make_ctx(stack, pm=pm)
    spec = ModelSpec.from_config(ctx.cfg.model)
    pm.hook.golf_model_spec(spec=spec, ctx=ctx)
    model = pm.hook.golf_build_model(spec=spec, ctx=ctx)
    with pytest.raises(GolfError, match=r"blocks\.1\.mlp does not compute leaky_relu"):
        pm.hook.golf_patch_model(model=model, ctx=ctx)


def test_torch_compile_fullgraph_traces_the_op(no_interpret):
    x, w1, w2, g = _weights(11, 16, 48, seed=5)
    xs = [t.clone().requires_grad_() for t in (x.reshape(1, 11, 16), w1, w2)]
    compiled = torch.compile(lambda a, b, c: fused_leaky_relu_sq_mlp(a, b, c, 0.5), fullgraph=True, backend="aot_eager")
    out = compiled(*xs)
    grads = torch.autograd.grad(out, xs, g.reshape(1, 11, 16))
    ref_out, ref_grads = _reference(x, w1, w2, g, 0.5)
    torch.testing.assert_close(out.reshape(11, 16).double(), ref_out, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1].double(), ref_grads[1], rtol=1e-4, atol=1e-6)


def test_micro_run_with_fused_ce_and_fused_mlp(tmp_path, no_interpret):
    report = run_micro(tmp_path, enable=["leaky_relu_sq", "fused_mlp", "fused_ce"])
    assert report["steps"] == 3
    losses = [loss for _, loss, _ in report["train_curve"]]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


# ---------------------------------------------------------------------------------------------
# On the device machine (pytest -m cuda)
# ---------------------------------------------------------------------------------------------


@cuda
@needs_cuda
@pytest.mark.parametrize("impl", ["auto", "portable"])
def test_cuda_bfloat16_matches_eager(impl):
    x, w1, w2, g = _weights(4099, 512, 2048, device="cuda", dtype=torch.bfloat16)
    ref_out, ref_grads = _reference(x, w1, w2, g, 0.5)
    out, grads = _fused(x, w1, w2, g, 0.5, impl)
    eager_out, eager_grads = _fused_eager_bf16(x, w1, w2, g)
    for got, eager, want in zip((out, *grads), (eager_out, *eager_grads), (ref_out, *ref_grads)):
        err = float((got.double() - want).norm() / want.norm())
        eager_err = float((eager.double() - want).norm() / want.norm())
        assert err < 1.5 * eager_err + 1e-3, (err, eager_err)


def _fused_eager_bf16(x, w1, w2, g):
    xs = [t.detach().clone().requires_grad_() for t in (x, w1, w2)]
    out = F.linear(F.leaky_relu(F.linear(xs[0], xs[1]), 0.5).square(), xs[2])
    return out.detach(), torch.autograd.grad(out, xs, g)


@cuda
@needs_cuda
def test_cuda_float32_matches_reference():
    x, w1, w2, g = _weights(1001, 96, 200, device="cuda")
    _assert_close_to_reference(x, w1, w2, g, 0.5, "auto")


@cuda
@needs_cuda
def test_cuda_tiny_stack_50_steps_matches_eager(tmp_path, monkeypatch):
    traced = []  # the compiled step calls the op's Python wrapper while tracing
    real = plugin.fused_leaky_relu_sq_mlp
    monkeypatch.setattr(plugin, "fused_leaky_relu_sq_mlp", lambda *a: traced.append(1) or real(*a))
    overrides = [
        "run.device='cuda'", "run.compile='on'", "train.iterations=50", "train.train_log_every=10",
        "model.model_dim=128", "train.train_batch_tokens=8192", "train.train_seq_len=256",
        "techniques.leaky_relu_sq.mlp_mult=4.0",
    ]
    eager = run_micro(tmp_path / "eager", enable=["leaky_relu_sq"], overrides=overrides)
    fused = run_micro(tmp_path / "fused", enable=["leaky_relu_sq", "fused_mlp", "fused_ce"], overrides=overrides)
    single = run_micro(
        tmp_path / "single", enable=["leaky_relu_sq", "fused_mlp", "fused_ce"],
        overrides=[*overrides, "techniques.fused_ce.single_pass=true"],
    )
    losses = {name: r["train_curve"][-1][1] for name, r in (("eager", eager), ("fused", fused), ("single_pass", single))}
    print("50-step train loss: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
          + "; val_bpb: " + ", ".join(f"{k} {r['val_bpb']:.4f}" for k, r in (("eager", eager), ("fused", fused), ("single_pass", single))))
    assert eager["steps"] == fused["steps"] == single["steps"] == 50
    assert traced, "the fused MLP op was never called: the swap was bypassed"
    assert losses["eager"] < eager["train_curve"][0][1] - 0.3
    assert abs(losses["fused"] - losses["eager"]) < 0.05
    assert abs(losses["single_pass"] - losses["eager"]) < 0.05
