"""Value embeddings: a shared token table added to the attention values of selected layers."""

from __future__ import annotations

import math
import zlib
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from golf_core.model.gpt import CastedLinear
from golf_core.optim.roles import set_role


class TokenIds:
    """The current forward's token ids, shared by the source module and the per-layer modules.

    The attention never receives the ids; the embedding stage does. The source module records them
    there (a plain dict write, which torch.compile traces as a side effect inside the same graph) and
    the per-layer modules read them back later in the same forward. Only the int ids are kept
    between forwards, never an activation.
    """

    def __init__(self) -> None:
        self.current: dict[str, Tensor] = {}


class ValueEmbeddingSource(nn.Module):
    """Embed transform that owns the shared table: ``forward(x, input_ids)`` records the ids, returns ``x``.

    ``embedding(ids) = ve_scale * ve_proj(ve_embed[ids])``: ``ve_embed`` [V, dim] ~ N(0, 0.01),
    ``ve_proj`` dim -> kv_dim (orthogonal / sqrt(2L), the records' effective init), ``ve_scale`` 0.1.
    """

    def __init__(self, vocab_size: int, dim: int, kv_dim: int, num_layers: int, scale_init: float, ids: TokenIds) -> None:
        super().__init__()
        self.ids = ids
        self.ve_embed = nn.Embedding(vocab_size, dim)
        with torch.no_grad():
            nn.init.normal_(self.ve_embed.weight, mean=0.0, std=0.01)
        set_role(self.ve_embed.weight, "embed")  # the token-embedding Adam group, as in the records
        if dim != kv_dim:
            self.ve_proj = CastedLinear(dim, kv_dim, bias=False)
            with torch.no_grad():
                nn.init.orthogonal_(self.ve_proj.weight, gain=1.0)
                self.ve_proj.weight.mul_(1.0 / math.sqrt(2 * num_layers))
            set_role(self.ve_proj.weight, "matrix")  # Muon, as in the records
        else:
            self.ve_proj = None
        self.ve_scale = set_role(nn.Parameter(torch.full((1,), scale_init, dtype=torch.float32)), "scalar")

    def forward(self, x: Tensor, input_ids: Tensor) -> Tensor:
        self.ids.current["ids"] = input_ids
        return x

    def embedding(self, input_ids: Tensor) -> Tensor:
        h = self.ve_embed(input_ids)
        if self.ve_proj is not None:
            h = self.ve_proj(h)
        return h * self.ve_scale.to(dtype=h.dtype)


class ValueEmbeddingLayer(nn.Module):
    """Value transform of one layer: ``forward(v, x)`` = v + ve_layer_scale * embedding(ids), per KV head.

    Holds the source in a tuple (not a submodule) so the shared table is registered, trained and
    saved once, under ``embed_transforms``. The embedding is recomputed per layer (a gather and a
    dim x kv_dim matmul) rather than cached, so no activation outlives the forward.
    """

    def __init__(self, source: ValueEmbeddingSource, layer_scale_init: float = 1.0) -> None:
        super().__init__()
        self._source = (source,)
        self.ve_layer_scale = set_role(nn.Parameter(torch.full((1,), layer_scale_init, dtype=torch.float32)), "scalar")

    def forward(self, v: Tensor, x: Tensor) -> Tensor:
        source = self._source[0]
        ve = source.embedding(source.ids.current["ids"]) * self.ve_layer_scale.to(dtype=v.dtype)
        return v + ve.to(dtype=v.dtype).reshape(v.shape)


class ValueEmbeddingBuild:
    """Factories of one technique instance, sharing the source between the layers and the embedding stage.

    The core builds the attention layers before the embedding stage: the first layer that needs the
    source creates it (pending), and the embed-transform factory takes the pending source and
    registers it, so every model built from the spec gets its own table.
    """

    def __init__(self, *, dim: int, scale_init: float, layers: frozenset[int]) -> None:
        self.dim, self.scale_init, self.layers = dim, scale_init, layers
        self._pending: ValueEmbeddingSource | None = None

    def _source(self, spec) -> ValueEmbeddingSource:
        if self._pending is None:
            with private_rng("value_embeddings:source"):
                self._pending = ValueEmbeddingSource(
                    spec.vocab_size, self.dim, spec.num_kv_heads * spec.head_dim, spec.num_layers, self.scale_init, TokenIds()
                )
        return self._pending

    def layer(self, spec, layer_index: int) -> ValueEmbeddingLayer | None:
        """``value_transforms`` factory."""
        if layer_index not in self.layers:
            return None
        source = self._source(spec)
        with private_rng(f"value_embeddings:layer:{layer_index}"):
            return ValueEmbeddingLayer(source)

    def embed(self, spec) -> ValueEmbeddingSource:
        """``embed_transforms`` factory: registers the source (and records the ids each forward)."""
        source, self._pending = self._source(spec), None
        return source


@contextmanager
def private_rng(tag: str):
    """Draw from a private stream seeded from the run seed and ``tag``, then restore the global RNG:
    the core's parameters initialised after these modules come out identical with or without them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + zlib.crc32(tag.encode())) % 2**63)
        yield
