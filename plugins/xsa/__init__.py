"""XSA technique package: the plugin class; the module lives in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import hookimpl
from golf_core.config import param
from golf_core.technique import Technique

from plugins.xsa.module import ExclusiveSelfAttention, build_xsa, xsa_layers


class XSA(Technique):
    """Exclusive self attention: remove from each head's output its component along the token's own value.

    y_{t,h} <- y_{t,h} - (y_{t,h} . v̂_{t,g(h)}) v̂_{t,g(h)}, v̂ = v / ||v|| of the head's KV head
    (GQA-aware), after attention and before any output gate and the output projection; on the last
    N physical layers. No parameters.
    Origin PR #265 (vadim borisov, @unnir: efficient GQA-aware form, last 3 layers), extended to
    all layers by PR #478 (@gowtham0992). Paper: Exclusive Self Attention, Shuangfei Zhai,
    arXiv:2603.09078.
    """

    name = "xsa"
    stage = "model"
    origin_pr = 265
    credits = "vadim borisov @unnir (PR #265); @gowtham0992 (PR #478, all layers); Shuangfei Zhai (paper)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        last_n: int = param(
            11, "apply to the last N physical layers (XSA_LAST_N); -1 or any N >= num_layers = every layer"
        )

        def validate(self) -> None:
            if self.last_n == 0 or self.last_n < -1:
                raise ValueError(
                    f"last_n={self.last_n} must be positive or -1 (all layers); to turn XSA off, disable the technique"
                )

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        layers = frozenset(xsa_layers(spec.num_layers, self.params.last_n))
        spec.attn_output_transforms.append(partial(build_xsa, layers=layers))


__all__ = ["XSA", "ExclusiveSelfAttention", "xsa_layers"]
