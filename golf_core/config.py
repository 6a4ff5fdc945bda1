"""The core sections of a stack file as frozen dataclasses, and the ``param()`` field helper.

A stack file has core tables (``[run]``, ``[data]``, ``[model]``, ``[train]``, ``[eval]``,
``[artifact]``) and one ``[techniques.<name>]`` table per technique. The core tables map onto the
dataclasses below; a technique's table maps onto its own ``Params`` dataclass. Both are built with
:func:`param`, which keeps the help text next to the default so ``golf show`` and the docs never
drift from the code.

Defaults are those of openai/parameter-golf's root ``train_gpt.py`` (the baseline), so an empty
stack trains the baseline. Technique knobs do not live here: they belong to the technique's Params.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any


def param(default: Any, help: str, *, choices: tuple | None = None) -> Any:
    """A dataclass field with a default and a one-line help text (shown by ``golf show``).

    Mutable defaults (lists, dicts) are copied per instance.
    """
    metadata = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    seed: int = param(1337, "random seed for weights and anything else seeded")
    seeds: list[int] = param([1337], "seeds a reproduction runs (golf ablate, records)")
    nproc_per_node: int = param(1, "processes per node when launched through torchrun")
    max_wallclock_seconds: float = param(600.0, "training wall-clock cap in seconds (0 = no cap)")
    eval_budget_seconds: float = param(600.0, "evaluation time budget in seconds")
    device: str = param("auto", "auto | cpu | cuda", choices=("auto", "cpu", "cuda"))
    compile: str = param("auto", "torch.compile the model: auto (on CUDA) | on | off", choices=("auto", "on", "off"))
    out_dir: str = param("runs", "directory that receives one run directory per run")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    dataset: str = param("sample", "shard directory (relative to the stack file), or 'sample' for the built-in corpus")
    tokenizer: str = param("", "SentencePiece model; empty = the dataset's tokenizer.model")
    val_tokens_limit: int = param(0, "score only the first N validation tokens (0 = all); for quick runs")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    vocab_size: int = param(1024, "embedding rows; the tokenizer's vocabulary must fit")
    num_layers: int = param(9, "transformer blocks")
    model_dim: int = param(512, "residual width")
    num_heads: int = param(8, "query heads")
    num_kv_heads: int = param(4, "key/value heads (grouped-query attention)")
    mlp_mult: float = param(2.0, "MLP hidden width as a multiple of model_dim")
    tie_embeddings: bool = param(True, "share the input embedding with the output head")
    tied_embed_init_std: float = param(0.005, "init std of the tied embedding")
    logit_softcap: float = param(30.0, "logits = c * tanh(logits / c)")
    rope_base: float = param(10000.0, "RoPE base frequency")
    qk_gain_init: float = param(1.5, "initial value of the learned per-head query gain")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    iterations: int = param(20000, "maximum optimizer steps")
    train_batch_tokens: int = param(524_288, "tokens per optimizer step, summed over ranks and micro-batches")
    train_seq_len: int = param(1024, "training sequence length")
    grad_accum_steps: int = param(0, "micro-batches per step; 0 = 8 // world_size as in the records")
    compile_warmup_steps: int = param(20, "steps run before the clock starts to compile; state restored after")
    train_log_every: int = param(200, "log the training loss every N steps (and the first 10)")
    val_loss_every: int = param(0, "evaluate every N steps during training (0 = only at the end)")
    val_batch_tokens: int = param(524_288, "tokens per evaluation batch, summed over ranks")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    seq_len: int = param(0, "evaluation sequence length (0 = train_seq_len)")
    pre_quant: bool = param(True, "also evaluate the unquantized model before export")


@dataclass(frozen=True, kw_only=True)
class ArtifactConfig:
    budget_bytes: int = param(16_000_000, "code bytes + compressed model bytes must not exceed this (decimal)")
    code_files: list[str] = param(
        ["bundle"],
        "what counts as shipped code: ['bundle'] = the train_gpt.py `golf bundle` writes for the stack (the modules "
        "a run imports); or paths under the repo root, 'plugins:enabled' for the enabled techniques",
    )


CORE_SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "artifact": ArtifactConfig,
}

# Tables that are documentation, not configuration: free-form, not type-checked beyond being tables.
FREEFORM_SECTIONS = ("stack", "provenance")


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def resolved_field_types(cls: type) -> dict[str, Any]:
    """Field name -> evaluated annotation (works with ``from __future__ import annotations``)."""
    import sys

    module = sys.modules.get(cls.__module__)
    localns = dict(vars(cls))
    hints = typing.get_type_hints(cls, globalns=vars(module) if module else None, localns=localns)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def type_name(tp: Any) -> str:
    if tp is float:
        return "float"
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def coerce_value(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` (as parsed from TOML) against annotation ``tp``.

    Returns ``(ok, converted)``. ints are accepted for floats (TOML writes ``1`` for ``1.0``);
    bools are never accepted as numbers. Lists are checked element by element and become tuples
    when the annotation is a tuple (frozen Params must stay hashable).
    """
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, converted = coerce_value(value, arg)
            if ok:
                return True, converted
        return False, value
    if tp is type(None):
        return value is None, value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item_tp = args[0] if args else Any
        items = []
        for item in value:
            ok, converted = coerce_value(item, item_tp)
            if not ok:
                return False, value
            items.append(converted)
        return True, (tuple(items) if origin is tuple else items)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def describe_fields(cls: type) -> list[dict[str, Any]]:
    """One dict per field: name, type, default, help, choices. Used by ``golf show`` and docs."""
    types_by_name = resolved_field_types(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = field_default(f)
        rows.append(
            {
                "name": f.name,
                "type": type_name(types_by_name[f.name]),
                "default": None if default is dataclasses.MISSING else default,
                "help": field_help(f),
                "choices": list(f.metadata.get("choices") or []) or None,
            }
        )
    return rows


@dataclass(frozen=True)
class CoreConfig:
    """The six core sections of a resolved stack."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    artifact: ArtifactConfig = field(default_factory=ArtifactConfig)
