"""BigramHash technique package: the plugin class; the module lives in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from golf_core import hookimpl
from golf_core.config import param
from golf_core.data.shards import BOS_ID
from golf_core.technique import Technique

from plugins.bigram_hash.module import BigramHashEmbedding, build_bigram_hash


class BigramHash(Technique):
    """BigramHash embedding: add scale * proj(E[hash(prev, cur)]) to each token embedding (BOS-masked).

    h_t = (36313 t_t XOR 27191 t_{t-1}) mod (M-1) into a zero-initialised table E [M, dim]; bucket M-1
    at row position 0 and at every BOS, so no document sees the previous one. Then a projection to
    the model width (orthogonal / sqrt(2L), as the records effectively initialised it) and a learned
    scalar (init 0.05); added before the embedding RMSNorm. Optional trigram hash in the same table.
    Origin PR #162 (@raahilshah; concept from PR #65); 3072 x 112 from the PR #1019 record
    (AR self-gen GPTQ + XSA-all + BigramHash, abaybektursun), base of PR #1430. Not in the top record.
    """

    name = "bigram_hash"
    stage = "model"
    origin_pr = 162
    credits = "@raahilshah (PR #162); PR #65 (first hashed bigram table); abaybektursun (3072 x 112)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        buckets: int = param(3072, "hash table rows M (BIGRAM_VOCAB_SIZE); bucket M-1 is reserved for 'no previous token'")
        dim: int = param(112, "table width (BIGRAM_DIM); projected to model_dim unless equal to it")
        scale_init: float = param(0.05, "initial value of the learned output scale")
        trigram: bool = param(False, "also hash (t-2, t-1, t) into the same table (TRIGRAM)")

        def validate(self) -> None:
            if self.buckets < 2:
                raise ValueError(f"buckets={self.buckets} must be at least 2 (one is reserved)")
            if self.dim < 1:
                raise ValueError(f"dim={self.dim} must be at least 1")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        p = self.params
        spec.embed_transforms.append(
            partial(build_bigram_hash, buckets=p.buckets, dim=p.dim, scale_init=p.scale_init, trigram=p.trigram, bos_id=BOS_ID)
        )


__all__ = ["BigramHash", "BigramHashEmbedding"]
