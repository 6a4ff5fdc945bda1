"""The baseline's post-train quantization: int8 per-row for matrices, fp16 passthrough for small tensors.

As in openai/parameter-golf's root script: rows are clipped at the 99.99984th percentile of
|w| and scaled by clip/127 (scale stored fp16); float tensors of at most 65,536 elements are kept
(control tensors in float32, others in fp16); non-float tensors pass through unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from golf_core.model.gpt import is_control_tensor
from golf_core.quant.state import QuantizedTensor, QuantState

KEEP_FLOAT_MAX_NUMEL = 65_536
CLIP_Q = 99.99984 / 100.0


def dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def passthrough(name: str, t: Tensor) -> QuantizedTensor:
    """Keep a small tensor: control tensors in float32, other floats in fp16, ints as they are."""
    if t.is_floating_point():
        store = torch.float32 if is_control_tensor(name) else torch.float16
        value = t.to(store).contiguous()
        route = f"passthrough ({dtype_name(value)})"
    else:
        value, route = t.contiguous(), f"passthrough ({dtype_name(t)})"
    return QuantizedTensor("raw", tuple(t.shape), dtype_name(t), {"value": value}, route=route)


def quantize_int8(t: Tensor) -> QuantizedTensor:
    t32 = t.float()
    if t32.ndim == 2:
        clip = torch.quantile(t32.abs(), CLIP_Q, dim=1) if t32.numel() else torch.empty(t32.shape[0])
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        scale = (clip / 127.0).clamp_min(1.0 / 127.0)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8).contiguous()
        return QuantizedTensor(
            "int8_row", tuple(t.shape), dtype_name(t), {"q": q, "scale": scale.to(torch.float16).contiguous()},
            route="int8 per-row",
        )
    clip = float(torch.quantile(t32.abs().flatten(), CLIP_Q).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -127, 127).to(torch.int8).contiguous()
    return QuantizedTensor("int8_tensor", tuple(t.shape), dtype_name(t), {"q": q, "scale": scale}, route="int8 per-tensor")


def quantize_state_dict_int8(state_dict: dict[str, Tensor]) -> QuantState:
    state = QuantState(meta={"format": "int8_per_row"})
    for name, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        if not t.is_floating_point() or t.numel() <= KEEP_FLOAT_MAX_NUMEL:
            state.entries[name] = passthrough(name, t)
        else:
            state.entries[name] = quantize_int8(t)
    return state
