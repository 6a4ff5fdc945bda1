"""Partial RoPE: rotate only the first ``dims`` dims of each attention head; the rest carry no position."""

from __future__ import annotations

from dataclasses import dataclass

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.technique import Technique


class PartialRoPE(Technique):
    """Partial RoPE: rotate only the first ``dims`` of each head's q and k; the remaining dims are position-free.

    Half-split rotation on the slice: with x1 = x[:dims/2], x2 = x[dims/2:dims] and
    inv_freq_j = base^(-2j/dims): [x1 cos + x2 sin, -x1 sin + x2 cos], then the untouched tail.
    Sets ``spec.rope_dims``; the core's ``Rotary`` / ``apply_rotary`` do the rotation.
    Origin PR #315 (Jack Princz, @jfprincz: 11L Partial RoPE + LN scale, 1.1248); ROPE_DIMS=16 of
    64 in every later record including the top record PR #1855.
    """

    name = "partial_rope"
    stage = "model"
    origin_pr = 315
    credits = "Jack Princz @jfprincz (PR #315)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        dims: int = param(16, "leading head dims that are rotated (ROPE_DIMS); even, at most the head dim")

        def validate(self) -> None:
            if self.dims < 2 or self.dims % 2:
                raise ValueError(f"dims={self.dims} must be even and at least 2")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        if self.params.dims > spec.head_dim:
            raise GolfError(
                f"techniques.partial_rope.dims={self.params.dims} exceeds the head dim {spec.head_dim} "
                f"(model.model_dim / model.num_heads); lower it"
            )
        spec.rope_dims = self.params.dims


__all__ = ["PartialRoPE"]
