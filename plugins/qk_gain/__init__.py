"""QK-gain init: the starting value of the learned per-head query gain (attention temperature)."""

from __future__ import annotations

from dataclasses import dataclass

from golf_core import hookimpl
from golf_core.config import param
from golf_core.technique import Technique


class QKGain(Technique):
    """QK-gain: start the learned per-head query gain g_h at ``init``; logits = g_h (q̂ . k̂) / sqrt(head_dim).

    q̂ and k̂ are RMS-normed, so g_h sets each head's attention temperature directly. The gain
    (``blocks.*.attn.q_gain``, fp32, one per physical layer) exists in the core model; this
    technique only sets its initial value (``spec.qk_gain_init``, baseline 1.5).
    Lineage: 1.5 (baseline) -> 4.0 (PR #1125) -> 5.0 (PR #1217 via #1334, PR #1413, top record
    PR #1855) -> 5.25 (PR #1493, PR #1667).
    """

    name = "qk_gain"
    stage = "model"
    origin_pr = 1125
    credits = "PR #1125 (4.0); PR #1217 / #1334 / #1413 (5.0); PR #1493 (5.25)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        init: float = param(5.0, "initial value of every head's query gain (QK_GAIN_INIT)")

        def validate(self) -> None:
            if not self.init > 0:
                raise ValueError(f"init={self.init} must be positive (it multiplies the attention logits)")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        spec.qk_gain_init = self.params.init


__all__ = ["QKGain"]
