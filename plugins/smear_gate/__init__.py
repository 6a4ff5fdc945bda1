"""SmearGate technique package: the plugin class; the module lives in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import hookimpl
from golf_core.config import param
from golf_core.data.shards import BOS_ID
from golf_core.errors import GolfError
from golf_core.technique import Technique

from plugins.smear_gate.module import SmearGateModule, build_smear_gate


class SmearGate(Technique):
    """SmearGate: add to each token embedding its predecessor's, gated by lambda * sigmoid(W x_t[:window]).

    e'_t = e_t + lambda * sigmoid(W . e_t[:window]) * e_{t-1} * 1[ids_t != BOS], before the embedding
    RMSNorm; W and lambda zero-initialised (identity at init). Origin PR #1667 (from modded-nanogpt,
    @classiclarryd); BOS mask PR #1851 / #1855.
    """

    name = "smear_gate"
    stage = "model"
    origin_pr = 1667
    credits = "@classiclarryd (modded-nanogpt); MarioPaerle (PR #1667); PR #1851/#1855 (BOS fix)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        window: int = param(12, "leading embedding dims that feed the gate (GATE_WINDOW)")
        mask_bos: bool = param(
            True, "zero the previous-token term where the current token is BOS (PR #1851/#1855); false = original PR #1667 form"
        )

        def validate(self) -> None:
            if self.window < 1:
                raise ValueError(f"window={self.window} must be at least 1")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        if self.params.window > spec.model_dim:
            raise GolfError(
                f"techniques.smear_gate.window={self.params.window} exceeds model.model_dim={spec.model_dim}; lower the window"
            )
        spec.embed_transforms.append(
            partial(build_smear_gate, window=self.params.window, mask_bos=self.params.mask_bos, bos_id=BOS_ID)
        )


__all__ = ["SmearGate", "SmearGateModule"]
