"""Z-loss: the term against a per-row float64 sum, its gradient against the closed form, the model's loss, a micro run.

Run after ``pip install -e .`` (golf finds the technique through its entry point).
"""

from __future__ import annotations

import math

import pytest
import torch

from golf_core.model.gpt import softcapped_cross_entropy
from golf_core.testing import build_model, catalog, make_ctx, make_pm, micro_stack, run_micro
from golf_zloss import z_term

if "zloss" not in catalog():
    raise RuntimeError(
        "technique 'zloss' is not installed: run `pip install -e .` in examples/golf-zloss "
        "(it registers the golf.plugins entry point; GOLF_DISABLE_PLUGIN_AUTOLOAD must not be 1)"
    )


def loss_fn(weight: float):
    stack = micro_stack(enable=["zloss"], overrides=[f"techniques.zloss.weight={weight}"])
    pm = make_pm(stack)
    return pm.hook.golf_loss_fn(ctx=make_ctx(stack, pm))


def test_adds_weight_times_mean_squared_log_normalizer():
    g = torch.Generator().manual_seed(0)
    logits, targets, cap = torch.randn(7, 13, generator=g) * 25, torch.randint(0, 13, (7,), generator=g), 30.0
    got = loss_fn(0.5)(logits, targets, cap)
    # Reference: log Z row by row in float64, straight from the definition.
    capped = [[cap * math.tanh(v / cap) for v in row] for row in logits.tolist()]
    log_z = [math.log(sum(math.exp(v) for v in row)) for row in capped]
    expected = float(softcapped_cross_entropy(logits, targets, cap)) + 0.5 * sum(z * z for z in log_z) / len(log_z)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_gradient_is_the_closed_form():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(5, 9, generator=g, dtype=torch.float64) * 20).requires_grad_()
    cap = 30.0
    z_term(logits, cap).backward()
    # d/dz_iv of mean_i (log Z_i)^2 = (2 / N) log Z_i softmax(c_i)_v (1 - tanh^2(z_iv / c)).
    with torch.no_grad():
        t = torch.tanh(logits / cap)
        capped = cap * t
        log_z = torch.logsumexp(capped, dim=-1, keepdim=True)
        closed = 2.0 / logits.shape[0] * log_z * torch.exp(capped - log_z) * (1.0 - t * t)
    torch.testing.assert_close(logits.grad.double(), closed, rtol=1e-4, atol=1e-9)  # the term is computed in float32


def test_weight_zero_is_the_plain_loss():
    logits, targets = torch.randn(4, 6), torch.randint(0, 6, (4,))
    torch.testing.assert_close(loss_fn(0.0)(logits, targets, 30.0), softcapped_cross_entropy(logits, targets, 30.0))


def test_model_loss_grows_by_the_term():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randint(0, 1024, (2, 16), generator=g), torch.randint(0, 1024, (2, 16), generator=g)
    base, _, _ = build_model(micro_stack(), seed=0)
    model, _, _ = build_model(micro_stack(enable=["zloss"], overrides=["techniques.zloss.weight=0.01"]), seed=0)
    base.eval()
    model.eval()
    with torch.no_grad():
        log_z = torch.logsumexp(base.forward_logits(x), dim=-1)
        torch.testing.assert_close(model(x, y), base(x, y) + 0.01 * log_z.square().mean())


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["zloss"])
    assert report["steps"] == 3 and math.isfinite(report["val_bpb"])
