"""LN scale technique package: the plugin class and its one-line factor function."""

from __future__ import annotations

import math
from dataclasses import dataclass

from golf_core import hookimpl
from golf_core.errors import GolfError
from golf_core.technique import Technique


def ln_scale_factor(layer_index: int) -> float:
    """``1 / sqrt(layer_index + 1)`` for physical block ``layer_index`` (0-based)."""
    return 1.0 / math.sqrt(layer_index + 1)


class LNScale(Technique):
    """LN scale: multiply each block's normed attention and MLP inputs by 1/sqrt(layer + 1).

    With l the physical block index (a block repeated by depth recurrence keeps its factor),
    attention reads ``RMSNorm(x_in) / sqrt(l+1)`` and the MLP ``RMSNorm(x) / sqrt(l+1)``; the
    residual stream itself is not scaled. In the parallel-residual forms the same factor applies
    to both branches, and attention-output transforms (XSA, gates) see the scaled input, as in
    PR #1855. No parameters. Origin PR #315 (jfprincz), together with partial RoPE; kept through
    PR #1855 (LN_SCALE=1).
    """

    name = "ln_scale"
    stage = "model"
    origin_pr = 315
    credits = "jfprincz (PR #315)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        pass

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        if spec.norm_scale is not None and spec.norm_scale is not ln_scale_factor:
            raise GolfError("ln_scale: another technique already set the block norm scale (spec.norm_scale); enable only one")
        spec.norm_scale = ln_scale_factor


__all__ = ["LNScale", "ln_scale_factor"]
