"""MuonEq-R: divide each row of Muon's Nesterov update by its L2 norm before orthogonalizing.

Origin: PR #1217 (bigbag); first in a record through PR #1260 / #1285 (dexhunter), kept in every
record since (MUON_ROW_NORMALIZE=1). Paper: arXiv:2603.28254.

Per Muon matrix, after momentum and Nesterov and immediately before Newton-Schulz,
``U_r <- U_r / max(||U_r||_2, 1e-7)`` with the norms in float32 (PR #1855 ``Muon.step``). The
records report about -0.001 BPB at zero byte cost. The math lives in
``golf_core.optim.muon.Muon`` (group option ``row_normalize``); this technique switches it on for
every optimizer group that offers the option.
"""

from __future__ import annotations

from dataclasses import dataclass

from golf_core import GolfError, Technique, hookimpl


class MuonEqR(Technique):
    """MuonEq-R: divide each row of Muon's Nesterov update by its L2 norm before orthogonalizing."""

    name = "muon_eq_r"
    stage = "optim"
    origin_pr = 1217
    credits = "bigbag (PR #1217); dexhunter (PR #1260 / #1285, first record)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        pass

    @hookimpl(wrapper=True)
    def golf_build_optimizer(self, model, ctx):
        bundle = yield
        # Muon-type groups (core Muon, or a replacement that follows its protocol) carry the option.
        groups = [g for g in bundle.param_groups() if "row_normalize" in g]
        if not groups:
            raise GolfError(
                "muon_eq_r: the optimizer built for this run has no Muon group with a 'row_normalize' option; "
                "use the core muon optimizer or disable muon_eq_r"
            )
        for group in groups:
            group["row_normalize"] = True
        return bundle
