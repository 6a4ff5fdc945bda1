"""What a technique is: a class with metadata, a frozen ``Params`` dataclass and hook implementations.

A technique package holds one subclass of :class:`Technique`::

    class SmearGate(Technique):
        \"\"\"SmearGate: mix each token's embedding with its predecessor's. Origin PR #65 ...\"\"\"

        name = "smear_gate"
        stage = "model"
        origin_pr = 65

        @dataclass(frozen=True, kw_only=True)
        class Params:
            mask_bos: bool = param(True, "zero the previous-token term at BOS positions")

        @hookimpl
        def golf_model_spec(self, spec, ctx):
            spec.embed_transforms.append(...)

The manager instantiates it with the stack's ``[techniques.<name>]`` table and registers the
instance, so hook implementations read ``self.params`` and never global state.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import ClassVar

STAGES = ("data", "model", "optim", "loss", "quant", "eval")

# The four conditions of the community rules on eval-time adaptation (openai/parameter-golf #1017).
LEGALITY_CONDITIONS = {
    "C1": "causal: the distribution for token t depends only on tokens before t",
    "C2": "normalized: every scored distribution sums to 1 over the full vocabulary",
    "C3": "score before update: no adapter learns from a token before its score is fixed",
    "C4": "single pass: each validation token is scored exactly once",
}


@dataclass(frozen=True)
class Legality:
    """How a technique stands against the challenge's rules.

    ``reads`` names the data it touches beyond the training shards ("validation: already-scored
    tokens" for score-first TTT). ``breaks`` lists the conditions of :data:`LEGALITY_CONDITIONS`
    (or other rules, as free text) that it violates; a technique with a non-empty ``breaks`` stays
    reproducible and ``golf check`` reports the stack as non-compliant with ``reason``.
    """

    reads: tuple[str, ...] = ("train",)
    breaks: tuple[str, ...] = ()
    reason: str = ""

    @property
    def compliant(self) -> bool:
        return not self.breaks


class Technique:
    """Base class of every technique (and of the core defaults, which are techniques too)."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""
    origin_pr: ClassVar[int | None] = None
    credits: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    conflicts: ClassVar[tuple[str, ...]] = ()
    legality: ClassVar[Legality] = Legality()
    # Core defaults are registered in every run, marked trylast, and cannot be disabled.
    core_default: ClassVar[bool] = False
    version: ClassVar[str] = ""

    @dataclass(frozen=True, kw_only=True)
    class Params:
        pass

    def __init__(self, params: object | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def legality_for(cls, params: object) -> Legality:
        """The legality of this technique run with ``params``.

        Override when a parameter changes it (``ngram_mixer``'s ``normalize``); ``golf check`` and
        the scoring pass ask this with the stack's Params. The class attribute ``legality`` stays
        the worst case over all Params, which the catalog (``golf list``/``golf show``) displays.
        """
        return cls.legality

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def hook_names(cls) -> list[str]:
        return sorted(
            n for n, v in inspect.getmembers(cls) if n.startswith("golf_") and callable(v)
        )

    def __repr__(self) -> str:
        return f"<technique {self.name} {self.params!r}>"


__all__ = ["LEGALITY_CONDITIONS", "Legality", "STAGES", "Technique", "field"]
