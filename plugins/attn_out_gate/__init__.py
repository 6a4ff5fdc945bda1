"""AttnOutGate technique package: the plugin class; the module lives in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.technique import Technique

from plugins.attn_out_gate.module import SOURCES, AttnOutGateModule, build_attn_out_gate


class AttnOutGate(Technique):
    """Attention output gate: y_{t,h} *= 2 sigmoid(W_h . s_t[:window]), s = attention input or raw query projection.

    A per-(token, head) multiplicative gate on the attention output before the output projection;
    ``W`` (``attn_gate_proj``, Linear window -> H) zero-initialised, so the gate is exactly 1 at init.
    Origin PR #1667 (MarioPaerle).
    """

    name = "attn_out_gate"
    stage = "model"
    origin_pr = 1667
    credits = "MarioPaerle (PR #1667)"
    conflicts = ("sparse_attn_gate", "gated_attn")

    @dataclass(frozen=True, kw_only=True)
    class Params:
        window: int = param(12, "leading dims of the gate source that feed the gate (GATE_WINDOW)")
        src: str = param(
            "proj", "gate source (ATTN_OUT_GATE_SRC): proj = the attention input, q = the raw query projection", choices=SOURCES
        )

        def validate(self) -> None:
            if self.window < 1:
                raise ValueError(f"window={self.window} must be at least 1")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        p = self.params
        if p.window > spec.model_dim:
            raise GolfError(
                f"techniques.attn_out_gate.window={p.window} exceeds model.model_dim={spec.model_dim}; lower the window"
            )
        spec.attn_output_transforms.append(partial(build_attn_out_gate, window=p.window, src=p.src))

    @hookimpl
    def golf_patch_model(self, model, ctx):
        if self.params.src != "q":
            return
        # The gate reads the attention's own query projection: hand each gate its c_q.
        for attn in model.modules():
            for transform in getattr(attn, "output_transforms", ()):
                if isinstance(transform, AttnOutGateModule):
                    if not hasattr(attn, "c_q"):
                        raise GolfError(
                            "techniques.attn_out_gate.src='q' needs attention modules with a c_q projection; use src='proj'"
                        )
                    transform.bind_query_projection(attn.c_q)
        unbound = [m for m in model.modules() if isinstance(m, AttnOutGateModule) and not m._query]
        if unbound:
            raise GolfError(
                f"techniques.attn_out_gate.src='q': {len(unbound)} gate(s) found no query projection; use src='proj'"
            )


__all__ = ["AttnOutGate", "AttnOutGateModule"]
