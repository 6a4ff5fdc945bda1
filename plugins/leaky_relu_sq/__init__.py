"""LeakyReLU² technique package: the plugin class and the activation function."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch.nn.functional as F
from torch import Tensor

from golf_core import hookimpl
from golf_core.config import param
from golf_core.technique import Technique


def leaky_relu_squared(x: Tensor, negative_slope: float = 0.5) -> Tensor:
    """``leaky_relu(x, slope)^2``: ``x^2`` for ``x > 0``, ``slope^2 x^2`` otherwise."""
    return F.leaky_relu(x, negative_slope=negative_slope).square()


class LeakyReLUSquared(Technique):
    """LeakyReLU(0.5)² MLP: MLP(x) = W_down (leaky_relu(W_up x, 0.5))², at 4x width.

    Replaces the baseline's relu² (``spec.mlp_activation``): negative pre-activations contribute
    ``0.25 p²`` instead of nothing, so they keep a gradient (``0.5 p``). It also sets the MLP width
    (``spec.mlp_mult``) to the records' multiplier: 3x in PR #549, 4x from PR #1218 through PR #1855.
    The fused Triton GEMM+activation kernel of PR #1530/#1855 is a speed-only variant of the same
    math and is not part of this technique. Origin PR #493 (parinzee); first record PR #549.
    """

    name = "leaky_relu_sq"
    stage = "model"
    origin_pr = 493
    credits = "parinzee (PR #493); PR #549 (first record); multiplier 4x from clarkkev (PR #1218)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        negative_slope: float = param(0.5, "leaky_relu slope for negative inputs (1204's NEGATIVE_SLOPE; 0 = relu^2)")
        mlp_mult: float = param(4.0, "MLP hidden width as a multiple of model_dim; overrides model.mlp_mult (0 keeps it)")

        def validate(self) -> None:
            if not 0.0 <= self.negative_slope <= 1.0:
                raise ValueError(f"negative_slope={self.negative_slope} must lie in [0, 1]")
            if self.mlp_mult < 0:
                raise ValueError(f"mlp_mult={self.mlp_mult} must be positive, or 0 to keep model.mlp_mult")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        spec.mlp_activation = partial(leaky_relu_squared, negative_slope=self.params.negative_slope)
        if self.params.mlp_mult > 0:
            spec.mlp_mult = self.params.mlp_mult


__all__ = ["LeakyReLUSquared", "leaky_relu_squared"]
