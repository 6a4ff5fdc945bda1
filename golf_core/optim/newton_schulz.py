"""Newton-Schulz orthogonalizers of Muon: odd quintic polynomial iterations on the singular values.

One iteration with coefficients ``(a, b, c)`` maps ``X`` to ``a X + (b A + c A^2) X`` with
``A = X X^T``. For ``X = U S V^T`` that is ``U p(S) V^T`` with ``p(s) = a s + b s^3 + c s^5``, so
after Frobenius normalization (every singular value in (0, 1]) a schedule of tuples pushes the
singular values towards 1 while keeping ``U`` and ``V``: the result approximates ``U V^T``.

:func:`newton_schulz5` is the baseline's schedule (one fixed tuple repeated, Keller Jordan,
modded-nanogpt); techniques supply other schedules through :func:`polynomial_orthogonalize`
(Polar Express in ``plugins/polar_express``). :func:`scalar_map` applies a schedule to scalars, the
exact picture of what it does to the singular values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

QUINTIC_COEFFS = (3.4445, -4.7750, 2.0315)

Coeffs = Sequence[tuple[float, float, float]]


def polynomial_orthogonalize(
    G: Tensor,
    coeffs: Coeffs,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.bfloat16,
    scale_first: bool = False,
) -> Tensor:
    """Apply one quintic iteration per ``(a, b, c)`` in ``coeffs`` to ``G / ||G||_F``, computed in ``dtype``.

    ``G`` is a matrix or a batch of matrices (leading dims; each normalized by its own Frobenius
    norm, as the records do for weight banks). Tall matrices are iterated in their wide
    orientation (``X X^T`` is then the small Gram matrix), so ``f(G^T) == f(G)^T`` exactly.
    ``scale_first`` computes ``(c A) A`` as the baseline does (its ``c * A @ A`` parses that way)
    instead of the records' ``c (A A)``: equal in exact arithmetic, not in bfloat16, so each
    schedule keeps the op sequence of the code it comes from. Returns ``G``'s shape in ``dtype``.
    """
    X = G.to(dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = X.size(-2) > X.size(-1)
    if transposed:
        X = X.mT
    for a, b, c in coeffs:
        A = X @ X.mT
        B = b * A + ((c * A) @ A if scale_first else c * (A @ A))
        X = a * X + B @ X
    return X.mT if transposed else X


def newton_schulz5(G: Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """The baseline's orthogonalizer: ``steps`` iterations of the fixed quintic (3.4445, -4.7750, 2.0315) in bfloat16.

    The coefficients trade exactness for speed: singular values end in roughly [0.7, 1.2]
    (down to ~0.5 for the smallest ones) rather than at 1, which Muon tolerates.
    """
    return polynomial_orthogonalize(G, (QUINTIC_COEFFS,) * steps, eps=eps, dtype=dtype, scale_first=True)


def scalar_map(x, coeffs: Coeffs):
    """``p_n(...p_1(x))`` with ``p_i(s) = a_i s + b_i s^3 + c_i s^5``: where a schedule sends a normalized singular value.

    Works on floats, numpy arrays and tensors alike (use float64 to check a schedule's bounds).
    """
    for a, b, c in coeffs:
        x2 = x * x
        x = x * (a + x2 * (b + c * x2))
    return x
