"""The gated U-Net skip merge: x <- lerp(w_k * skip, x, sigmoid(gamma_k))."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from golf_core.optim.roles import set_role


class SkipGates(nn.Module):
    """One gate vector per decoder skip position; stored as ``GPT.skip_gates`` (``skip_gates.weight``).

    ``forward(x, scaled_skip, k)`` returns ``(1 - g) * scaled_skip + g * x`` with
    ``g = sigmoid(weight[k])``, written as ``torch.lerp`` as in PR #1855.
    """

    def __init__(self, num_skips: int, dim: int, init: float = 0.0) -> None:
        super().__init__()
        # Name matches the control pattern "skip_gates": float32, Adam (scalar group), passthrough.
        self.weight = set_role(nn.Parameter(torch.full((num_skips, dim), float(init), dtype=torch.float32)), "scalar")

    def forward(self, x: Tensor, scaled_skip: Tensor, k: int) -> Tensor:
        g = torch.sigmoid(self.weight[k].to(dtype=x.dtype))[None, None, :]
        return torch.lerp(scaled_skip, x, g)


def build_skip_gates(spec, num_skips: int, init: float) -> SkipGates:
    return SkipGates(num_skips, spec.model_dim, init)
