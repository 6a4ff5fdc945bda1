"""Parallel residuals technique package: the plugin class; the lane modules live in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.technique import Technique

from plugins.parallel_residuals.module import (
    FORMS,
    GPTJResiduals,
    IsolatedLaneResiduals,
    SequentialLaneResiduals,
    TwoLaneResiduals,
    build_lanes,
)


class ParallelResiduals(Technique):
    """Parallel residuals: from a start layer, attention and MLP update two residual lanes (PR #1855 form) merged at the end.

    Default (``form = "two_lane"``, PR #1855): decoder blocks with physical index >= ``start_layer``
    keep lanes ``lane0`` (attention reads it, mixed with x0; the U-Net skip enters it) and
    ``lane1`` (the MLP reads it); both sublayers read the block-input lanes and write
    ``lane_j <- rho_j lane_j + P[0,j] a + P[1,j] f`` with learned ``rho`` (init 1.1) and ``P`` (init 1);
    the final norm sees the mean of the lanes. Older forms, selected by ``form``: ``sequential``
    (PR #1204: attention then MLP, both lanes, encoder too), ``isolated`` (PR #1334/#1477: attention
    lane, MLP lane, learned ``lane_merge``), ``gptj`` (PR #1412/#1493/#1514: one stream,
    ``x + a(x) + f(x)``). Origin PR #1204 (msisovic, from modded-nanogpt PR #230); refined in
    PR #1529/#1530; records PR #1530 -> PR #1855 (start layer 8).
    """

    name = "parallel_residuals"
    stage = "model"
    origin_pr = 1204
    credits = "msisovic (PR #1204, from modded-nanogpt PR #230); PR #1529/#1530; aryanbhosale (PR #1334); Robby955 (PR #1412)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        form: str = param("two_lane", "two_lane (PR #1855) | sequential (PR #1204) | isolated (PR #1334/#1477) | gptj (PR #1412/#1493)", choices=FORMS)
        start_layer: int = param(8, "first physical layer in parallel (PARALLEL_START_LAYER; 7 in #1334/#1493); >= num_layers = off")
        resid_init: float = param(1.1, "initial lane decay rho per block (two_lane, sequential: sqrt(rho) after each sublayer)")
        final_lane: str = param("mean", "what the final norm reads (PARALLEL_FINAL_LANE; two_lane, sequential)", choices=("mean", "attn", "mlp"))
        late_skips: str = param("lane0", "isolated form: skips after the split enter lane0 (#1477) or are dropped (#1334's code)", choices=("lane0", "drop"))

        def validate(self) -> None:
            if self.start_layer < 0:
                raise ValueError(f"start_layer={self.start_layer} must be >= 0")
            if self.final_lane != "mean" and self.form not in ("two_lane", "sequential"):
                raise ValueError(f"final_lane={self.final_lane!r} applies to the two_lane and sequential forms, not {self.form!r}")
            if self.late_skips != "lane0" and self.form != "isolated":
                raise ValueError(f"late_skips={self.late_skips!r} applies to the isolated form, not {self.form!r}")
            if self.resid_init != 1.1 and self.form in ("isolated", "gptj"):
                raise ValueError(f"resid_init applies to the two_lane and sequential forms, not {self.form!r}")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        p = self.params
        if spec.residual_lanes is not None:
            raise GolfError("parallel_residuals: another technique already set spec.residual_lanes; enable only one")
        if p.start_layer >= spec.num_layers:
            # The identity setting: no block runs in parallel, so the model is the sequential one.
            ctx.log(f"parallel_residuals: start_layer={p.start_layer} >= num_layers={spec.num_layers}; no block is parallel")
            return
        spec.residual_lanes = partial(
            build_lanes, form=p.form, start_layer=p.start_layer, resid_init=p.resid_init,
            final_lane=p.final_lane, late_skips=p.late_skips,
        )


__all__ = [
    "GPTJResiduals",
    "IsolatedLaneResiduals",
    "ParallelResiduals",
    "SequentialLaneResiduals",
    "TwoLaneResiduals",
]
