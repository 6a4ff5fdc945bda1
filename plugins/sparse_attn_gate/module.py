"""The sparse head-output gate (an attention-output transform)."""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_core.optim.roles import set_role


class SparseAttnGateModule(nn.Module):
    """``forward(y, v, x)``: y_{t,h} * sigmoid(scale * W_h . x_t[:window]).

    ``x`` is the attention input (the normed block input); ``W`` (``attn_gate_w``, ``[H, window]``)
    starts at zero, so every head output is scaled by exactly 0.5 at init.
    """

    def __init__(self, num_heads: int, window: int, scale: float, init_std: float = 0.0) -> None:
        super().__init__()
        self.window = window
        self.scale = scale
        weight = torch.zeros(num_heads, window, dtype=torch.float32)
        if init_std > 0:
            nn.init.normal_(weight, mean=0.0, std=init_std)
        # Name shared with the dense GatedAttn: quantization routes ``*.attn_gate_w`` (gate int8).
        self.attn_gate_w = set_role(nn.Parameter(weight), "scalar")

    def forward(self, y: Tensor, v: Tensor, x: Tensor) -> Tensor:
        gate_in = x[..., : self.window].contiguous()
        g = torch.sigmoid(self.scale * F.linear(gate_in, self.attn_gate_w.to(x.dtype)))
        return y * g[..., None]


def build_sparse_attn_gate(spec, layer_index: int, *, window: int, scale: float, init_std: float) -> SparseAttnGateModule:
    """Attention-output-transform factory, one gate per layer. A private RNG stream per layer keeps
    the core's parameters initialised exactly as without the gate."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + zlib.crc32(f"sparse_attn_gate:{layer_index}".encode())) % 2**63)
        return SparseAttnGateModule(spec.num_heads, window, scale, init_std)
