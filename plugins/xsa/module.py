"""The XSA attention-output transform (no parameters)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ExclusiveSelfAttention(nn.Module):
    """``forward(y, v, x)``: y_{t,h} - (y_{t,h} . v̂_{t,g(h)}) v̂_{t,g(h)}, v̂ = v / ||v||, g(h) = h // (H / H_kv).

    ``y``: per-head attention output ``[B, T, H, D]``; ``v``: the values ``[B, T, H_kv, D]``. Query
    heads are grouped per KV head by a reshape (the same grouping as SDPA's ``enable_gqa`` and
    ``repeat_interleave``), so the KV values are broadcast, never copied.
    """

    def forward(self, y: Tensor, v: Tensor, x: Tensor) -> Tensor:
        bsz, seqlen, heads, dim = y.shape
        kv_heads = v.size(-2)
        y_grouped = y.reshape(bsz, seqlen, kv_heads, heads // kv_heads, dim)
        v_hat = F.normalize(v, dim=-1).unsqueeze(-2)
        y_grouped = y_grouped - (y_grouped * v_hat).sum(dim=-1, keepdim=True) * v_hat
        return y_grouped.reshape(bsz, seqlen, heads, dim)


def xsa_layers(num_layers: int, last_n: int) -> list[int]:
    """Physical layers that get XSA: the last ``last_n`` (all of them when last_n is -1 or >= num_layers)."""
    if last_n == -1 or last_n >= num_layers:
        return list(range(num_layers))
    return list(range(num_layers - last_n, num_layers))


def build_xsa(spec, layer_index: int, *, layers: frozenset[int]) -> ExclusiveSelfAttention | None:
    return ExclusiveSelfAttention() if layer_index in layers else None
