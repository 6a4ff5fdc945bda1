"""The AttnOutGate head-output gate (an attention-output transform)."""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_core.model.gpt import CastedLinear
from golf_core.optim.roles import set_role

SOURCES = ("proj", "q")


class AttnOutGateModule(nn.Module):
    """``forward(y, v, x)``: y_{t,h} * 2 sigmoid(W_h . s_t[:window]).

    ``s`` is the attention input ``x`` (``src="proj"``) or the raw query projection ``x Wq^T``
    (``src="q"``, post-projection, pre-norm, pre-RoPE; its first ``window`` dims are recomputed from
    the first ``window`` rows of the attention's ``c_q``, bound by :meth:`bind_query_projection`).
    ``W`` (``attn_gate_proj``, Linear window -> H) starts at zero: 2 sigmoid(0) = 1, transparent.
    """

    def __init__(self, num_heads: int, window: int, src: str = "proj") -> None:
        super().__init__()
        if src not in SOURCES:
            raise ValueError(f"src={src!r} is not one of {SOURCES}")
        self.window = window
        self.src = src
        self.attn_gate_proj = CastedLinear(window, num_heads, bias=False)
        self.attn_gate_proj._zero_init = True
        nn.init.zeros_(self.attn_gate_proj.weight)
        # Under blocks.*, a 2-D weight would default to Muon; the records train it with Adam.
        set_role(self.attn_gate_proj.weight, "scalar")
        # A tuple, not a submodule: the projection belongs to the attention and must not be
        # registered (and saved) twice.
        self._query: tuple[nn.Module, ...] = ()

    def bind_query_projection(self, c_q: nn.Module) -> None:
        self._query = (c_q,)

    def forward(self, y: Tensor, v: Tensor, x: Tensor) -> Tensor:
        if self.src == "q":
            gate_in = F.linear(x, self._query[0].weight[: self.window].to(x.dtype))
        else:
            gate_in = x[..., : self.window]
        g = 2.0 * torch.sigmoid(self.attn_gate_proj(gate_in.contiguous()))
        return y * g[..., None]


def build_attn_out_gate(spec, layer_index: int, *, window: int, src: str) -> AttnOutGateModule:
    """Attention-output-transform factory, one gate per layer, built under a private RNG stream
    (``CastedLinear`` draws its overwritten default init from the global generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + zlib.crc32(f"attn_out_gate:{layer_index}".encode())) % 2**63)
        return AttnOutGateModule(spec.num_heads, window, src)
