"""Core default optimizer step: quintic Newton-Schulz, Muon + Adam by parameter role, linear warm-down."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from golf_core.config import param
from golf_core.hookspecs import hookimpl
from golf_core.optim.bundle import OptimizerBundle
from golf_core.optim.muon import Muon
from golf_core.optim.newton_schulz import newton_schulz5
from golf_core.optim.roles import params_by_role
from golf_core.technique import Technique


class NewtonSchulz(Technique):
    """Quintic Newton-Schulz orthogonalizer with fixed coefficients (3.4445, -4.7750, 2.0315)."""

    name = "newton_schulz"
    stage = "optim"
    origin_pr = 18
    credits = "Keller Jordan (Muon, modded-nanogpt)"
    core_default = True

    @hookimpl(trylast=True)
    def golf_orthogonalizer(self, ctx):
        return newton_schulz5


class MuonAdam(Technique):
    """Muon for block matrices; Adam for the embedding, the untied head and scalar/control tensors.

    Parameters are grouped by role (``golf_core.optim.roles``): ``matrix`` -> Muon at
    ``matrix_lr``; ``embed`` -> AdamW at ``tied_embed_lr`` (``embed_lr`` when untied) with
    ``embed_weight_decay``; ``head`` -> AdamW at ``head_lr`` without decay; ``scalar`` -> AdamW at
    ``scalar_lr`` with ``scalar_weight_decay``. Defaults are the baseline's (root ``train_gpt.py``,
    where Adam has no decay: AdamW with 0 decay is the same update); the help texts name the
    records' values, which stack files set. Every decoupled decay multiplies by the *scheduled* lr
    (``1 - lr*wd``), in Muon as in torch's AdamW, as the records do. MuonEq-R row normalization is
    the ``muon_eq_r`` technique, which switches on the Muon groups' ``row_normalize`` option.
    """

    name = "muon"
    stage = "optim"
    origin_pr = 18
    credits = "Keller Jordan (Muon); OpenAI parameter-golf baseline"
    core_default = True

    @dataclass(frozen=True, kw_only=True)
    class Params:
        matrix_lr: float = param(0.04, "Muon learning rate of block matrices (MATRIX_LR; records 0.026)")
        momentum: float = param(0.95, "Muon momentum after warm-up (MUON_MOMENTUM; records 0.97)")
        momentum_warmup_start: float = param(0.85, "Muon momentum at step 0, ramped linearly to `momentum` (records 0.92)")
        momentum_warmup_steps: int = param(500, "steps of the linear momentum ramp: m = (1-f)*start + f*momentum, f = min(step/N, 1) (records 1500)")
        nesterov: bool = param(True, "Nesterov momentum in Muon: orthogonalize G + momentum*buf instead of buf")
        backend_steps: int = param(5, "orthogonalizer iterations per update (MUON_BACKEND_STEPS)")
        weight_decay: float = param(0.0, "Muon decoupled weight decay: W *= 1 - lr*wd before the update, lr the scheduled lr (MUON_WD; records 0.095)")
        embed_lr: float = param(0.6, "Adam learning rate of an untied input embedding")
        tied_embed_lr: float = param(0.05, "Adam learning rate of the tied embedding (TIED_EMBED_LR; records 0.03)")
        head_lr: float = param(0.008, "Adam learning rate of an untied output head")
        scalar_lr: float = param(0.04, "Adam learning rate of scalars, gains, mixes and gates (SCALAR_LR; records 0.02)")
        beta1: float = param(0.9, "Adam beta1 (all Adam groups)")
        beta2: float = param(0.95, "Adam beta2 (all Adam groups; records 0.99)")
        adam_eps: float = param(1e-8, "Adam epsilon")
        embed_weight_decay: float = param(0.0, "AdamW decoupled weight decay of the embedding: W *= 1 - lr*wd, scheduled lr (EMBED_WD; records 0.085)")
        scalar_weight_decay: float = param(0.0, "AdamW decoupled weight decay of scalars: W *= 1 - lr*wd, scheduled lr (ADAM_WD; records 0.02)")
        grad_clip_norm: float = param(0.0, "clip the global gradient norm of all parameters before the step (0 = off; records 0.3)")

        def validate(self) -> None:
            for key in ("momentum", "momentum_warmup_start", "beta1", "beta2"):
                if not 0.0 <= getattr(self, key) < 1.0:
                    raise ValueError(f"{key} = {getattr(self, key)} must lie in [0, 1)")
            for key in ("matrix_lr", "embed_lr", "tied_embed_lr", "head_lr", "scalar_lr", "adam_eps",
                        "weight_decay", "embed_weight_decay", "scalar_weight_decay", "grad_clip_norm"):
                if getattr(self, key) < 0:
                    raise ValueError(f"{key} = {getattr(self, key)} must not be negative")
            if self.backend_steps < 1:
                raise ValueError(f"backend_steps = {self.backend_steps} must be at least 1")
            if self.momentum_warmup_steps < 0:
                raise ValueError(f"momentum_warmup_steps = {self.momentum_warmup_steps} must not be negative")

    @hookimpl(trylast=True)
    def golf_build_optimizer(self, model, ctx):
        p = self.params
        groups = params_by_role(model)
        fused = ctx.device.type == "cuda"
        tied = getattr(getattr(model, "spec", None), "tie_embeddings", True)

        def adam(named, lr, wd):
            return torch.optim.AdamW(
                [{"params": [t for _, t in named], "lr": lr, "base_lr": lr}],
                betas=(p.beta1, p.beta2), eps=p.adam_eps, weight_decay=wd, fused=fused,
            )

        orthogonalize = ctx.pm.hook.golf_orthogonalizer(ctx=ctx)
        if ctx.device.type == "cuda" and ctx.cfg.run.compile != "off":
            orthogonalize = torch.compile(orthogonalize)
        optimizers = []
        if groups["embed"]:
            optimizers.append(adam(groups["embed"], p.tied_embed_lr if tied else p.embed_lr, p.embed_weight_decay))
        if groups["head"]:
            optimizers.append(adam(groups["head"], p.head_lr, 0.0))
        if groups["matrix"]:
            muon = Muon(
                [t for _, t in groups["matrix"]], lr=p.matrix_lr, momentum=p.momentum, backend_steps=p.backend_steps,
                orthogonalize=orthogonalize, nesterov=p.nesterov, weight_decay=p.weight_decay,
            )
            for group in muon.param_groups:
                group.update(
                    base_lr=p.matrix_lr, momentum_target=p.momentum,
                    momentum_warmup_start=p.momentum_warmup_start, momentum_warmup_steps=p.momentum_warmup_steps,
                )
            optimizers.append(muon)
        if groups["scalar"]:
            optimizers.append(adam(groups["scalar"], p.scalar_lr, p.scalar_weight_decay))
        return OptimizerBundle(optimizers, params=[t for _, t in model.named_parameters()], grad_clip_norm=p.grad_clip_norm)


class Warmdown(Technique):
    """LR multiplier 1 then a linear warm-down to 0 over the end of training.

    With ``warmdown_frac > 0`` (the records' WARMDOWN_FRAC, 0.85 in PR #1855) the multiplier is
    ``1`` for progress ``< 1 - frac`` and ``(1 - progress) / frac`` after: a pure function of
    progress. With ``warmdown_frac = 0`` it is the baseline's WARMDOWN_ITERS rule, converted to
    progress with the measured step time under a wall-clock cap. The ``min_lr`` technique adds the
    records' floor.
    """

    name = "warmdown"
    stage = "optim"
    origin_pr = 18
    core_default = True

    @dataclass(frozen=True, kw_only=True)
    class Params:
        warmdown_iters: int = param(1200, "warm-down length in steps (used when warmdown_frac is 0)")
        warmdown_frac: float = param(0.0, "warm-down length as a fraction of training progress (0 = use warmdown_iters)")
        warmup_steps: int = param(0, "linear LR warm-up from 0 over the first N steps (not in the baseline or records)")

        def validate(self) -> None:
            if not 0.0 <= self.warmdown_frac <= 1.0:
                raise ValueError(f"warmdown_frac = {self.warmdown_frac} must lie in [0, 1]")
            if self.warmdown_iters < 0 or self.warmup_steps < 0:
                raise ValueError("warmdown_iters and warmup_steps must not be negative")

    @hookimpl(trylast=True)
    def golf_lr_schedule(self, ctx):
        p = self.params
        iterations = ctx.cfg.train.iterations

        def warmdown_fraction() -> float:
            if p.warmdown_frac > 0:
                return p.warmdown_frac
            if p.warmdown_iters <= 0:
                return 0.0
            # Under a wall-clock cap the baseline converts warm-down steps to time with the
            # measured average step time; ctx.shared["est_total_steps"] is that estimate.
            total = ctx.shared.get("est_total_steps", iterations) or iterations
            # Not capped at 1: with warmdown_iters > iterations the baseline starts below full LR
            # ((iterations - step) / warmdown_iters), and so does this.
            return p.warmdown_iters / max(total, 1)

        def lr_multiplier(progress: float) -> float:
            mult = 1.0
            if p.warmup_steps > 0 and ctx.step < p.warmup_steps:
                mult = (ctx.step + 1) / p.warmup_steps
            frac = warmdown_fraction()
            if frac > 0 and progress >= 1.0 - frac:
                mult *= max(1.0 - progress, 0.0) / frac
            return mult

        return lr_multiplier
