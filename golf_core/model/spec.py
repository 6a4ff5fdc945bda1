"""ModelSpec: the declarative description of the model that ``golf_model_spec`` hooks edit.

It starts as a copy of the stack's ``[model]`` table. Techniques change scalar fields
(``rope_dims``, ``mlp_activation``) or append *module factories* to the extension lists; the
builder calls each factory once per place it applies and stores the module in the model, so a
technique's parameters are ordinary named parameters (trained, quantized and saved like any
other) and its code runs inside the compiled forward with no hook call.

Extension points and the forward contract of the modules they produce:

``embed_transforms``: ``factory(spec) -> nn.Module`` with ``forward(x, input_ids) -> x``,
    applied in order to the token embeddings before the first block (x: ``[B, T, C]``).
``attn_output_transforms``: ``factory(spec, layer_index) -> nn.Module | None`` with
    ``forward(y, v, x) -> y``, applied in order to each attention's per-head output before the
    output projection; ``y``: ``[B, T, H, D]``, ``v``: the values ``[B, T, H_kv, D]``, ``x``: the
    normed block input ``[B, T, C]``. Return ``None`` to skip a layer.
``value_transforms``: ``factory(spec, layer_index) -> nn.Module | None`` with
    ``forward(v, x) -> v``, applied in order to each attention's values ``[B, T, H_kv, D]`` (the V
    projection's output per KV head) before attention; the output transforms see the result.
    ``x``: the normed block input ``[B, T, C]``. Return ``None`` to skip a layer.
``encoder_indices`` / ``decoder_indices``: which physical blocks run, in order, in the two
    halves of the U-Net (a block may appear more than once: depth recurrence). ``None`` means the
    baseline split ``[0, L//2)`` / ``[L//2, L)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from golf_core.config import ModelConfig


def relu_squared(x: Tensor) -> Tensor:
    """The baseline MLP activation: relu(x)^2 (modded-nanogpt)."""
    import torch

    return torch.relu(x).square()


@dataclass
class ModelSpec:
    vocab_size: int
    num_layers: int
    model_dim: int
    num_heads: int
    num_kv_heads: int
    mlp_mult: float
    tie_embeddings: bool
    tied_embed_init_std: float
    logit_softcap: float
    rope_base: float
    qk_gain_init: float
    rope_dims: int = 0  # rotate only the first rope_dims dims of each head; 0 = all
    mlp_activation: Callable[[Tensor], Tensor] = relu_squared
    embed_transforms: list[Callable[..., Any]] = field(default_factory=list)
    attn_output_transforms: list[Callable[..., Any]] = field(default_factory=list)
    value_transforms: list[Callable[..., Any]] = field(default_factory=list)
    encoder_indices: list[int] | None = None
    decoder_indices: list[int] | None = None
    loss_fn: Callable[[Tensor, Tensor, float], Tensor] | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # free space for cooperating techniques

    @classmethod
    def from_config(cls, model: ModelConfig) -> ModelSpec:
        return cls(
            vocab_size=model.vocab_size,
            num_layers=model.num_layers,
            model_dim=model.model_dim,
            num_heads=model.num_heads,
            num_kv_heads=model.num_kv_heads,
            mlp_mult=model.mlp_mult,
            tie_embeddings=model.tie_embeddings,
            tied_embed_init_std=model.tied_embed_init_std,
            logit_softcap=model.logit_softcap,
            rope_base=model.rope_base,
            qk_gain_init=model.qk_gain_init,
        )

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)

    def layer_indices(self) -> tuple[list[int], list[int]]:
        n_enc = self.num_layers // 2
        encoder = self.encoder_indices if self.encoder_indices is not None else list(range(n_enc))
        decoder = self.decoder_indices if self.decoder_indices is not None else list(range(n_enc, self.num_layers))
        return list(encoder), list(decoder)

    def check(self) -> list[str]:
        """Problems that make the spec unbuildable, as messages naming the ``[model]`` key."""
        problems = []
        if self.model_dim % self.num_heads:
            problems.append(f"model.model_dim={self.model_dim} is not divisible by model.num_heads={self.num_heads}")
        elif self.head_dim % 2:
            problems.append(f"head dim {self.head_dim} must be even for RoPE; change model.model_dim or model.num_heads")
        if self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            problems.append(f"model.num_heads={self.num_heads} is not divisible by model.num_kv_heads={self.num_kv_heads}")
        if self.logit_softcap <= 0:
            problems.append(f"model.logit_softcap must be positive, got {self.logit_softcap}")
        if self.rope_dims < 0 or self.rope_dims % 2 or (self.model_dim % self.num_heads == 0 and self.rope_dims > self.head_dim):
            problems.append(f"rope_dims={self.rope_dims} must be even and at most the head dim")
        encoder, decoder = self.layer_indices()
        bad = [i for i in encoder + decoder if not 0 <= i < self.num_layers]
        if bad:
            problems.append(f"layer indices {bad} are outside 0..{self.num_layers - 1}")
        return problems
