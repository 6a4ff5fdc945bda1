"""The model: a declarative :class:`ModelSpec` that plugins edit, and the baseline GPT built from it."""

from golf_core.model.spec import ModelSpec

__all__ = ["ModelSpec"]
