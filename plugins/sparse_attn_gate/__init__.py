"""SparseAttnGate technique package: the plugin class; the module lives in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.technique import Technique

from plugins.sparse_attn_gate.module import SparseAttnGateModule, build_sparse_attn_gate


class SparseAttnGate(Technique):
    """Sparse attention head-output gate: y_{t,h} *= sigmoid(scale * W_h . x_t[:window]).

    One gate per (token, head) from only the first ``window`` dims of the attention input, applied to
    the per-head attention output before the output projection. ``W`` (``attn_gate_w``, [H, window])
    zero-initialised: every head is scaled by exactly 0.5 at init.
    Origin PR #1787 (modded-nanogpt pattern; replaces the dense GatedAttn of PR #1736, ~44K fewer
    parameters). Used by the top record PR #1855 with scale 0.5.
    """

    name = "sparse_attn_gate"
    stage = "model"
    origin_pr = 1787
    credits = "PR #1787 authors (after modded-nanogpt's sparse attention gate)"
    conflicts = ("gated_attn", "attn_out_gate")

    @dataclass(frozen=True, kw_only=True)
    class Params:
        window: int = param(12, "leading attention-input dims that feed the gate (GATE_WINDOW)")
        scale: float = param(0.5, "multiplier inside the sigmoid (SPARSE_ATTN_GATE_SCALE; PR #1787 used 1.0)")
        init_std: float = param(0.0, "init std of the gate weights; 0 = zeros, gate exactly 0.5 (SPARSE_ATTN_GATE_INIT_STD)")

        def validate(self) -> None:
            if self.window < 1:
                raise ValueError(f"window={self.window} must be at least 1")
            if self.init_std < 0:
                raise ValueError(f"init_std={self.init_std} must be >= 0")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        p = self.params
        if p.window > spec.model_dim:
            raise GolfError(
                f"techniques.sparse_attn_gate.window={p.window} exceeds model.model_dim={spec.model_dim}; lower the window"
            )
        spec.attn_output_transforms.append(
            partial(build_sparse_attn_gate, window=p.window, scale=p.scale, init_std=p.init_std)
        )


__all__ = ["SparseAttnGate", "SparseAttnGateModule"]
