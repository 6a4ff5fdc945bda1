"""Full-Hessian GPTQ with SDClip row scales: int6 block matrices, int7 embedding, int8 gates, fp16 small tensors.

Hessians ``H = X^T X`` of every quantized linear layer's input are collected from training batches
(never validation data) after training, inside the training wall-clock budget: the technique
reserves ``reserve_seconds`` that the trainer takes off its cap. Each large matrix is then
quantized column by column with GPTQ (act-order, damping 0.01, blocks of 128) on a per-row grid
``s_r = k * std(W_r) / (2^(bits-1) - 1)`` stored in float16. Tensors route by name as in the top
record: ``attn_gate_w`` gates -> int8 per row; small or non-float tensors -> float16 passthrough;
``tok_emb`` -> ``embed_bits`` / ``embed_clip_sigmas``; ``.mlp.`` and ``.attn.`` matrices -> their
family's sigmas at ``matrix_bits``; any other matrix -> ``matrix_clip_sigmas``.

Origin: full-Hessian GPTQ in parameter-golf PR #535 (raahilshah) / #634, first records #1019
(abaybektursun) and #1060; SDClip and GPTQ on embeddings PR #1394 (clarkkev); int7 embeddings,
per-family clip sigmas and trimmed calibration PR #1586 (dexhunter); int8 gate quantization PR
#1736 (dexhunter); sigmas of the top record PR #1855 (codemath3000).
Paper: Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers" (ICLR 2023).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from golf_core import hookimpl
from golf_core.config import param
from golf_core.model.gpt import is_control_tensor
from golf_core.quant.int8 import dtype_name, quantize_int8
from golf_core.quant.state import QuantizedTensor, QuantState
from golf_core.technique import Technique
from .gptq import (
    clip_range,
    fp16_positive,
    gaussian_code_bits,
    gptq_quantize_weight,
    round_to_nearest,
    sdclip_scale,
)
from .hessians import collect_hessians

RESERVE_KEY = "training_reserve_seconds"  # ctx.shared: seconds the trainer takes off its wall-clock cap


@dataclass(frozen=True)
class Route:
    """How one state-dict tensor is stored: ``kind`` in gate_int8 / passthrough / int8 / gptq."""

    kind: str
    bits: int = 0
    clip_sigmas: float = 0.0
    family: str = ""


class GPTQ(Technique):
    """Full-Hessian GPTQ with SDClip row scales: int6 block matrices, int7 embedding, int8 gates, fp16 small tensors.

    Origin PR #535/#1019 (GPTQ), #1394 (SDClip), #1586 (int7 embedding, per-family sigmas), #1855
    (sigmas used here). Paper: Frantar et al., GPTQ (2022). Credits: raahilshah, abaybektursun,
    clarkkev, dexhunter, codemath3000.
    """

    name = "gptq"
    stage = "quant"
    origin_pr = 1019
    credits = "raahilshah (PR #535), abaybektursun (#1019), clarkkev (SDClip, #1394), dexhunter (#1586, #1736), codemath3000 (#1855)"
    # estimate_tensor_bytes prices codes at their entropy: golf check labels the figure a compressed size.
    estimate_kind = "compressed"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        matrix_bits: int = param(6, "bits of the block matrices (int6: codes in [-31, 31])")
        embed_bits: int = param(7, "bits of the embedding matrices (int7: codes in [-63, 63])")
        matrix_clip_sigmas: float = param(12.85, "SDClip k for matrices of no named family")
        attn_clip_sigmas: float = param(13.0, "SDClip k for matrices whose name contains an attn pattern")
        mlp_clip_sigmas: float = param(11.5, "SDClip k for matrices whose name contains an mlp pattern")
        embed_clip_sigmas: float = param(14.0, "SDClip k for matrices whose name contains an embed pattern")
        embed_patterns: tuple[str, ...] = param(("tok_emb",), "name substrings of the embedding family")
        mlp_patterns: tuple[str, ...] = param((".mlp.",), "name substrings of the MLP family")
        attn_patterns: tuple[str, ...] = param((".attn.",), "name substrings of the attention family")
        calibration_batches: int = param(16, "training batches for the Hessians (0 = none: SDClip round-to-nearest)")
        reserve_seconds: float = param(0.5, "seconds taken off the training wall-clock cap for calibration and quantization")
        block_size: int = param(128, "GPTQ column block size")
        damp: float = param(0.01, "Hessian damping, as a fraction of mean(diag H)")
        act_order: bool = param(True, "quantize columns in descending diag(H) order")
        passthrough_max_numel: int = param(65_536, "float tensors with at most this many elements are stored unquantized")
        passthrough_dtype: str = param("float16", "storage dtype of passthrough tensors", choices=("float16", "bfloat16", "float32"))
        keep_control_fp32: bool = param(False, "store control tensors (scales, mixes, gains) in float32 like the baseline")
        gate_int8_patterns: tuple[str, ...] = param(("attn_gate_w",), "name substrings of gate matrices stored int8 per row (empty = none)")
        gate_int8_min_numel: int = param(32, "smallest gate matrix routed to int8 per row")
        gate_int8_max_numel: int = param(8192, "largest gate matrix routed to int8 per row")
        device: str = param("auto", "where GPTQ runs: auto = the run's device, cpu = on the CPU as the record does", choices=("auto", "cpu"))

        def validate(self) -> None:
            for key in ("matrix_bits", "embed_bits"):
                if not 2 <= getattr(self, key) <= 8:
                    raise ValueError(f"{key}={getattr(self, key)} must be between 2 and 8 (codes are stored in int8)")
            for key in ("matrix_clip_sigmas", "attn_clip_sigmas", "mlp_clip_sigmas", "embed_clip_sigmas"):
                if not getattr(self, key) > 0:
                    raise ValueError(f"{key}={getattr(self, key)} must be positive")
            if self.calibration_batches < 0:
                raise ValueError(f"calibration_batches={self.calibration_batches} must be >= 0")
            if self.reserve_seconds < 0:
                raise ValueError(f"reserve_seconds={self.reserve_seconds} must be >= 0")
            if self.block_size < 1:
                raise ValueError(f"block_size={self.block_size} must be >= 1")
            if not self.damp > 0:
                raise ValueError(f"damp={self.damp} must be positive")
            if self.gate_int8_min_numel > self.gate_int8_max_numel:
                raise ValueError(
                    f"gate_int8_min_numel={self.gate_int8_min_numel} exceeds gate_int8_max_numel={self.gate_int8_max_numel}"
                )

    # ---- routing ----------------------------------------------------------------------------

    def route(self, name: str, shape: tuple[int, ...], is_float: bool = True) -> Route:
        """The record's routing, in its order: gate int8, passthrough, then GPTQ by family."""
        p = self.params
        numel = math.prod(shape)
        if (
            is_float
            and len(shape) == 2
            and any(pat in name for pat in p.gate_int8_patterns)
            and p.gate_int8_min_numel <= numel <= p.gate_int8_max_numel
        ):
            return Route("gate_int8", 8)
        if not is_float or numel <= p.passthrough_max_numel:
            return Route("passthrough")
        if len(shape) != 2:
            return Route("int8", 8)  # a large non-matrix: no Hessian applies; int8 per tensor as the baseline
        if any(pat in name for pat in p.embed_patterns):
            return Route("gptq", p.embed_bits, p.embed_clip_sigmas, "embed")
        if any(pat in name for pat in p.mlp_patterns):
            return Route("gptq", p.matrix_bits, p.mlp_clip_sigmas, "mlp")
        if any(pat in name for pat in p.attn_patterns):
            return Route("gptq", p.matrix_bits, p.attn_clip_sigmas, "attn")
        return Route("gptq", p.matrix_bits, p.matrix_clip_sigmas, "matrix")

    def _passthrough_dtype(self, name: str) -> torch.dtype:
        if self.params.keep_control_fp32 and is_control_tensor(name):
            return torch.float32
        return getattr(torch, self.params.passthrough_dtype)

    def estimate_tensor_bytes(self, name: str, shape: tuple[int, ...]) -> int:
        """Expected bytes of one float tensor in the compressed artifact (for ``golf check``).

        GPTQ codes: their entropy under a Gaussian weight model (:func:`gaussian_code_bits`) plus
        one float16 scale per row; int8 gates and passthrough tensors at their raw size.
        """
        route = self.route(name, tuple(shape))
        numel = math.prod(shape)
        if route.kind == "passthrough":
            return numel * torch.empty(0, dtype=self._passthrough_dtype(name)).element_size()
        if route.kind == "gate_int8":
            return numel + 2 * shape[0]
        if route.kind == "int8":
            return numel + 4
        return math.ceil(numel * gaussian_code_bits(route.bits, route.clip_sigmas) / 8) + 2 * shape[0]

    # ---- hooks ------------------------------------------------------------------------------

    @hookimpl
    def golf_configure(self, ctx):
        # Techniques that need time after training add their reserve; the trainer subtracts the sum.
        ctx.shared[RESERVE_KEY] = float(ctx.shared.get(RESERVE_KEY, 0.0)) + self.params.reserve_seconds

    @hookimpl
    def golf_report_header(self, ctx):
        cap = ctx.cfg.run.max_wallclock_seconds
        if cap <= 0:
            return [f"gptq: reserve {self.params.reserve_seconds:g}s unused (no wall-clock cap)"]
        reserve = float(ctx.shared.get(RESERVE_KEY, 0.0))
        return [f"gptq: reserving {self.params.reserve_seconds:g}s, effective training cap={(cap - reserve) * 1000:.0f}ms"]

    @hookimpl
    def golf_quantize(self, model, calib, ctx):
        p = self.params
        state_dict = {k: v.detach() for k, v in model.state_dict().items()}
        routes = {name: self.route(name, tuple(t.shape), t.is_floating_point()) for name, t in state_dict.items()}
        targets = {name for name, r in routes.items() if r.kind == "gptq"}
        device = ctx.device
        t0 = time.perf_counter()
        hessians: dict[str, torch.Tensor] = {}
        n_batches = 0
        if p.calibration_batches > 0 and targets:
            hessians, n_batches = collect_hessians(model, calib.batches(p.calibration_batches), targets, device)
        hessian_seconds = time.perf_counter() - t0
        ctx.log(f"gptq: collected {len(hessians)} Hessians from {n_batches} training batches in {hessian_seconds:.1f}s")
        work_device = torch.device("cpu") if p.device == "cpu" else device

        t1 = time.perf_counter()
        state = QuantState(meta={"quantizer": "gptq"})
        for name, t in state_dict.items():
            state.entries[name] = self._quantize_one(name, t, routes[name], hessians.get(name), work_device)
        quant_seconds = time.perf_counter() - t1
        state.meta.update({"hessians": len(hessians), "calibration_batches": n_batches})
        ctx.log(
            f"gptq: quantized {len(targets)} matrices in {quant_seconds:.1f}s"
            + (f"; {calib.seconds_left():.1f}s of the training budget left" if math.isfinite(calib.seconds_left()) else "")
        )
        return state

    def _quantize_one(self, name: str, t: torch.Tensor, route: Route, H, work_device) -> QuantizedTensor:
        shape, orig = tuple(t.shape), dtype_name(t)
        if route.kind == "passthrough":
            value = t.to(self._passthrough_dtype(name)) if t.is_floating_point() else t
            value = value.cpu().contiguous()
            return QuantizedTensor("raw", shape, orig, {"value": value}, route=f"passthrough ({dtype_name(value)})")
        if route.kind == "gate_int8":
            w = t.float()
            scale = fp16_positive(w.abs().amax(dim=1) / 127.0)
            q = round_to_nearest(w, scale, 8)
            return QuantizedTensor(
                "int8_row", shape, orig, {"q": q.cpu().contiguous(), "scale": scale.cpu().contiguous()},
                route="gate_int8_row", meta={"method": "absmax", "bits": 8},
            )
        if route.kind == "int8":
            qt = quantize_int8(t.cpu())
            qt.dtype = orig
            return qt
        w = t.to(work_device)
        if H is not None:
            q, scale = gptq_quantize_weight(
                w, H.to(work_device), clip_sigmas=route.clip_sigmas, bits=route.bits,
                block_size=self.params.block_size, damp=self.params.damp, act_order=self.params.act_order,
            )
            method, label = "gptq", f"gptq (int{route.bits})"
        else:
            # No Hessian (calibration off, or a matrix no linear layer reads): GPTQ with H = I is
            # exactly round-to-nearest, so do that directly and say so in the route.
            scale = sdclip_scale(w, route.clip_sigmas, route.bits)
            q = round_to_nearest(w, scale, route.bits)
            method, label = "sdclip", f"sdclip rtn (int{route.bits})"
        return QuantizedTensor(
            "int8_row", shape, orig, {"q": q.cpu().contiguous(), "scale": scale.cpu().contiguous()},
            route=label,
            meta={"method": method, "bits": route.bits, "clip_sigmas": route.clip_sigmas, "family": route.family,
                  "clip_range": clip_range(route.bits)},
        )
