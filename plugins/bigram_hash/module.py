"""The BigramHash embedding transform."""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor, nn

from golf_core.model.gpt import CastedLinear
from golf_core.optim.roles import set_role

# Hash multipliers of the records (PR #162 lineage).
MUL_CUR, MUL_PREV, MUL_PREV2 = 36313, 27191, 51497


class BigramHashEmbedding(nn.Module):
    """``forward(x, input_ids)``: x + scale * proj(E[h(ids)]) with h_t = (36313 t_t XOR 27191 t_{t-1}) mod (M-1).

    The reserved bucket M-1 stands for "no previous token in this document": position 0 of a row and
    every BOS position (so the last token of document N never reaches document N+1). With
    ``trigram`` the pair hash is joined by (36313 t_t ^ 27191 t_{t-1} ^ 51497 t_{t-2}) mod (M-1) into the
    same table, reserved where the window would cross a BOS. Hashes are computed in int64 (the
    records' int32 arithmetic gives the same buckets for every vocabulary below 59,139 tokens).
    """

    def __init__(
        self, buckets: int, dim: int, model_dim: int, num_layers: int, scale_init: float = 0.05,
        trigram: bool = False, bos_id: int = 1,
    ) -> None:
        super().__init__()
        self.buckets = buckets
        self.trigram = trigram
        self.bos_id = bos_id
        # Zero table: the transform adds exactly 0 at init.
        self.bigram_embed = nn.Embedding(buckets, dim, _weight=torch.zeros(buckets, dim))
        set_role(self.bigram_embed.weight, "embed")  # the token-embedding Adam group, as in the records
        if dim != model_dim:
            self.bigram_proj = CastedLinear(dim, model_dim, bias=False)
            # The records' effective init (their generic _init_weights overwrote the zero init):
            # orthogonal, scaled by 1/sqrt(2L) like every ".proj".
            with torch.no_grad():
                nn.init.orthogonal_(self.bigram_proj.weight, gain=1.0)
                self.bigram_proj.weight.mul_(1.0 / math.sqrt(2 * num_layers))
            set_role(self.bigram_proj.weight, "matrix")  # Muon, as in the records
        else:
            self.bigram_proj = None
        self.bigram_scale = set_role(nn.Parameter(torch.full((1,), scale_init, dtype=torch.float32)), "scalar")

    def bucket_ids(self, input_ids: Tensor) -> Tensor | list[Tensor]:
        """Bucket of every position ``[B, T]`` (a list of two with ``trigram``)."""
        t = input_ids.to(torch.int64)
        reserved = self.buckets - 1
        pair = torch.bitwise_xor(MUL_CUR * t[:, 1:], MUL_PREV * t[:, :-1]) % reserved
        pair = pair.masked_fill(t[:, 1:] == self.bos_id, reserved)
        pair = torch.cat((torch.full_like(t[:, :1], reserved), pair), dim=1)
        if not self.trigram:
            return pair
        triple = torch.bitwise_xor(torch.bitwise_xor(MUL_CUR * t[:, 2:], MUL_PREV * t[:, 1:-1]), MUL_PREV2 * t[:, :-2]) % reserved
        triple = triple.masked_fill((t[:, 2:] == self.bos_id) | (t[:, 1:-1] == self.bos_id), reserved)
        triple = torch.cat((torch.full_like(t[:, :2], reserved), triple), dim=1)
        return [pair, triple]

    def forward(self, x: Tensor, input_ids: Tensor) -> Tensor:
        buckets = self.bucket_ids(input_ids)
        if self.trigram:
            h = self.bigram_embed(buckets[0]) + self.bigram_embed(buckets[1])
        else:
            h = self.bigram_embed(buckets)
        if self.bigram_proj is not None:
            h = self.bigram_proj(h)
        return x + h * self.bigram_scale.to(dtype=h.dtype)


def build_bigram_hash(spec, *, buckets: int, dim: int, scale_init: float, trigram: bool, bos_id: int) -> BigramHashEmbedding:
    """Embed-transform factory, built under a private RNG stream so the core's parameters are
    initialised exactly as without it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + zlib.crc32(b"bigram_hash")) % 2**63)
        return BigramHashEmbedding(
            buckets, dim, spec.model_dim, spec.num_layers, scale_init=scale_init, trigram=trigram, bos_id=bos_id
        )
