"""The quintic Newton-Schulz orthogonalizer of Muon (Keller Jordan, modded-nanogpt)."""

from __future__ import annotations

import torch
from torch import Tensor

QUINTIC_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(G: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximate ``U V^T`` of ``G = U S V^T`` with ``steps`` quintic iterations in bfloat16.

    The fixed coefficients push singular values into roughly [0.7, 1.2] rather than exactly 1,
    which is what Muon needs and is cheaper than converging.
    """
    a, b, c = QUINTIC_COEFFS
    X = G.bfloat16()
    X = X / (X.norm() + eps)
    transposed = G.size(0) > G.size(1)
    if transposed:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if transposed else X
