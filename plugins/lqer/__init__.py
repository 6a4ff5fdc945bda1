"""LQER: rank-4 correction of the GPTQ error on the top-3 worst matrices, packed int2 (A) x int4 (B).

After GPTQ, every GPTQ-quantized matrix is ranked by the Frobenius norm of its error
``E = W - Q s``; the ``top_k`` largest get ``E ~ A @ B`` from a rank-``rank`` SVD, stored
asymmetrically: ``A`` in int2 (codes -2..1, one float16 scale), ``B`` in int4 (codes -8..7, one float16
scale per ``asym_group`` elements). The reloaded weight is ``Q s + (q_A s_A) @ (q_B s_B)``. In the
top record this picked ``tok_emb.weight`` and two ``blocks.*.mlp.fc.weight``.

Origin: parameter-golf PR #1797 (dexhunter; its code calls it a "PR #1530 v2 port"), first merged in
record #1851, used by #1855. Paper: Zhang et al., "LQER: Low-Rank Quantization Error
Reconstruction for LLMs" (ICML 2024).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from golf_core import hookimpl
from golf_core.config import param
from golf_core.technique import Technique

from .lqer import attach

# Entries LQER may refine: GPTQ outputs (and GPTQ's round-to-nearest fallback), marked by gptq's meta.
CANDIDATE_METHODS = ("gptq", "sdclip")


class LQER(Technique):
    """LQER: rank-4 correction of the GPTQ error on the top-3 worst matrices, packed int2 (A) x int4 (B).

    Origin PR #1797 (dexhunter), records #1851 and #1855. Paper: Zhang et al., LQER (2024).
    """

    name = "lqer"
    stage = "quant"
    origin_pr = 1797
    credits = "dexhunter (PR #1797); LQER paper by Cheng Zhang, Jianyi Cheng, George A. Constantinides, Yiren Zhao"
    # The record computes LQER inside GPTQ's mixed quantizer, on GPTQ outputs only.
    requires = ("gptq",)

    @dataclass(frozen=True, kw_only=True)
    class Params:
        rank: int = param(4, "rank of the error correction A @ B")
        top_k: int = param(3, "number of matrices corrected, largest Frobenius error first")
        asym: bool = param(True, "asymmetric packing: A int2 with one scale, B int4 group-wise")
        asym_group: int = param(64, "B elements per float16 scale in the asymmetric packing")
        factor_bits: int = param(4, "bits of both factors in the symmetric per-row fallback")

        def validate(self) -> None:
            if self.rank < 1:
                raise ValueError(f"rank={self.rank} must be >= 1")
            if self.top_k < 0:
                raise ValueError(f"top_k={self.top_k} must be >= 0")
            if self.asym_group < 1:
                raise ValueError(f"asym_group={self.asym_group} must be >= 1")
            if not 2 <= self.factor_bits <= 8:
                raise ValueError(f"factor_bits={self.factor_bits} must be between 2 and 8")

    def errors(self, qstate, model) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, W - deq(Q))`` (float32, CPU) for every candidate entry of ``qstate``, one at a time."""
        weights = model.state_dict()
        for name, qt in qstate:
            if qt.meta.get("method") in CANDIDATE_METHODS and len(qt.shape) == 2 and name in weights:
                yield name, weights[name].detach().float().cpu() - qt.dequantize().float()

    @hookimpl
    def golf_refine_quant(self, qstate, model, calib, ctx):
        p = self.params
        if p.top_k == 0:
            return
        t0 = time.perf_counter()
        # Rank by error norm first and keep only the winners' E (all of them would double memory).
        norms = {name: float(E.norm()) for name, E in self.errors(qstate, model)}
        chosen = sorted(norms, key=lambda n: -norms[n])[: p.top_k]
        weights = model.state_dict()
        for name in chosen:
            qt = qstate.entries[name]
            E = weights[name].detach().float().cpu() - qt.dequantize().float()
            qstate.entries[name] = attach(qt, E, rank=p.rank, asym=p.asym, group=p.asym_group, factor_bits=p.factor_bits)
        ctx.log(
            f"lqer: rank-{p.rank} corrections on {', '.join(chosen) or 'nothing'} in {time.perf_counter() - t0:.1f}s"
        )
