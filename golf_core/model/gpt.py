"""The baseline GPT of openai/parameter-golf's root ``train_gpt.py``, built from a ModelSpec.

9 blocks at width 512, 8 query / 4 KV heads, relu^2 MLP at 2x, RoPE, RMS-normed q and k with a
learned per-head query gain, U-Net skips with learned weights, per-block ``resid_mix`` lanes that
mix the running stream with the normed embedding ``x0``, tied embeddings and a tanh logit softcap.

Parameter names and creation order match the reference so that the same seed gives the same
initial weights (the parity bench relies on it) and name-based routing (optimizer groups,
quantization families) sees the names the records use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_core.model.spec import ModelSpec

# Small "control" tensors: kept in float32, optimized by Adam, passed through quantization in
# float. Matched by substring, as in the records.
CONTROL_TENSOR_NAME_PATTERNS = (
    "attn_scale",
    "attn_scales",
    "mlp_scale",
    "mlp_scales",
    "resid_mix",
    "resid_mixes",
    "q_gain",
    "skip_weight",
    "skip_weights",
    # Head-output gates and SmearGate (PR #1855's list): Adam, float32 on the GPU.
    "attn_gate_proj",
    "attn_gate_w",
    "smear_gate",
    "smear_lambda",
)


def softcapped_cross_entropy(logits: Tensor, targets: Tensor, softcap: float) -> Tensor:
    """The eager reference loss: mean CE of ``softcap * tanh(logits / softcap)`` in float32."""
    capped = softcap * torch.tanh(logits.float() / softcap)
    return F.cross_entropy(capped, targets, reduction="mean")


class CastedLinear(nn.Linear):
    """Weights stay float32 for the optimizer; cast to the activation dtype at matmul time."""

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class RMSNorm(nn.Module):
    def __init__(self, eps: float | None = None) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


class Rotary(nn.Module):
    """RoPE tables over the first ``rope_dims`` dims of a head (all of them by default)."""

    def __init__(self, rope_dims: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, rope_dims, 2, dtype=torch.float32) / rope_dims))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        t = torch.arange(seq_len, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq.to(device))
        return freqs.cos()[None, None].to(dtype), freqs.sin()[None, None].to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``2 * cos.size(-1)`` dims of ``x`` (half-split layout); the rest pass through."""
    rot = 2 * cos.size(-1)
    x_rot, x_pass = (x, None) if rot == x.size(-1) else (x[..., :rot], x[..., rot:])
    half = rot // 2
    x1, x2 = x_rot[..., :half], x_rot[..., half:]
    rotated = torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos), dim=-1)
    return rotated if x_pass is None else torch.cat((rotated, x_pass), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, spec: ModelSpec, layer_index: int) -> None:
        super().__init__()
        dim, self.num_heads, self.num_kv_heads = spec.model_dim, spec.num_heads, spec.num_kv_heads
        self.head_dim = spec.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim, bias=False)
        self.c_k = CastedLinear(dim, kv_dim, bias=False)
        self.c_v = CastedLinear(dim, kv_dim, bias=False)
        self.proj = CastedLinear(dim, dim, bias=False)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((self.num_heads,), spec.qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(spec.rope_dims or self.head_dim, spec.rope_base)
        transforms = [factory(spec, layer_index) for factory in spec.attn_output_transforms]
        self.output_transforms = nn.ModuleList([t for t in transforms if t is not None])
        values = [factory(spec, layer_index) for factory in spec.value_transforms]
        self.value_transforms = nn.ModuleList([t for t in values if t is not None])

    def forward(self, x: Tensor) -> Tensor:
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).reshape(bsz, seqlen, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = F.rms_norm(q, (q.size(-1),))
        k = F.rms_norm(k, (k.size(-1),))
        cos, sin = self.rotary(seqlen, x.device, q.dtype)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        q = q * self.q_gain.to(dtype=q.dtype)[None, :, None, None]
        if len(self.value_transforms):
            v_bthd = v.transpose(1, 2)
            for transform in self.value_transforms:
                v_bthd = transform(v_bthd, x)
            v = v_bthd.transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, is_causal=True, enable_gqa=self.num_kv_heads != self.num_heads
        )
        y = y.transpose(1, 2)  # [B, T, H, D]
        if len(self.output_transforms):
            v_bthd = v.transpose(1, 2)
            for transform in self.output_transforms:
                y = transform(y, v_bthd, x)
        return self.proj(y.contiguous().reshape(bsz, seqlen, dim))


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.fc = CastedLinear(spec.model_dim, spec.mlp_hidden, bias=False)
        self.proj = CastedLinear(spec.mlp_hidden, spec.model_dim, bias=False)
        self.proj._zero_init = True
        self.activation = spec.mlp_activation

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.activation(self.fc(x)))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, layer_index: int) -> None:
        super().__init__()
        dim = spec.model_dim
        self.attn_norm = RMSNorm()
        self.mlp_norm = RMSNorm()
        self.attn = CausalSelfAttention(spec, layer_index)
        self.mlp = MLP(spec)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(dtype=x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        x = x + self.attn_scale.to(dtype=x.dtype)[None, None, :] * self.attn(self.attn_norm(x))
        x = x + self.mlp_scale.to(dtype=x.dtype)[None, None, :] * self.mlp(self.mlp_norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.logit_softcap = spec.logit_softcap
        self.loss_fn = spec.loss_fn or softcapped_cross_entropy
        self.tok_emb = nn.Embedding(spec.vocab_size, spec.model_dim)
        self.encoder_indices, self.decoder_indices = spec.layer_indices()
        num_skips = min(len(self.encoder_indices), len(self.decoder_indices))
        self.skip_weights = nn.Parameter(torch.ones(num_skips, spec.model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList([Block(spec, i) for i in range(spec.num_layers)])
        self.embed_transforms = nn.ModuleList([factory(spec) for factory in spec.embed_transforms])
        self.final_norm = RMSNorm()
        self.lm_head = None if spec.tie_embeddings else CastedLinear(spec.model_dim, spec.vocab_size, bias=False)
        if self.lm_head is not None:
            self.lm_head._zero_init = True
        self._init_weights()

    def _init_weights(self) -> None:
        if self.spec.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.spec.tied_embed_init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear) and getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """Final normed hidden states ``[B, T, C]``."""
        x = self.tok_emb(input_ids)
        for transform in self.embed_transforms:
            x = transform(x, input_ids)
        x = F.rms_norm(x, (x.size(-1),))
        x0 = x
        skips: list[Tensor] = []
        for i in self.encoder_indices:
            x = self.blocks[i](x, x0)
            skips.append(x)
        for j, i in enumerate(self.decoder_indices):
            if skips:
                x = x + self.skip_weights[j].to(dtype=x.dtype)[None, None, :] * skips.pop()
            x = self.blocks[i](x, x0)
        return self.final_norm(x)

    def head(self, h: Tensor) -> Tensor:
        """Raw logits (before the softcap)."""
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, weight.to(h.dtype))

    def forward(self, input_ids: Tensor, target_ids: Tensor) -> Tensor:
        h = self.hidden(input_ids)
        logits = self.head(h.reshape(-1, h.size(-1)))
        return self.loss_fn(logits, target_ids.reshape(-1), self.logit_softcap)

    def forward_logits(self, input_ids: Tensor) -> Tensor:
        """Softcapped logits ``[B, T, V]`` in float32, for scoring."""
        logits = self.head(self.hidden(input_ids)).float()
        return self.logit_softcap * torch.tanh(logits / self.logit_softcap)


def is_control_tensor(name: str) -> bool:
    return any(pattern in name for pattern in CONTROL_TENSOR_NAME_PATTERNS)


def cast_for_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The records' dtype policy on CUDA: bf16 body, float32 CastedLinear weights and control tensors.

    On CPU everything stays float32 (bf16 matmuls there are slow and change the numbers).
    """
    model.to(device)
    if device.type != "cuda":
        return model
    model.bfloat16()
    for module in model.modules():
        if isinstance(module, CastedLinear):
            module.float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (p.ndim < 2 or is_control_tensor(name)) and p.dtype != torch.float32:
                p.data = p.data.float()
    return model
