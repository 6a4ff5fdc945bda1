"""The baseline GPT of openai/parameter-golf's root ``train_gpt.py``, built from a ModelSpec.

9 blocks at width 512, 8 query / 4 KV heads, relu^2 MLP at 2x, RoPE, RMS-normed q and k with a
learned per-head query gain, U-Net skips with learned weights, per-block ``resid_mix`` lanes that
mix the running stream with the normed embedding ``x0``, tied embeddings and a tanh logit softcap.

Parameter names and creation order match the reference so that the same seed gives the same
initial weights (the parity bench relies on it) and name-based routing (optimizer groups,
quantization families) sees the names the records use.

One block implementation serves training, evaluation and test-time training: ``Block`` owns the
sublayer math (``attn_branch`` / ``mlp_branch``), residual forms other than the sequential one
(parallel residuals, ``GPT.lanes``) only rearrange its outputs, and TTT injects low-rank deltas
through an :class:`AdapterSet` passed to the forward (``ADAPTER_SITES`` lists where), never
through a copy of the block. ``GPT.layouts`` / ``set_layout`` switch the block order (depth
recurrence). With none of the spec's extension points used the model computes exactly the
baseline, bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_core.errors import GolfError
from golf_core.model.attention import AttentionScope, causal_attention
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
    # Skip gates and parallel-residual lambdas (PR #1855's list), PR #1334's lane merge.
    "skip_gates",
    "parallel_post_lambdas",
    "parallel_resid_lambdas",
    "lane_merge",
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


# ---------------------------------------------------------------------------------------------
# Adapters: per-position deltas injected into the one block implementation (LoRA for TTT).
# ---------------------------------------------------------------------------------------------

# Where an adapter may add its delta, and what it reads. Every adapter is a module
# ``delta = adapter(inp)`` whose output has the shape of the site's output; it is added to it.
ADAPTER_SITES: dict[str, str] = {
    "c_q": "query projection; reads the normed attention input [B, T, C]",
    "c_k": "key projection; reads the normed attention input [B, T, C]",
    "c_v": "value projection; reads the normed attention input [B, T, C]",
    "attn_proj": "attention output projection; reads the concatenated head outputs [B, T, C]",
    "attn": "whole attention sublayer, before attn_scale; reads the normed attention input (PR #1855's o-LoRA)",
    "mlp_fc": "MLP up-projection; reads the normed MLP input [B, T, C]",
    "mlp_proj": "MLP down-projection; reads the activation [B, T, hidden]",
    "mlp": "whole MLP sublayer, before mlp_scale; reads the normed MLP input (PR #1855's MLP LoRA)",
}


def _add_delta(out: Tensor, adapters: nn.ModuleDict, site: str, inp: Tensor) -> Tensor:
    # A Python membership test: traced once per adapter configuration, free when the site is empty.
    return out + adapters[site](inp) if site in adapters else out


class AdapterSet(nn.Module):
    """Adapters for one forward pass: one dict of site -> module per virtual block slot, plus the head.

    ``slots[k]`` serves the k-th block the current layout runs (encoder then decoder order), so a
    physical block repeated by depth recurrence gets one adapter set per pass, as PR #1855's TTT
    LoRA does; register the same module in several slots to share it. ``head`` reads the final
    normed hidden states and adds its delta to the raw logits, before the softcap. Pass the set as
    ``adapters=`` to ``GPT.forward`` / ``GPT.forward_logits`` / ``GPT.hidden``; the model itself
    never stores it, so its parameters are never trained, averaged or quantized with the model's.
    """

    def __init__(self, slots: list[dict[str, nn.Module]] | tuple, head: nn.Module | None = None) -> None:
        super().__init__()
        for k, slot in enumerate(slots):
            unknown = sorted(set(slot) - set(ADAPTER_SITES))
            if unknown:
                raise ValueError(f"adapter slot {k}: unknown sites {unknown}; sites are {sorted(ADAPTER_SITES)}")
        self.slots = nn.ModuleList([nn.ModuleDict(dict(slot)) for slot in slots])
        self.head = head


class CausalSelfAttention(nn.Module):
    # The owning GPT's AttentionScope (document boundaries of the current forward); None = dense rows.
    scope: AttentionScope | None = None

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

    def forward(self, x: Tensor, adapters: nn.ModuleDict | None = None) -> Tensor:
        bsz, seqlen, dim = x.shape
        q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)
        if adapters is not None:
            q = _add_delta(q, adapters, "c_q", x)
            k = _add_delta(k, adapters, "c_k", x)
            v = _add_delta(v, adapters, "c_v", x)
        q = q.reshape(bsz, seqlen, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
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
        scope = self.scope
        if scope is not None and scope.cu_seqlens is not None:  # packed documents (golf_core.model.attention)
            y = causal_attention(q, k, v, scope.cu_seqlens, scope.max_seqlen)
        else:
            y = causal_attention(q, k, v)  # [B, T, H, D]
        if len(self.output_transforms):
            v_bthd = v.transpose(1, 2)
            for transform in self.output_transforms:
                y = transform(y, v_bthd, x)
        y = y.contiguous().reshape(bsz, seqlen, dim)
        out = self.proj(y)
        return out if adapters is None else _add_delta(out, adapters, "attn_proj", y)


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.fc = CastedLinear(spec.model_dim, spec.mlp_hidden, bias=False)
        self.proj = CastedLinear(spec.mlp_hidden, spec.model_dim, bias=False)
        self.proj._zero_init = True
        self.activation = spec.mlp_activation

    def forward(self, x: Tensor, adapters: nn.ModuleDict | None = None) -> Tensor:
        if adapters is None:
            return self.proj(self.activation(self.fc(x)))
        hidden = self.activation(_add_delta(self.fc(x), adapters, "mlp_fc", x))
        return _add_delta(self.proj(hidden), adapters, "mlp_proj", hidden)


class Block(nn.Module):
    """One transformer block: the only implementation of its two sublayers.

    ``mix`` (the ``resid_mix`` lanes with ``x0``), ``attn_branch`` and ``mlp_branch``
    (``scale * sublayer(norm(h) * s) `` plus the slot's adapter deltas) are what every residual form
    calls: the sequential ``forward`` below, the parallel-residual forms (``GPT.lanes``) and
    test-time training (through ``adapters``), so a change to a sublayer reaches all of them.
    """

    def __init__(self, spec: ModelSpec, layer_index: int) -> None:
        super().__init__()
        dim = spec.model_dim
        self.layer_index = layer_index
        self.attn_norm = RMSNorm()
        self.mlp_norm = RMSNorm()
        self.attn = CausalSelfAttention(spec, layer_index)
        self.mlp = MLP(spec)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())
        # A Python constant: the multiply is traced only when it is not 1 (LN scale, B.8).
        self.norm_scale = float(spec.norm_scale(layer_index)) if spec.norm_scale is not None else 1.0

    def mix(self, x: Tensor, x0: Tensor) -> Tensor:
        """``m0 * x + m1 * x0``: the block's read of the stream mixed with the normed embedding."""
        mix = self.resid_mix.to(dtype=x.dtype)
        return mix[0][None, None, :] * x + mix[1][None, None, :] * x0

    def attn_branch(self, h: Tensor, adapters: nn.ModuleDict | None = None) -> Tensor:
        """``attn_scale * Attn(RMSNorm(h) * s)``, the update attention adds to a residual stream."""
        n = self.attn_norm(h)
        if self.norm_scale != 1.0:
            n = n * self.norm_scale
        out = self.attn(n, adapters)
        if adapters is not None:
            out = _add_delta(out, adapters, "attn", n)
        return self.attn_scale.to(dtype=h.dtype)[None, None, :] * out

    def mlp_branch(self, h: Tensor, adapters: nn.ModuleDict | None = None) -> Tensor:
        """``mlp_scale * MLP(RMSNorm(h) * s)``, the update the MLP adds to a residual stream."""
        n = self.mlp_norm(h)
        if self.norm_scale != 1.0:
            n = n * self.norm_scale
        out = self.mlp(n, adapters)
        if adapters is not None:
            out = _add_delta(out, adapters, "mlp", n)
        return self.mlp_scale.to(dtype=h.dtype)[None, None, :] * out

    def forward(self, x: Tensor, x0: Tensor, adapters: nn.ModuleDict | None = None) -> Tensor:
        x = self.mix(x, x0)
        x = x + self.attn_branch(x, adapters)
        x = x + self.mlp_branch(x, adapters)
        return x


class GPT(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.logit_softcap = spec.logit_softcap
        self.loss_fn = spec.loss_fn or softcapped_cross_entropy
        self.tok_emb = nn.Embedding(spec.vocab_size, spec.model_dim)
        # Every layout the model can run; ``active_layout`` picks one. It is a plain Python
        # attribute on purpose: torch.compile guards on it and keeps one graph per layout.
        self.layouts = {name: (tuple(enc), tuple(dec)) for name, (enc, dec) in spec.all_layouts().items()}
        self.active_layout = ""
        num_skips = max(min(len(enc), len(dec)) for enc, dec in self.layouts.values())
        self.skip_weights = nn.Parameter(torch.ones(num_skips, spec.model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList([Block(spec, i) for i in range(spec.num_layers)])
        # Document boundaries reach every attention layer through one shared scope (see hidden()).
        self.attn_scope = AttentionScope()
        for block in self.blocks:
            block.attn.scope = self.attn_scope
        self.embed_transforms = nn.ModuleList([factory(spec) for factory in spec.embed_transforms])
        self.final_norm = RMSNorm()
        self.lm_head = None if spec.tie_embeddings else CastedLinear(spec.model_dim, spec.vocab_size, bias=False)
        if self.lm_head is not None:
            self.lm_head._zero_init = True
        self.skip_gates = spec.skip_gates(spec, num_skips) if spec.skip_gates is not None else None
        self.lanes = spec.residual_lanes(spec) if spec.residual_lanes is not None else None
        self._check_lanes()
        self._init_weights()
        # Training-only terms are built after the model's init so that they never shift the seeded
        # initial weights: enabling one leaves the rest of the model identical.
        self.loss_terms = nn.ModuleList([factory(spec) for factory in spec.loss_terms])

    def _init_weights(self) -> None:
        if self.spec.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.spec.tied_embed_init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear) and getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)

    def _check_lanes(self) -> None:
        """Refuse layouts where a split stream would reach a block the lanes module does not run."""
        if self.lanes is None or not getattr(self.lanes, "splits", False):
            return
        for name, (encoder, decoder) in self.layouts.items():
            split_at = None
            positions = [(i, True) for i in encoder] + [(i, False) for i in decoder]
            for pos, (i, in_encoder) in enumerate(positions):
                claimed = self.lanes.claims(i, in_encoder)
                if claimed and split_at is None:
                    split_at = pos
                elif split_at is not None and not claimed:
                    where = f"layout '{name}'" if name else "the default layout"
                    raise GolfError(
                        f"residual lanes split the stream at block {positions[split_at][0]} but {where} runs block {i} "
                        f"later without them; raise the parallel start layer or change the layout"
                    )

    # ---- layouts ------------------------------------------------------------------------------

    def set_layout(self, name: str) -> None:
        """Run the layout ``name`` from now on (``""`` = the default one)."""
        if name not in self.layouts:
            raise GolfError(f"unknown layout '{name}'; the model has {sorted(self.layouts)}")
        self.active_layout = name

    @contextmanager
    def use_layout(self, name: str):
        """Run ``name`` inside a ``with`` block and restore the previous layout afterwards."""
        previous = self.active_layout
        self.set_layout(name)
        try:
            yield self
        finally:
            self.active_layout = previous

    @property
    def encoder_indices(self) -> list[int]:
        return list(self.layouts[self.active_layout][0])

    @property
    def decoder_indices(self) -> list[int]:
        return list(self.layouts[self.active_layout][1])

    def slot_layers(self, layout: str | None = None) -> list[int]:
        """The physical block behind each virtual slot of ``layout`` (default: the active one)."""
        encoder, decoder = self.layouts[self.active_layout if layout is None else layout]
        return list(encoder) + list(decoder)

    def num_slots(self, layout: str | None = None) -> int:
        """How many blocks a forward runs: the number of adapter slots an AdapterSet needs."""
        return len(self.slot_layers(layout))

    # ---- forward ------------------------------------------------------------------------------

    def merge_skip(self, k: int, x: Tensor, skip: Tensor) -> Tensor:
        """Decoder position ``k``'s U-Net skip connection: ``x + w_k * skip`` or the technique's gate."""
        scaled = self.skip_weights[k].to(dtype=x.dtype)[None, None, :] * skip
        if self.skip_gates is None:
            return x + scaled
        return self.skip_gates(x, scaled, k)

    def hidden(
        self, input_ids: Tensor, adapters: AdapterSet | None = None, cu_seqlens: Tensor | None = None, max_seqlen: int = 0
    ) -> Tensor:
        """Final normed hidden states ``[B, T, C]``.

        With ``cu_seqlens`` (segment starts in the flattened ``B * T`` tokens, then the total; see
        ``golf_core.model.attention``) attention stays inside each segment: packed documents.
        """
        x = self.tok_emb(input_ids)
        for transform in self.embed_transforms:
            x = transform(x, input_ids)
        x = F.rms_norm(x, (x.size(-1),))
        x0 = x
        encoder, decoder = self.layouts[self.active_layout]
        if adapters is not None and len(adapters.slots) != len(encoder) + len(decoder):
            raise GolfError(
                f"the adapters have {len(adapters.slots)} slots but layout '{self.active_layout}' runs "
                f"{len(encoder) + len(decoder)} blocks; size them with model.num_slots()"
            )
        scope = self.attn_scope
        scope.cu_seqlens, scope.max_seqlen = cu_seqlens, max_seqlen
        lanes = self.lanes
        stream = x  # a tensor, or a tuple of lanes once a lanes module splits it
        skips: list = []
        for k, i in enumerate(encoder):
            slot = adapters.slots[k] if adapters is not None else None
            if lanes is not None and lanes.claims(i, True):
                stream = lanes(self.blocks[i], i, stream, x0, None, None, slot)
            else:
                stream = self.blocks[i](stream, x0, slot)
            skips.append(stream)
        for j, i in enumerate(decoder):
            slot = adapters.slots[len(encoder) + j] if adapters is not None else None
            skip = skips.pop() if skips else None
            if lanes is not None and lanes.claims(i, False):
                stream = lanes(self.blocks[i], i, stream, x0, skip, partial(self.merge_skip, j), slot)
            else:
                if skip is not None:
                    stream = self.merge_skip(j, stream, skip)
                stream = self.blocks[i](stream, x0, slot)
        x = lanes.readout(stream) if isinstance(stream, tuple) else stream
        scope.cu_seqlens, scope.max_seqlen = None, 0
        return self.final_norm(x)

    def head(self, h: Tensor, adapters: AdapterSet | None = None) -> Tensor:
        """Raw logits (before the softcap), plus the head adapter's delta when there is one."""
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(h, weight.to(h.dtype))
        if adapters is not None and adapters.head is not None:
            logits = logits + adapters.head(h)
        return logits

    def forward(
        self, input_ids: Tensor, target_ids: Tensor, adapters: AdapterSet | None = None,
        cu_seqlens: Tensor | None = None, max_seqlen: int = 0,
    ) -> Tensor:
        h = self.hidden(input_ids, adapters, cu_seqlens, max_seqlen)
        if adapters is None:
            logits = self.head(h.reshape(-1, h.size(-1)))
        else:  # head adapters see [B, T, C] (per-sequence LoRA is batched over B)
            logits = self.head(h, adapters).reshape(-1, self.spec.vocab_size)
        loss = self.loss_fn(logits, target_ids.reshape(-1), self.logit_softcap)
        if self.training:
            for term in self.loss_terms:
                loss = loss + term(h, target_ids)
        return loss

    def forward_logits(
        self, input_ids: Tensor, adapters: AdapterSet | None = None, cu_seqlens: Tensor | None = None, max_seqlen: int = 0
    ) -> Tensor:
        """Softcapped logits ``[B, T, V]`` in float32, for scoring."""
        logits = self.head(self.hidden(input_ids, adapters, cu_seqlens, max_seqlen), adapters).float()
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
