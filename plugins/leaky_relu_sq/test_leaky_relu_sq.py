"""LeakyReLU²: hand-worked values, derivative, relu² identity at slope 0, MLP width."""

from __future__ import annotations

import pytest
import torch

from golf_core.testing import build_model, micro_stack, run_micro
from plugins.leaky_relu_sq import LeakyReLUSquared, leaky_relu_squared


def test_hand_worked_values():
    p = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert torch.equal(leaky_relu_squared(p), torch.tensor([1.0, 0.25, 0.0, 1.0, 9.0]))
    torch.testing.assert_close(leaky_relu_squared(p, 0.1), torch.tensor([0.04, 0.01, 0.0, 1.0, 9.0]))


@pytest.mark.parametrize("slope", [0.5, 0.1])
def test_derivative(slope):
    p = torch.tensor([-3.0, -0.5, 0.25, 2.0], requires_grad=True)
    leaky_relu_squared(p, slope).sum().backward()
    expected = torch.where(p > 0, 2 * p, 2 * slope**2 * p).detach()
    torch.testing.assert_close(p.grad, expected)


def test_slope_zero_keeping_width_is_the_core_model():
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    core, _, _ = build_model(micro_stack([]), seed=2)
    relu2, spec, _ = build_model(
        micro_stack(["leaky_relu_sq"], ["techniques.leaky_relu_sq.negative_slope=0.0", "techniques.leaky_relu_sq.mlp_mult=0.0"]),
        seed=2,
    )
    assert spec.mlp_mult == 2.0
    with torch.no_grad():
        for m in (core, relu2):  # give the MLP a non-zero output so the activation matters
            for block in m.blocks:
                block.mlp.proj.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        assert torch.equal(core.forward_logits(ids), relu2.forward_logits(ids))
    leaky, _, _ = build_model(micro_stack(["leaky_relu_sq"], ["techniques.leaky_relu_sq.mlp_mult=0.0"]), seed=2)
    with torch.no_grad():
        for block in leaky.blocks:
            block.mlp.proj.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        assert not torch.equal(core.forward_logits(ids), leaky.forward_logits(ids))


def test_mlp_width_follows_the_multiplier():
    model, spec, _ = build_model(micro_stack(["leaky_relu_sq"]))
    assert spec.mlp_mult == 4.0
    assert model.blocks[0].mlp.fc.weight.shape == (4 * spec.model_dim, spec.model_dim)


def test_validation():
    with pytest.raises(ValueError, match="negative_slope"):
        LeakyReLUSquared.Params(negative_slope=-0.1).validate()
    with pytest.raises(ValueError, match="mlp_mult"):
        LeakyReLUSquared.Params(mlp_mult=-1.0).validate()


def test_micro_run(tmp_path):
    report = run_micro(tmp_path, enable=["leaky_relu_sq"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
