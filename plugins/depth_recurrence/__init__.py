"""Depth recurrence technique package: the plugin class and the layout rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.technique import Technique

LOOPED = "looped"


def looped_layout(num_layers: int, loop_start: int, loop_end: int, num_loops: int) -> tuple[list[int], list[int]]:
    """PR #1855's rule: run ``[loop_start..loop_end]`` ``num_loops + 1`` times, split the sequence in half.

    ``order = [0..loop_start) + [loop_start..loop_end] * (num_loops + 1) + (loop_end..num_layers)``;
    the encoder is ``order[:len // 2]``, the decoder the rest. For (11 layers, 3, 5, 2):
    encoder ``[0, 1, 2, 3, 4, 5, 3, 4]``, decoder ``[5, 3, 4, 5, 6, 7, 8, 9, 10]``.
    """
    segment = list(range(loop_start, loop_end + 1))
    order = list(range(loop_start)) + segment * (num_loops + 1) + list(range(loop_end + 1, num_layers))
    n_encoder = len(order) // 2
    return order[:n_encoder], order[n_encoder:]


def use_looped_layout(model):
    """The warm-up variant: run the model looped inside a ``with`` block."""
    return model.use_layout(LOOPED)


class DepthRecurrence(Technique):
    """Depth recurrence: run physical layers [loop_start, loop_end] num_loops extra times once training passes enable_at.

    The looped layout (PR #1855: layers 3-5 three times, 17 virtual blocks, encoder
    ``[0,1,2,3,4,5,3,4]``, decoder ``[5,3,4,5,6,7,8,9,10]``) shares the weights of the repeated
    blocks; the U-Net gets ``min(len(enc), len(dec))`` skip weights of the looped layout (8), of which
    the plain layout uses the first ``L // 2``. Training starts plain and switches, one way, after
    the first optimizer step whose training progress reaches ``enable_at``; evaluation, calibration
    and TTT always run looped (switched on at train end). Both graphs are compiled in the trainer's
    warm-up (a warm-up variant), and the model selects its layout by a Python attribute that
    ``torch.compile`` guards on, so the switch costs no recompilation and no hook call in the step.
    Origin PR #1204 (msisovic, layers 4-5); Loop45 x2 PR #1394 (clarkkev); layers 3-5 PR #1331/#1437
    (dexhunter); activation at 0.35 PR #1420 (abaybektursun); records PR #1493, #1530 -> PR #1855.
    """

    name = "depth_recurrence"
    stage = "model"
    origin_pr = 1204
    credits = "msisovic (PR #1204); clarkkev (PR #1394); dexhunter (PR #1331/#1437); abaybektursun (PR #1420)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        loop_start: int = param(3, "first physical layer of the repeated segment (LOOP_START)")
        loop_end: int = param(5, "last physical layer of the repeated segment, inclusive (LOOP_END)")
        num_loops: int = param(2, "extra passes through the segment (NUM_LOOPS): 2 = three passes")
        enable_at: float = param(0.35, "training progress at which the loop switches on (ENABLE_LOOPING_AT); 0 = from the start")

        def validate(self) -> None:
            if self.loop_start < 0 or self.loop_end < self.loop_start:
                raise ValueError(f"need 0 <= loop_start <= loop_end, got loop_start={self.loop_start} loop_end={self.loop_end}")
            if self.num_loops < 1:
                raise ValueError(f"num_loops={self.num_loops} must be at least 1; to turn the loop off, disable the technique")
            if not 0.0 <= self.enable_at <= 1.0:
                raise ValueError(f"enable_at={self.enable_at} must lie in [0, 1]")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        p = self.params
        if p.loop_end >= spec.num_layers:
            raise GolfError(
                f"techniques.depth_recurrence.loop_end={p.loop_end} is not a layer of a {spec.num_layers}-layer model; "
                f"use at most {spec.num_layers - 1}"
            )
        spec.layouts[LOOPED] = looped_layout(spec.num_layers, p.loop_start, p.loop_end, p.num_loops)
        spec.warmup_variants[self.name] = use_looped_layout

    @hookimpl
    def golf_patch_model(self, model, ctx):
        if not hasattr(model, "set_layout"):
            raise GolfError("depth_recurrence needs a model with layouts (golf_core.model.gpt.GPT); the model builder in this stack has none")
        if self.params.enable_at <= 0.0:
            model.set_layout(LOOPED)

    @hookimpl
    def golf_report_header(self, ctx):
        p = self.params
        encoder, decoder = looped_layout(ctx.cfg.model.num_layers, p.loop_start, p.loop_end, p.num_loops)
        return [f"depth_recurrence: layers {p.loop_start}-{p.loop_end} x{p.num_loops + 1} from progress {p.enable_at}: encoder {encoder} decoder {decoder}"]

    @hookimpl
    def golf_after_optimizer_step(self, step, model, optimizer, ctx):
        if model.active_layout == LOOPED:
            return
        if ctx.cfg.run.max_wallclock_seconds > 0:
            # Wall-clock runs: the progress measured at the start of the step just taken, so the
            # loop starts one step after the one PR #1855 would loop (it decides before its step).
            progress = ctx.progress
        else:
            progress = step / max(ctx.cfg.train.iterations, 1)  # exactly the next step's progress
        switch = progress >= self.params.enable_at
        if ctx.distributed:  # ranks time themselves; all switch together or none does
            flag = torch.tensor(int(switch), device=ctx.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            switch = bool(flag.item())
        if switch:
            model.set_layout(LOOPED)
            ctx.log(f"depth_recurrence: loop on after step {step} (progress {progress:.3f}), {model.num_slots()} blocks per pass")

    @hookimpl
    def golf_train_end(self, model, ctx):
        if model.active_layout != LOOPED:
            model.set_layout(LOOPED)
            ctx.log("depth_recurrence: loop on at train end (evaluation and quantization run looped)")


__all__ = ["DepthRecurrence", "LOOPED", "looped_layout"]
