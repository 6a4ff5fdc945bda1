"""Skip gates technique package: the plugin class; the module lives in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.technique import Technique

from plugins.skip_gates.module import SkipGates, build_skip_gates


class SkipGatesTechnique(Technique):
    """Sigmoid-gated U-Net skips: x <- lerp(w_k * skip, x, sigmoid(gamma_k)) at decoder position k.

    Replaces the baseline's ``x + w_k * skip`` by a learned per-channel interpolation between the
    stream and the weighted skip; ``gamma_k`` (one vector of width ``model_dim`` per skip, init 0,
    so g = 0.5) is learned with the scalar Adam group. Not an identity at init: the merge starts
    as the average of stream and skip. In the parallel-residual region the lanes module decides
    which lane(s) the merged skip enters (lane 0 in PR #1855). Origin PR #1089 (mikeapedia);
    records PR #1204, #1218 -> PR #1855.
    """

    name = "skip_gates"
    stage = "model"
    origin_pr = 1089
    credits = "mikeapedia (PR #1089); U-Net skips PR #289 / the baseline"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        init: float = param(0.0, "initial gate logit gamma (sigmoid(0) = 0.5: half stream, half skip)")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        if spec.skip_gates is not None:
            raise GolfError("skip_gates: another technique already replaced the skip merge (spec.skip_gates); enable only one")
        spec.skip_gates = partial(build_skip_gates, init=self.params.init)


__all__ = ["SkipGates", "SkipGatesTechnique"]
