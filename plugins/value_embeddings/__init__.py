"""Value-embeddings technique package: the plugin class; the modules live in ``module.py``."""

from __future__ import annotations

from dataclasses import dataclass

from golf_core import hookimpl
from golf_core.config import param
from golf_core.errors import GolfError
from golf_core.technique import Technique

from plugins.value_embeddings.module import ValueEmbeddingBuild, ValueEmbeddingLayer, ValueEmbeddingSource


class ValueEmbeddings(Technique):
    """Value embeddings: add a shared token embedding ve_scale * s_l * proj(E_v[ids]) to the attention values of chosen layers.

    One table E_v [V, dim] ~ N(0, 0.01) -> projection dim -> kv_dim (orthogonal / sqrt(2L), the
    records' effective init) -> shared scalar (init 0.1) -> per-layer scalar s_l (init 1.0), added to
    the V projection of each chosen physical layer before attention (XSA and the output gates then
    see the new values). Reinjects token identity deep in the network.
    Origin PR #374 (vadim borisov, @unnir); VE128 on layers 9, 10 through PR #1019 and PR #1487;
    removed in PR #1394. Not in the top record.
    """

    name = "value_embeddings"
    stage = "model"
    origin_pr = 374
    credits = "vadim borisov @unnir (PR #374)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        dim: int = param(128, "table width (VE_DIM); projected to the KV width unless equal to it")
        layers: tuple[int, ...] = param((9, 10), "physical layers whose values get the embedding (VE_LAYERS); negative = from the end")
        scale_init: float = param(0.1, "initial value of the shared output scale (0 = the identity)")

        def validate(self) -> None:
            if self.dim < 1:
                raise ValueError(f"dim={self.dim} must be at least 1")
            if not self.layers:
                raise ValueError("layers is empty; list at least one layer or disable the technique")

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        p = self.params
        n = spec.num_layers
        bad = [i for i in p.layers if not -n <= i < n]
        if bad:
            raise GolfError(
                f"techniques.value_embeddings.layers={list(p.layers)}: {bad} outside the {n} layers "
                f"(model.num_layers={n}); use indices 0..{n - 1} or -{n}..-1"
            )
        resolved = frozenset(i % n for i in p.layers)
        if len(resolved) != len(p.layers):
            raise GolfError(f"techniques.value_embeddings.layers={list(p.layers)} names a layer twice; list each once")
        build = ValueEmbeddingBuild(dim=p.dim, scale_init=p.scale_init, layers=resolved)
        spec.value_transforms.append(build.layer)
        spec.embed_transforms.append(build.embed)

    @hookimpl
    def golf_patch_model(self, model, ctx):
        # Safety net for the build order the factories assume (layers first, embedding stage last):
        # every layer must read the table the model registered.
        registered = {id(m) for m in model.modules() if isinstance(m, ValueEmbeddingSource)}
        layers = [m for m in model.modules() if isinstance(m, ValueEmbeddingLayer)]
        if not layers or any(id(m._source[0]) not in registered for m in layers):
            raise GolfError(
                "value_embeddings: the model did not register the value-embedding table its layers read; "
                "the builder must create attention layers before embed_transforms"
            )


__all__ = ["ValueEmbeddings", "ValueEmbeddingLayer", "ValueEmbeddingSource"]
