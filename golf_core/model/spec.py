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

Block structure (one block implementation serves training, evaluation and test-time training):

``layouts``: alternative named ``(encoder, decoder)`` index lists; the model starts on the default
    layout above and ``GPT.set_layout(name)`` switches (depth recurrence turning its loop on). The
    model reads the name as a plain Python attribute, so ``torch.compile`` keeps one graph per layout,
    selected by a guard on that attribute: a switch costs nothing once every layout was compiled,
    which is what ``warmup_variants`` is for. The U-Net has ``max(min(len(enc), len(dec)))`` skip
    weights over all layouts (PR #1855 sizes them with the looped layout).
``warmup_variants``: ``name -> variant(model)`` returning a context manager that puts the model in
    another graph state (a layout) for the duration of a ``with`` block. The trainer's compile
    warm-up runs its steps once plainly and once inside each variant, then restores weights and
    optimizer state, so every graph the run will use is compiled before the clock starts.
``norm_scale``: ``f(layer_index) -> float``, a constant factor on both normed sublayer inputs of
    physical block ``layer_index`` (LN scale); ``None`` = 1 (no multiply at all).
``skip_gates``: ``factory(spec, num_skips) -> nn.Module`` stored as ``GPT.skip_gates``, with
    ``forward(x, scaled_skip, k) -> x``: how decoder position ``k`` merges its (weighted) U-Net skip
    into the stream; ``None`` = the baseline sum ``x + scaled_skip``.
``residual_lanes``: ``factory(spec) -> nn.Module | None`` stored as ``GPT.lanes``: a residual form
    other than the sequential block (parallel residuals). Contract, all Python decisions made at
    trace time:
    ``claims(layer_index, encoder: bool) -> bool`` whether the block at this position runs through
    the module; ``splits: bool`` True when the stream becomes a tuple of lanes (every later position
    must then be claimed as well; the model checks its layouts at build);
    ``forward(block, layer_index, stream, x0, skip, merge_skip, adapters) -> stream`` one position:
    ``stream`` is a tensor until the module first returns a tuple, ``skip`` the popped U-Net skip
    (a tensor, a tuple if an encoder position was split, or ``None``), ``merge_skip(lane, skip) -> lane``
    the model's skip connection for this position, ``adapters`` the slot's adapters (pass them to
    ``block.attn_branch`` / ``block.mlp_branch``); ``readout(stream) -> Tensor`` the single stream
    the final norm sees.
``loss_terms``: ``factory(spec) -> nn.Module`` with ``forward(h, target_ids) -> scalar``, stored in
    ``GPT.loss_terms`` and added to the training loss in training mode only (``h``: the final normed
    hidden states ``[B, T, C]``); training-only modules are removed by their technique at train end.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
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
    layouts: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    warmup_variants: dict[str, Callable[[Any], AbstractContextManager]] = field(default_factory=dict)
    norm_scale: Callable[[int], float] | None = None
    skip_gates: Callable[..., Any] | None = None
    residual_lanes: Callable[..., Any] | None = None
    loss_terms: list[Callable[..., Any]] = field(default_factory=list)
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

    def all_layouts(self) -> dict[str, tuple[list[int], list[int]]]:
        """Every layout the model can run: the default one under ``""``, then ``layouts``."""
        result = {"": self.layer_indices()}
        for name, (encoder, decoder) in self.layouts.items():
            result[name] = (list(encoder), list(decoder))
        return result

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
        for name, (encoder, decoder) in self.all_layouts().items():
            bad = [i for i in encoder + decoder if not 0 <= i < self.num_layers]
            where = f"layout '{name}'" if name else "layer indices"
            if bad:
                problems.append(f"{where}: indices {bad} are outside 0..{self.num_layers - 1}")
            if not encoder + decoder:
                problems.append(f"{where}: no blocks to run")
        if "" in self.layouts:
            problems.append("layouts: the name '' is the default layout; pick another name")
        return problems
