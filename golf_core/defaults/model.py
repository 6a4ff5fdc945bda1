"""Core default model build: the baseline GPT."""

from __future__ import annotations

from golf_core.hookspecs import hookimpl
from golf_core.model.gpt import GPT
from golf_core.technique import Technique


class BaselineGPT(Technique):
    """Baseline GPT of openai/parameter-golf's root train_gpt.py, built from the ModelSpec."""

    name = "gpt"
    stage = "model"
    origin_pr = 18
    credits = "OpenAI parameter-golf baseline; modded-nanogpt (Keller Jordan et al.)"
    core_default = True

    @hookimpl(trylast=True)
    def golf_build_model(self, spec, ctx):
        return GPT(spec)
