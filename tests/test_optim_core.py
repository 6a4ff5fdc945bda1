"""Core optimizer step: parameter routing by role, Muon and AdamW update rules, clipping, momentum warm-up,
the quintic Newton-Schulz iteration and the warm-down schedule, each against the baseline's rule."""

from __future__ import annotations

import math

import pytest
import torch

from golf_core import hookimpl
from golf_core.model.gpt import CONTROL_TENSOR_NAME_PATTERNS
from golf_core.optim.bundle import OptimizerBundle
from golf_core.optim.muon import Muon
from golf_core.optim.newton_schulz import QUINTIC_COEFFS, newton_schulz5, scalar_map
from golf_core.optim.roles import params_by_role, role_of, set_role
from golf_core.stack import resolve
from golf_core.testing import build_model, catalog, make_ctx, make_pm, micro_stack, run_micro

# ---------------------------------------------------------------------------------------------
# Routing: every parameter in exactly one group, with the baseline's optimizer, lr and decay
# ---------------------------------------------------------------------------------------------

DISTINCT = [  # distinct values, so a parameter in the wrong group cannot pass by coincidence
    "techniques.muon.matrix_lr=0.011",
    "techniques.muon.scalar_lr=0.022",
    "techniques.muon.tied_embed_lr=0.033",
    "techniques.muon.embed_lr=0.044",
    "techniques.muon.head_lr=0.055",
    "techniques.muon.weight_decay=0.3",
    "techniques.muon.embed_weight_decay=0.1",
    "techniques.muon.scalar_weight_decay=0.2",
]


def baseline_route(name: str, param: torch.nn.Parameter, tied: bool) -> tuple[str, float, float]:
    """The root train_gpt.py's split, written out: (optimizer, lr, weight decay) for one parameter."""
    if name == "tok_emb.weight":
        return "AdamW", (0.033 if tied else 0.044), 0.1
    if name == "lm_head.weight":
        return "AdamW", 0.055, 0.0
    if name.startswith("blocks.") and param.ndim == 2 and not any(p in name for p in CONTROL_TENSOR_NAME_PATTERNS):
        return "Muon", 0.011, 0.3
    return "AdamW", 0.022, 0.2  # block vectors, control tensors, skip_weights


def built(overrides=(), model_overrides=(), pin=None, micro=False):
    """The baseline model (or the micro one) and the optimizer the core builds for it."""
    if micro:
        stack = micro_stack(overrides=[*DISTINCT, *overrides])
    else:
        stack = resolve(None, catalog(), overrides=["run.device='cpu'", *model_overrides, *DISTINCT, *overrides])
    model, _, _ = build_model(stack, seed=0)
    if pin:
        pin(model)
    pm = make_pm(stack)
    return model, pm.hook.golf_build_optimizer(model=model, ctx=make_ctx(stack, pm))


def membership(model, bundle):
    where: dict[int, list[tuple[str, float, float]]] = {}
    for opt in bundle.optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                where.setdefault(id(p), []).append((type(opt).__name__, group["lr"], group["weight_decay"]))
    return {name: where.get(id(p), []) for name, p in model.named_parameters()}


@pytest.mark.parametrize("tied", [True, False])
def test_every_baseline_parameter_in_one_group_with_its_lr(tied):
    # The baseline model (9 layers, width 512): every parameter in exactly one group, routed as
    # the baseline routes it.
    model, bundle = built(model_overrides=[f"model.tie_embeddings={str(tied).lower()}"])
    groups = membership(model, bundle)
    assert len(groups) == len(list(model.parameters()))
    for name, found in groups.items():
        assert len(found) == 1, f"{name} is in {len(found)} groups"
        kind, lr, wd = found[0]
        expected = baseline_route(name, dict(model.named_parameters())[name], tied)
        ok = kind == expected[0] and math.isclose(lr, expected[1]) and math.isclose(wd, expected[2])
        assert ok, f"{name}: {found[0]} != {expected}"
    kinds = {found[0][0] for found in groups.values()}
    assert kinds == {"Muon", "AdamW"}
    assert sum(1 for n in groups if n.endswith(("c_q.weight", "c_k.weight", "c_v.weight", "proj.weight", "fc.weight")) and groups[n][0][0] == "Muon") == 9 * 6
    assert bundle.params and {id(p) for p in bundle.params} == {id(p) for p in model.parameters()}


def test_a_pinned_role_wins_over_the_name_rule():
    def pin(model):
        set_role(model.blocks[0].attn.c_q.weight, "scalar")
        set_role(model.skip_weights, "matrix")

    model, bundle = built(pin=pin)
    groups = membership(model, bundle)
    assert groups["blocks.0.attn.c_q.weight"] == [("AdamW", pytest.approx(0.022), pytest.approx(0.2))]
    assert groups["skip_weights"] == [("Muon", pytest.approx(0.011), pytest.approx(0.3))]
    assert groups["blocks.1.attn.c_q.weight"][0][0] == "Muon"
    assert role_of("blocks.0.attn.c_q.weight", model.blocks[0].attn.c_q.weight) == "scalar"
    with pytest.raises(ValueError, match="unknown parameter role"):
        set_role(model.skip_weights, "vector")


def test_roles_follow_the_control_tensor_names():
    model, _, _ = build_model(micro_stack())
    by_role = {role: [n for n, _ in named] for role, named in params_by_role(model).items()}
    assert by_role["embed"] == ["tok_emb.weight"] and by_role["head"] == []
    assert "blocks.0.resid_mix" in by_role["scalar"]  # 2-D but a control tensor
    assert "skip_weights" in by_role["scalar"]  # 2-D but outside the blocks
    assert "blocks.0.mlp.fc.weight" in by_role["matrix"]


# ---------------------------------------------------------------------------------------------
# Update rules
# ---------------------------------------------------------------------------------------------


def test_muon_update_rule_with_decoupled_decay_at_the_scheduled_lr():
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(12, 5))  # tall: scale sqrt(12/5)
    idle = torch.nn.Parameter(torch.randn(4, 4))  # no gradient: left alone, decay included
    identity = lambda G, steps: G.float()  # noqa: E731 - isolates Muon's own arithmetic
    muon = Muon([W, idle], lr=0.1, momentum=0.9, backend_steps=5, orthogonalize=identity, weight_decay=0.5)
    bundle = OptimizerBundle([muon])
    bundle.set_lr_multiplier(0.5)  # scheduled lr = 0.05, and the decay must use it
    W0, idle0 = W.detach().clone(), idle.detach().clone()
    G1, G2 = torch.randn(12, 5), torch.randn(12, 5)
    W.grad = G1.clone()
    bundle.step(0)
    lr, m, scale = 0.05, 0.9, math.sqrt(12 / 5)

    def shared(update):  # updates travel in a bfloat16 buffer (the baseline's all-reduce buffer)
        return (scale * update).bfloat16().float()

    buf = G1
    W1 = W0 * (1 - lr * 0.5) - lr * shared(G1 + m * buf)
    torch.testing.assert_close(W.detach(), W1, rtol=1e-6, atol=1e-6)
    assert torch.equal(idle.detach(), idle0)
    W.grad = G2.clone()
    bundle.step(1)
    buf = m * buf + G2
    W2 = W1 * (1 - lr * 0.5) - lr * shared(G2 + m * buf)
    torch.testing.assert_close(W.detach(), W2, rtol=1e-6, atol=1e-6)


def test_adamw_groups_decay_with_the_scheduled_lr():
    # Zero gradients make Adam's step zero, so only the decoupled decay moves the weights.
    _, bundle = built()
    bundle.set_lr_multiplier(0.5)
    for opt in bundle.optimizers:
        if isinstance(opt, Muon):
            continue
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        before = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
        opt.step()
        after = [p.detach() for g in opt.param_groups for p in g["params"]]
        group = opt.param_groups[0]
        factor = 1 - group["base_lr"] * 0.5 * group["weight_decay"]
        for b, a in zip(before, after, strict=True):
            torch.testing.assert_close(a, b * factor)


def test_gradient_clipping_clips_the_global_norm():
    model, bundle = built(overrides=["techniques.muon.grad_clip_norm=0.3"], micro=True)
    params = list(model.parameters())
    torch.manual_seed(1)
    grads = [torch.randn_like(p) for p in params]
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    bundle.step(0)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    assert clipped == pytest.approx(0.3, rel=1e-5)
    for p, g in zip(params, grads, strict=True):  # direction kept: one common factor
        torch.testing.assert_close(p.grad, g * (0.3 / total), rtol=1e-4, atol=1e-9)
    # A gradient already inside the ball is untouched.
    small = [g * (0.1 / total) for g in grads]
    for p, g in zip(params, small, strict=True):
        p.grad = g.clone()
    bundle.step(1)
    for p, g in zip(params, small, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=0)


def test_no_clipping_by_default():
    model, bundle = built(micro=True)
    assert bundle.grad_clip_norm == 0.0
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    bundle.step(0)
    assert all(torch.equal(p.grad, torch.full_like(p, 10.0)) for p in model.parameters())


@pytest.mark.parametrize("step", [0, 250, 500, 1000])
def test_muon_momentum_warmup_follows_the_baseline(step):
    _, bundle = built()
    bundle.step(step)  # no gradients: only the per-step group settings change
    frac = min(step / 500, 1.0)  # root train_gpt.py: (1 - frac) * 0.85 + frac * 0.95
    expected = (1 - frac) * 0.85 + frac * 0.95
    muon = next(o for o in bundle.optimizers if isinstance(o, Muon))
    assert muon.param_groups[0]["momentum"] == pytest.approx(expected)
    assert {0: 0.85, 250: 0.90, 500: 0.95, 1000: 0.95}[step] == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# Newton-Schulz
# ---------------------------------------------------------------------------------------------


def svd_reference(G: torch.Tensor, coeffs) -> torch.Tensor:
    """The iteration acts on singular values only: U p(S / ||G||_F) V^T, in float64."""
    G = G.double()
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    return U @ torch.diag(scalar_map(S / torch.linalg.norm(G), coeffs)) @ Vh


def baseline_op_order(G: torch.Tensor, steps: int) -> torch.Tensor:
    """The baseline's bfloat16 op sequence, spelled out: normalize, go wide, X <- aX + (bA + (cA)A)X."""
    a, b, c = QUINTIC_COEFFS
    X = G.bfloat16()
    X = X / (X.norm() + 1e-7)
    tall = X.shape[0] > X.shape[1]
    X = X.t() if tall else X
    for _ in range(steps):
        A = torch.mm(X, X.t())
        X = a * X + torch.mm(b * A + torch.mm(c * A, A), X)
    return X.t() if tall else X


@pytest.mark.parametrize("shape", [(96, 40), (40, 96), (64, 64)])
def test_quintic_matches_a_float64_reference(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    reference = svd_reference(G, (QUINTIC_COEFFS,) * 5)
    torch.testing.assert_close(newton_schulz5(G, 5, eps=0.0, dtype=torch.float64), reference, rtol=0, atol=1e-10)
    production = newton_schulz5(G.float())  # bfloat16, as Muon runs it
    assert production.dtype == torch.bfloat16 and production.shape == G.shape
    assert (production.double() - reference).norm() / reference.norm() < 0.05
    assert torch.equal(production, baseline_op_order(G.float(), 5))


def test_orthogonalizer_hook_reaches_every_muon_matrix():
    stack = micro_stack()
    pm = make_pm(stack)
    assert pm.hook.golf_orthogonalizer(ctx=make_ctx(stack, pm)) is newton_schulz5

    calls = []

    class Counting:
        name = "counting_orthogonalizer"

        @hookimpl
        def golf_orthogonalizer(self, ctx):
            def orthogonalize(G, steps):
                calls.append((tuple(G.shape), steps))
                return newton_schulz5(G, steps)

            return orthogonalize

    model, _, _ = build_model(stack)
    pm = make_pm(stack, extra_plugins=[Counting()])
    bundle = pm.hook.golf_build_optimizer(model=model, ctx=make_ctx(stack, pm))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    bundle.step(0)
    matrices = [p for n, p in model.named_parameters() if role_of(n, p) == "matrix"]
    assert sorted(calls) == sorted((tuple(p.shape), 5) for p in matrices)


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------


def schedule(overrides=()):
    stack = micro_stack(overrides=list(overrides))
    pm = make_pm(stack)
    ctx = make_ctx(stack, pm)
    return pm.hook.golf_lr_schedule(ctx=ctx), ctx


def test_warmdown_matches_the_baseline_and_the_records():
    # Fraction form (the records' WARMDOWN_FRAC): 1, then (1 - progress) / frac.
    lr_mul, _ = schedule(["techniques.warmdown.warmdown_frac=0.85"])
    assert lr_mul(0.0) == 1.0 and lr_mul(0.1) == 1.0
    assert lr_mul(0.5) == pytest.approx(0.5 / 0.85) and lr_mul(1.0) == 0.0
    # Step form without a cap (root train_gpt.py): (iterations - step) / warmdown_iters in the last N steps.
    lr_mul, ctx = schedule(["train.iterations=1000", "techniques.warmdown.warmdown_iters=200"])
    for step in (0, 799, 800, 900, 999):
        expected = max((1000 - step) / 200, 0.0) if 800 <= step < 1000 else 1.0
        ctx.step = step
        assert lr_mul(step / 1000) == pytest.approx(expected), step


def test_invalid_params_are_refused():
    from golf_core import GolfError

    with pytest.raises(GolfError, match="momentum"):
        micro_stack(overrides=["techniques.muon.momentum=1.5"])
    with pytest.raises(GolfError, match="warmdown_frac"):
        micro_stack(overrides=["techniques.warmdown.warmdown_frac=2.0"])


# ---------------------------------------------------------------------------------------------
# Listener hooks, seen from a run
# ---------------------------------------------------------------------------------------------


class Listener:
    name = "listener"

    def __init__(self) -> None:
        self.events: list[tuple] = []

    @hookimpl
    def golf_after_optimizer_step(self, step, model, optimizer, ctx):
        self.events.append(("step", step, ctx.step, isinstance(optimizer, OptimizerBundle)))

    @hookimpl
    def golf_train_end(self, model, ctx):
        self.events.append(("train_end",))

    @hookimpl
    def golf_refine_quant(self, qstate, model, calib, ctx):
        self.events.append(("quant",))


@pytest.fixture(scope="module")
def listened(tmp_path_factory):
    listener = Listener()
    report = run_micro(tmp_path_factory.mktemp("listen"), overrides=["train.compile_warmup_steps=2"], extra_plugins=[listener])
    return listener.events, report


def test_after_optimizer_step_runs_once_per_training_step(listened):
    events, report = listened
    steps = [e for e in events if e[0] == "step"]
    # Once per training step, with the count of finished steps; never in the compile warm-up.
    assert steps == [("step", s, s, True) for s in range(1, report["steps"] + 1)]


def test_train_end_runs_between_training_and_quantization(listened):
    events, _ = listened
    assert [e[0] for e in events].count("train_end") == 1
    assert events.index(("train_end",)) == len([e for e in events if e[0] == "step"])  # after the last step
    assert events[-1] == ("quant",)  # and before quantization
