"""GatedAttn technique package: the plugin class; the module lives in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import hookimpl
from golf_core.config import param
from golf_core.technique import Technique

from plugins.gated_attn.module import GatedAttnModule, build_gated_attn


class GatedAttn(Technique):
    """Gated attention (dense): y_{t,h} *= sigmoid(W_h . x_t), one gate per (token, head) from the whole attention input.

    Applied to the per-head attention output before the output projection (the G1 position of the
    paper). ``W`` (``attn_gate_w``, [H, model_dim]) ~ N(0, init_std): gates start near 0.5.
    Origin PR #1736. Paper: Gated Attention for Large Language Models (Qwen), arXiv:2505.06708.
    """

    name = "gated_attn"
    stage = "model"
    origin_pr = 1736
    credits = "PR #1736 authors; Qiu et al. (Qwen team), arXiv:2505.06708"
    conflicts = ("sparse_attn_gate", "attn_out_gate")

    @dataclass(frozen=True, kw_only=True)
    class Params:
        init_std: float = param(0.01, "init std of the gate weights (GATED_ATTN_INIT_STD; PR #1736 used 0.005); 0 = zeros")

        def validate(self) -> None:
            if self.init_std < 0:
                raise ValueError(f"init_std={self.init_std} must be >= 0")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        spec.attn_output_transforms.append(partial(build_gated_attn, init_std=self.params.init_std))


__all__ = ["GatedAttn", "GatedAttnModule"]
