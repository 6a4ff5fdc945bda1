"""Polar Express: Muon's Newton-Schulz with a minimax-optimal coefficient tuple per iteration.

Origin: PR #1344 (openai/parameter-golf); adopted in the records by PR #1787 (nprime06) and kept
by #1851/#1855/#1868. Paper: Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix
Sign Methods and Their Application to the Muon Algorithm" (arXiv:2505.16932).

The baseline repeats one quintic ``(3.4445, -4.7750, 2.0315)`` five times; Polar Express uses five
different tuples, each the minimax-optimal odd quintic for the interval the previous ones leave,
so after five iterations (same cost: 5 x 3 matmuls) every normalized singular value in
[1e-3, 1] lands within 1 +- 0.1411, where the classic schedule leaves the small ones near 0.47.
Normalization and layout are the records': ``X = G / (||G||_F + 1e-7)`` in bfloat16, no safety
factor (PR #1514's unused variant divided by ``1.02 ||G||_F``), iterate in the wide orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from golf_core import GolfError, Technique, hookimpl
from golf_core.optim.newton_schulz import polynomial_orthogonalize

# The records' _PE_COEFFS (PR #1787 / #1855), one (a, b, c) per iteration.
PE_COEFFS: tuple[tuple[float, float, float], ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def polar_express(G: Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """Orthogonalize ``G`` (a matrix or a batch of them) with the first ``steps`` Polar Express tuples."""
    if not 1 <= steps <= len(PE_COEFFS):
        # The records slice the tuple list, so asking for more silently ran 5; say so instead.
        raise ValueError(f"polar_express has {len(PE_COEFFS)} coefficient tuples; steps={steps} must be 1..{len(PE_COEFFS)}")
    return polynomial_orthogonalize(G, PE_COEFFS[:steps], eps=eps, dtype=dtype)


class PolarExpress(Technique):
    """Polar Express: Muon's Newton-Schulz with a minimax-optimal coefficient tuple per iteration."""

    name = "polar_express"
    stage = "optim"
    origin_pr = 1344
    credits = "PR #1344 (Polar Express in parameter-golf); nprime06 (PR #1787); Amsel, Persson, Musco, Gower (paper)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        pass

    @hookimpl
    def golf_configure(self, ctx):
        steps = ctx.stack.default_params["muon"].backend_steps
        if steps > len(PE_COEFFS):
            raise GolfError(
                f"techniques.muon.backend_steps={steps}: polar_express has {len(PE_COEFFS)} coefficient tuples; "
                f"set --set techniques.muon.backend_steps={len(PE_COEFFS)}"
            )

    @hookimpl
    def golf_orthogonalizer(self, ctx):
        return polar_express
