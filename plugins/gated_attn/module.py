"""The dense gated-attention head-output gate (an attention-output transform)."""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_core.optim.roles import set_role


class GatedAttnModule(nn.Module):
    """``forward(y, v, x)``: y_{t,h} * sigmoid(W_h . x_t) with ``W`` (``attn_gate_w``) ``[H, model_dim]``."""

    def __init__(self, num_heads: int, model_dim: int, init_std: float) -> None:
        super().__init__()
        weight = torch.zeros(num_heads, model_dim, dtype=torch.float32)
        if init_std > 0:
            nn.init.normal_(weight, mean=0.0, std=init_std)
        # "attn_gate_w": the records' name, matched by quantization routing (gate int8 per row).
        self.attn_gate_w = set_role(nn.Parameter(weight), "scalar")

    def forward(self, y: Tensor, v: Tensor, x: Tensor) -> Tensor:
        g = torch.sigmoid(F.linear(x.contiguous(), self.attn_gate_w.to(x.dtype)))
        return y * g[..., None]


def build_gated_attn(spec, layer_index: int, *, init_std: float) -> GatedAttnModule:
    """Attention-output-transform factory, one gate per layer. The random init draws from a private
    RNG stream per layer, so the core's parameters are initialised exactly as without the gate."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + zlib.crc32(f"gated_attn:{layer_index}".encode())) % 2**63)
        return GatedAttnModule(spec.num_heads, spec.model_dim, init_std)
