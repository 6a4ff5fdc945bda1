"""Fused softcapped CE: kernels (interpreted on CPU, compiled on CUDA) against the eager reference.

On CPU the kernels run under Triton's interpreter, which works only when ``TRITON_INTERPRET=1``
was set before Triton was imported (Triton's own ``tl.zeros``/``tl.sum`` are ``@jit`` functions
fixed at import). A pytest session has usually imported it long before (the catalog imports
every plugin), so ``test_kernels_under_the_interpreter`` re-runs this file's ``test_kernel_*``
tests in a subprocess started with the variable set; those tests run directly when the whole
session was started with it. Shapes stay small: the interpreter runs each program in numpy.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from golf_core.model.gpt import softcapped_cross_entropy
from golf_core.testing import build_model, interpreted_session, micro_stack, rerun_under_triton_interpreter, run_micro
from plugins.fused_ce import FusedCE, ops, trainer_grad_scale
from plugins.fused_ce.ops import fused_softcapped_cross_entropy, single_pass_softcapped_cross_entropy

needs_triton = pytest.mark.skipif(ops.triton is None, reason="triton is not installed")
INTERPRETED = interpreted_session()
kernel_test = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 subprocess of test_kernels_under_the_interpreter"
)
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# (rows, vocab, softcap, logit scale): |logits| up to ~10x the softcap, odd row counts, vocabularies
# that are not a multiple of the block (1000, 777), several blocks per row (20000 > 8192), and a
# softcap large enough (100) to take the running-maximum path.
CASES = [(37, 1000, 30.0, 80.0), (5, 3000, 30.0, 400.0), (9, 777, 100.0, 300.0), (3, 20000, 30.0, 100.0), (1, 17, 30.0, 5.0)]


@pytest.fixture
def no_interpret(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _inputs(rows, vocab, scale, seed=0, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)
    targets = torch.randint(0, vocab, (rows,), generator=gen).to(device)
    return logits, targets


def _loss_and_grad(fn, logits, targets, softcap, upstream=1.0):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, targets, softcap)
    (loss * upstream).backward()
    return loss.detach(), x.grad


def _eager_float64(x, targets, softcap):
    # The eager reference's math (golf_core.model.gpt.softcapped_cross_entropy) in float64: its
    # float32 form loses 1 - tanh^2 to rounding where |x| >> C, which the kernels do not.
    return F.cross_entropy(softcap * torch.tanh(x.double() / softcap), targets)


def _assert_matches_reference(fn, logits, targets, softcap, upstream=1.0):
    ref_loss, ref_grad = _loss_and_grad(_eager_float64, logits, targets, softcap, upstream)
    loss, grad = _loss_and_grad(fn, logits, targets, softcap, upstream)
    assert loss.dtype == grad.dtype == logits.dtype
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(grad.double(), ref_grad.double(), rtol=1e-4, atol=1e-7 * float(ref_grad.abs().max()))


@needs_triton
def test_kernels_under_the_interpreter():
    if INTERPRETED:
        pytest.skip("this session is the interpreter run")
    rerun_under_triton_interpreter(__file__, expected_passed=2 * len(CASES) + 4)


@kernel_test
@pytest.mark.parametrize("rows,vocab,softcap,scale", CASES)
def test_kernel_two_pass_matches_eager(rows, vocab, softcap, scale):
    logits, targets = _inputs(rows, vocab, scale)
    _assert_matches_reference(fused_softcapped_cross_entropy, logits, targets, softcap, upstream=0.37)


@kernel_test
@pytest.mark.parametrize("rows,vocab,softcap,scale", CASES)
def test_kernel_single_pass_matches_eager(rows, vocab, softcap, scale):
    logits, targets = _inputs(rows, vocab, scale, seed=1)
    fn = lambda x, t, c: single_pass_softcapped_cross_entropy(x, t, c, grad_scale=0.25)  # noqa: E731
    _assert_matches_reference(fn, logits, targets, softcap, upstream=0.25)


@kernel_test
@pytest.mark.parametrize("block", [64, 256])
def test_kernel_whole_blocks_and_extreme_logits(monkeypatch, block):
    # Rows that are a whole number of blocks (the unmasked EVEN path, as at the record's 8192)
    # and logits from -1e38 to 1e38: every z saturates at +-C without NaN.
    monkeypatch.setitem(ops.CONFIG, "fwd", {"block": block, "warps": 4})
    monkeypatch.setitem(ops.CONFIG, "bwd", {"block": block, "warps": 4})
    monkeypatch.setitem(ops.CONFIG, "fused", {"block": block, "warps_per_512": 1, "max_warps": 4})
    logits, targets = _inputs(6, 4 * block, 200.0, seed=5)
    logits[0, :7] = torch.tensor([-3e38, -1e6, -700.0, 0.0, 700.0, 1e6, 3e38])
    targets[0] = 2
    _assert_matches_reference(fused_softcapped_cross_entropy, logits, targets, 30.0, upstream=0.5)
    fn = lambda x, t, c: single_pass_softcapped_cross_entropy(x, t, c, grad_scale=0.5)  # noqa: E731
    _assert_matches_reference(fn, logits[:, :block], targets % block, 30.0, upstream=0.5)
    z = torch.linspace(-30.0, 30.0, 4 * block)[None, :].repeat(2, 1)
    rows, lse = torch.ops.golf_fused_ce.softcap_ce(z * 1e3, torch.tensor([0, 3]), 30.0)
    torch.testing.assert_close(lse, torch.logsumexp(30.0 * torch.tanh(z * 1e3 / 30.0), dim=-1), rtol=1e-6, atol=0.0)


@kernel_test
def test_kernel_launches_are_the_kernels(monkeypatch):
    # A wrong kernel must not hide behind the fallback: count the launches.
    launched = []
    real = ops.kernel
    monkeypatch.setattr(ops, "kernel", lambda fn: launched.append(fn.__name__) or real(fn))
    logits, targets = _inputs(7, 300, 50.0)
    _loss_and_grad(fused_softcapped_cross_entropy, logits, targets, 30.0)
    _loss_and_grad(lambda x, t, c: single_pass_softcapped_cross_entropy(x, t, c), logits, targets, 30.0)
    assert launched == ["softcap_ce_fwd", "softcap_ce_bwd", "softcap_ce_fused"]


@kernel_test
def test_kernel_strided_rows_and_per_row_upstream():
    # Rows with a stride larger than the vocabulary (a slice of a wider tensor), and an upstream
    # gradient that differs per row (sum of weighted losses): the backward must use both.
    wide, _ = _inputs(11, 400, 90.0, seed=3)
    logits = wide[:, :333]
    targets = torch.randint(0, 333, (11,), generator=torch.Generator().manual_seed(3))
    weights = torch.linspace(0.1, 2.0, 11)
    x_ref = logits.clone().requires_grad_()
    ref_rows = torch.nn.functional.cross_entropy(30.0 * torch.tanh(x_ref / 30.0), targets, reduction="none")
    (ref_rows * weights).sum().backward()
    x = logits.clone().requires_grad_()
    rows, _lse = torch.ops.golf_fused_ce.softcap_ce(x, targets, 30.0)
    (rows * weights).sum().backward()
    torch.testing.assert_close(rows.detach(), ref_rows.detach(), rtol=1e-4, atol=0.0)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-7 * float(x_ref.grad.abs().max()))


@pytest.mark.parametrize("rows,vocab,softcap,scale", CASES[:3])
def test_torch_fallback_matches_eager(no_interpret, rows, vocab, softcap, scale):
    logits, targets = _inputs(rows, vocab, scale, seed=2)
    _assert_matches_reference(fused_softcapped_cross_entropy, logits, targets, softcap, upstream=2.0)
    fn = lambda x, t, c: single_pass_softcapped_cross_entropy(x, t, c, grad_scale=2.0)  # noqa: E731
    _assert_matches_reference(fn, logits, targets, softcap, upstream=2.0)


def test_single_pass_refuses_another_upstream_gradient(no_interpret):
    logits, targets = _inputs(4, 50, 10.0)
    x = logits.requires_grad_()
    loss = single_pass_softcapped_cross_entropy(x, targets, 30.0, grad_scale=0.5)
    with pytest.raises(RuntimeError, match="single_pass"):
        loss.backward()


def test_single_pass_without_autograd_writes_no_gradient(no_interpret, monkeypatch):
    calls = []
    monkeypatch.setattr(ops, "_grad_reference", lambda *a: calls.append(a))
    logits, targets = _inputs(4, 50, 10.0)
    with torch.no_grad():
        loss = single_pass_softcapped_cross_entropy(logits, targets, 30.0)
    torch.testing.assert_close(loss, softcapped_cross_entropy(logits, targets, 30.0), rtol=1e-5, atol=0.0)
    assert calls == []


@pytest.mark.parametrize("single_pass", [False, True])
def test_torch_compile_fullgraph_traces_the_op(no_interpret, single_pass):
    # Dynamo + AOTAutograd through the fake and the autograd registration (aot_eager keeps the
    # CPU test fast; the inductor path is checked on the device).
    gen = torch.Generator().manual_seed(4)
    h = torch.randn(19, 16, generator=gen, requires_grad=True)
    w = torch.randn(70, 16, generator=gen, requires_grad=True)
    targets = torch.randint(0, 70, (19,), generator=gen)
    loss_fn = (lambda x, t, c: single_pass_softcapped_cross_entropy(x, t, c, 0.5)) if single_pass else fused_softcapped_cross_entropy

    def step(h, w, t, fn):
        return fn(h @ w.t() * 20.0, t, 30.0)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(h, w, targets, loss_fn)
    (loss * 0.5).backward()
    got = (loss.detach(), h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    ref = step(h, w, targets, softcapped_cross_entropy)
    (ref * 0.5).backward()
    torch.testing.assert_close(got[0], ref.detach(), rtol=1e-5, atol=0.0)
    torch.testing.assert_close(got[1], h.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got[2], w.grad, rtol=1e-4, atol=1e-7)


def test_plugin_hands_the_model_the_fused_loss():
    _model, spec, _ctx = build_model(micro_stack(["fused_ce"]))
    assert spec.loss_fn is fused_softcapped_cross_entropy
    stack = micro_stack(["fused_ce"], ["techniques.fused_ce.single_pass=true", "train.grad_accum_steps=4"])
    _model, spec, ctx = build_model(stack)
    assert spec.loss_fn.func is single_pass_softcapped_cross_entropy
    assert spec.loss_fn.keywords == {"grad_scale": 0.25} == {"grad_scale": trainer_grad_scale(ctx)}
    assert FusedCE.stage == "loss" and FusedCE.origin_pr == 1787


def test_micro_run(tmp_path):
    report = run_micro(tmp_path, enable=["fused_ce"])
    assert report["steps"] == 3
    losses = [loss for _, loss, _ in report["train_curve"]]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


# ---------------------------------------------------------------------------------------------
# On the device machine (pytest -m cuda)
# ---------------------------------------------------------------------------------------------


@cuda
@needs_cuda
@pytest.mark.parametrize("rows,vocab,softcap,scale", CASES + [(1023, 8192, 30.0, 60.0)])
def test_cuda_float32_matches_eager(rows, vocab, softcap, scale):
    logits, targets = _inputs(rows, vocab, scale, device="cuda")
    _assert_matches_reference(fused_softcapped_cross_entropy, logits, targets, softcap, upstream=0.37)
    fn = lambda x, t, c: single_pass_softcapped_cross_entropy(x, t, c, grad_scale=0.37)  # noqa: E731
    _assert_matches_reference(fn, logits, targets, softcap, upstream=0.37)


@cuda
@needs_cuda
def test_cuda_bfloat16_matches_eager():
    logits, targets = _inputs(4097, 8192, 20.0, device="cuda", dtype=torch.bfloat16)
    ref_loss, ref_grad = _loss_and_grad(softcapped_cross_entropy, logits, targets, 30.0)
    for fn in (fused_softcapped_cross_entropy, single_pass_softcapped_cross_entropy):
        loss, grad = _loss_and_grad(fn, logits, targets, 30.0)
        assert grad.dtype == torch.bfloat16
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0.0)
        assert float((grad.float() - ref_grad.float()).norm() / ref_grad.float().norm()) < 1e-2


@cuda
@needs_cuda
@pytest.mark.parametrize("single_pass", [False, True])
def test_cuda_inductor_compile(single_pass):
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(509, 64, generator=gen).cuda().requires_grad_()
    w = torch.randn(1000, 64, generator=gen).cuda().requires_grad_()
    targets = torch.randint(0, 1000, (509,), generator=gen).cuda()
    loss_fn = (lambda x, t, c: single_pass_softcapped_cross_entropy(x, t, c, 1.0)) if single_pass else fused_softcapped_cross_entropy

    def step(h, w, t, fn):
        return fn(h @ w.t() * 20.0, t, 30.0)

    loss = torch.compile(step, fullgraph=True)(h, w, targets, loss_fn)
    loss.backward()
    got = (loss.detach(), h.grad.clone())
    h.grad = None
    ref = step(h, w, targets, softcapped_cross_entropy)
    ref.backward()
    torch.testing.assert_close(got[0], ref.detach(), rtol=1e-4, atol=0.0)
    torch.testing.assert_close(got[1], h.grad, rtol=1e-3, atol=1e-6)
