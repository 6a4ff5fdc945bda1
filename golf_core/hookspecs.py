"""Every hook golf calls, grouped by the phase of a run in which it is called.

A hook *builds* something while a run is being set up or between phases: a model spec edit, a
module, an optimizer, a loss callable, a quantized state, an eval adapter. Nothing calls a hook
inside the compiled training step; the step runs plain PyTorch that ``torch.compile`` traces once.

Calling conventions (stated again in each docstring):

* **every plugin, stack order** - all implementations run, in the order the techniques appear in
  the resolved stack (the manager registers in reverse so pluggy's LIFO order is stack order);
  core defaults run last.
* **firstresult** - the first non-``None`` result wins. The core default is marked
  ``trylast=True`` so any enabled technique overrides it; two enabled techniques implementing the
  same firstresult hook is an error raised when the manager is built (they would silently shadow
  each other).

Implementations may accept fewer arguments than the spec (pluggy passes by name). Every hook has a
heading with its exact signature in ``docs/hooks.md`` and a ``test_hook_<name>`` test; meta-tests
fail otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    import torch
    from torch import Tensor, nn

    from golf_core.context import RunContext
    from golf_core.eval.adapters import EvalAdapter
    from golf_core.model.spec import ModelSpec
    from golf_core.optim.bundle import OptimizerBundle
    from golf_core.quant.state import CalibrationData, QuantState

PROJECT_NAME = "golf"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

# Hooks whose result the core uses as "the" implementation. The manager refuses two enabled
# non-default implementations of any of these.
FIRSTRESULT_HOOKS: tuple[str, ...] = (
    "golf_data_loader",
    "golf_build_model",
    "golf_orthogonalizer",
    "golf_build_optimizer",
    "golf_lr_schedule",
    "golf_loss_fn",
    "golf_quantize",
    "golf_serialize",
    "golf_deserialize",
)


# ---------------------------------------------------------------------------------------------
# Set-up: once per run, after the plugin manager is built and before any data is read.
# ---------------------------------------------------------------------------------------------


@hookspec
def golf_configure(ctx: RunContext) -> None:
    """Check assumptions and prepare shared state before anything is built.

    Runs once per run, first of all hooks, after the stack is validated and the plugin manager is
    built; the tokenizer and byte table are already on ``ctx``.

    Convention: every plugin, stack order. Return value ignored. Raise
    :class:`golf_core.errors.GolfError` to refuse the run with a one-line reason (for example a
    technique that needs CUDA, or a tokenizer it cannot work with).
    """


@hookspec
def golf_report_header(ctx: RunContext) -> list[str] | None:
    """Lines to print at the top of the run log, after the resolved stack and plugin versions.

    Runs once per run, right after :func:`golf_configure`.

    Convention: every plugin, stack order. Return a list of strings (or ``None``); the core
    concatenates all lists in stack order.
    """


@hookspec
def golf_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``golf`` command line.

    Runs when the CLI starts, once per installed plugin class (built-in or from the
    ``golf.plugins`` entry-point group), with no run context; the plugin is instantiated with its
    default Params for this call.

    Convention: every plugin. Return value ignored; call ``cli.command()`` / ``cli.add_command``.
    """


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def golf_data_loader(ctx: RunContext) -> Any | None:
    """Return the training-batch loader for this rank.

    Runs once per run, after the model is built and before the compile warm-up, and again after
    the warm-up to restart the stream from its beginning.

    Convention: firstresult; core default (``trylast``) is the challenge's sequential
    ``DistributedTokenLoader`` over ``ctx.train_files``. The returned object must have
    ``next_batch(global_tokens: int, seq_len: int, grad_accum_steps: int)`` returning ``(x, y)``,
    two int64 tensors of shape ``[batch, seq_len]`` already on ``ctx.device``, or
    ``(x, y, attn_meta)``: ``x``/``y`` of any ``[batch, T]`` shape with ``batch * T`` the rank's
    micro-batch tokens, and ``attn_meta`` a small dict of keyword arguments the trainer passes to
    the model's forward, ``model(x, y, **attn_meta)``; the baseline model understands
    ``cu_seqlens`` (int32 segment starts in the flattened tokens, then their total) and
    ``max_seqlen`` (a Python int): attention stays inside each segment (document packing,
    ``golf_core.model.attention``). Calibration gets such batches cut into ``[rows, seq_len]``
    without the metadata. Optionally the loader has ``warmup_batches(global_tokens, seq_len,
    grad_accum_steps)`` yielding batches of every ``attn_meta`` shape it can produce; the compile
    warm-up runs each forward and backward once per graph variant so no shape compiles on the clock.
    """


# ---------------------------------------------------------------------------------------------
# Model build
# ---------------------------------------------------------------------------------------------


@hookspec
def golf_model_spec(spec: ModelSpec, ctx: RunContext) -> None:
    """Edit the declarative :class:`~golf_core.model.spec.ModelSpec` before the model is built.

    Runs once per run, before :func:`golf_build_model`. The spec starts from the stack's
    ``[model]`` table and already carries ``loss_fn`` from :func:`golf_loss_fn`. Techniques set
    fields or append module factories; the extension points (contracts in
    ``golf_core.model.spec``): ``rope_dims``, ``mlp_activation``, ``embed_transforms``,
    ``value_transforms``, ``attn_output_transforms``, ``encoder_indices`` / ``decoder_indices``,
    ``layouts`` (named block orders, switched with ``GPT.set_layout`` / ``GPT.use_layout``),
    ``warmup_variants`` (graph states the compile warm-up runs in), ``norm_scale``,
    ``skip_gates``, ``residual_lanes``, ``loss_terms`` and ``extras`` (free space for cooperating
    techniques).

    Convention: every plugin, stack order; edit ``spec`` in place. Return value ignored.
    """


@hookspec(firstresult=True)
def golf_build_model(spec: ModelSpec, ctx: RunContext) -> nn.Module | None:
    """Construct the model from the finished spec.

    Runs once per run, after every :func:`golf_model_spec`. The model is built on CPU in float32;
    the core moves it to the device, sets dtypes and compiles it afterwards.

    Convention: firstresult; core default (``trylast``) is the baseline GPT of
    ``golf_core.model.gpt``. The module must implement ``forward(input_ids, target_ids) -> loss``
    (mean cross-entropy in nats) and ``forward_logits(input_ids) -> logits``; with a data loader
    that returns ``attn_meta`` its forward must also accept those keyword arguments.
    """


@hookspec
def golf_patch_model(model: nn.Module, ctx: RunContext) -> None:
    """Module surgery the spec cannot express, on the built float32 CPU model.

    Runs once per run, after :func:`golf_build_model` and before the optimizer is built, so any
    parameter added here is trained.

    Convention: every plugin, stack order; modify ``model`` in place. Return value ignored.
    """


# ---------------------------------------------------------------------------------------------
# Loss kernel
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def golf_loss_fn(ctx: RunContext) -> Callable[[Tensor, Tensor, float], Tensor] | None:
    """Return the training loss ``loss_fn(logits, targets, softcap) -> mean loss``.

    Runs once per run, before the model is built; the model calls the returned function inside its
    compiled forward, so it must be traceable by ``torch.compile(fullgraph=True)`` (a plain torch
    function or a registered custom op). ``logits`` are the raw head outputs ``[N, vocab]``
    (before the softcap), ``targets`` are ``[N]`` int64; the result is the mean over ``N`` of
    ``cross_entropy(softcap * tanh(logits / softcap), targets)`` in nats.

    Convention: firstresult; core default (``trylast``) is the eager softcapped cross-entropy.
    Evaluation always scores with the eager reference, so a kernel only changes training speed.
    """


# ---------------------------------------------------------------------------------------------
# Optimizer step and schedule
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def golf_orthogonalizer(ctx: RunContext) -> Callable[[Tensor, int], Tensor] | None:
    """Return the map ``orthogonalize(G, steps) -> ~U V^T`` that Muon applies to each update.

    Runs once per run, before :func:`golf_build_optimizer`; the optimizer compiles it once.

    Convention: firstresult; core default (``trylast``) is the quintic Newton-Schulz iteration
    with the fixed coefficients (3.4445, -4.7750, 2.0315). ``G`` is a 2-D float tensor; the
    result has its shape and dtype bfloat16 or float32.
    """


@hookspec(firstresult=True)
def golf_build_optimizer(model: nn.Module, ctx: RunContext) -> OptimizerBundle | None:
    """Build the optimizers for ``model`` (the uncompiled module, already on its device).

    Runs once per run, after :func:`golf_patch_model`.

    Convention: firstresult; core default (``trylast``) is Muon for block matrices plus Adam for
    embeddings, head and scalars, grouped by parameter role (``golf_core.optim.roles``). Return an
    :class:`~golf_core.optim.bundle.OptimizerBundle`; the trainer sets each group's ``lr`` to
    ``base_lr * lr_schedule(progress)`` before every step and calls ``bundle.step(step)``.
    """


@hookspec(firstresult=True)
def golf_lr_schedule(ctx: RunContext) -> Callable[[float], float] | None:
    """Return the learning-rate multiplier as a pure function of training progress in [0, 1].

    Runs once per run, before training. Progress is elapsed training wall-clock over the cap when
    the run has a cap, else step over iterations.

    Convention: firstresult; core default (``trylast``) is constant 1 followed by a linear
    warm-down over the last ``warmdown_iters`` steps (or ``warmdown_frac`` of progress).
    Techniques that only reshape the default (a floor, say) should wrap it with
    ``@hookimpl(wrapper=True)`` instead of replacing it.
    """


@hookspec
def golf_after_optimizer_step(step: int, model: nn.Module, optimizer: OptimizerBundle, ctx: RunContext) -> None:
    """React to a finished optimizer step (EMA update, switching a layer loop on).

    Runs after every optimizer step, in eager Python outside the compiled step, with ``step``
    the number of steps completed. Not called during the compile warm-up. Keep it cheap: it runs
    thousands of times; plugins that do nothing should not implement it.

    Convention: every plugin, stack order. Return value ignored. ``model`` is the uncompiled
    module. A plugin that changes what the compiled graph computes does it through tensors the
    graph already reads; or by switching to a pre-warmed layout: registered in
    :func:`golf_model_spec` as ``spec.layouts[name]`` with a ``spec.warmup_variants`` entry (so
    the compile warm-up compiled it), then ``model.set_layout(name)`` here, which costs no
    compilation (``depth_recurrence``); or, for changes dynamo does not guard on, by
    ``ctx.request_recompile()``, after which the trainer resets dynamo and the step re-traces on
    the clock. Under torchrun every rank must make the same switch at the same step (decide
    through a collective).
    """


@hookspec
def golf_train_end(model: nn.Module, ctx: RunContext) -> None:
    """Finish training: swap in averaged weights, drop training-only modules.

    Runs once, after the last training step and before calibration and quantization.

    Convention: every plugin, stack order; edit ``model`` in place. Return value ignored.
    """


# ---------------------------------------------------------------------------------------------
# Post-train quantization and serialization
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def golf_quantize(model: nn.Module, calib: CalibrationData, ctx: RunContext) -> QuantState | None:
    """Quantize the trained model's weights.

    Runs once, after :func:`golf_train_end`, inside the training time budget. ``calib`` yields
    batches of *training* tokens for Hessian collection (never validation tokens).

    Convention: firstresult; core default (``trylast``) is int8 per-row with fp16 passthrough of
    small tensors. Return a :class:`~golf_core.quant.state.QuantState` whose every entry records
    its route (scheme, bits) for the artifact report. The implementing technique may define a
    plain method ``estimate_tensor_bytes(name, shape) -> int`` for ``golf check``'s size estimate,
    and the class attribute ``estimate_kind``: ``"payload"`` (default; raw payload bytes before
    compression) or ``"compressed"`` (expected bytes in the compressed artifact, as ``gptq``).
    """


@hookspec
def golf_refine_quant(qstate: QuantState, model: nn.Module, calib: CalibrationData, ctx: RunContext) -> None:
    """Refine a quantized state in place (low-rank error correction, re-quantizing gates).

    Runs once, after :func:`golf_quantize` and before :func:`golf_serialize`.

    Convention: every plugin, stack order; edit ``qstate`` in place. Return value ignored.
    """


@hookspec(firstresult=True)
def golf_serialize(qstate: QuantState, ctx: RunContext) -> bytes | None:
    """Turn the quantized state into the compressed model bytes that count against the budget.

    Runs once, after every :func:`golf_refine_quant`.

    Convention: firstresult; core default (``trylast``) is a byte stream of the state compressed
    with brotli. The blob must start with a format tag that the matching
    :func:`golf_deserialize` recognizes.
    """


@hookspec(firstresult=True)
def golf_deserialize(blob: bytes, ctx: RunContext) -> QuantState | None:
    """Inverse of :func:`golf_serialize`: rebuild the quantized state from the artifact bytes.

    Runs once per rank when the artifact is reloaded for evaluation (every rank reads the bytes
    rank 0 wrote).

    Convention: firstresult; each serializer returns ``None`` for blobs whose format tag is not
    its own; the core default (``trylast``) reads the brotli format. Must be bit-exact:
    ``deserialize(serialize(q)) == q``.
    """


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@hookspec
def golf_eval_adapters(model: nn.Module, ctx: RunContext) -> EvalAdapter | None:
    """Return an adapter that takes part in the final scoring pass, or ``None``.

    Runs once, after the artifact is reloaded and before the final scoring pass. The core owns
    the pass; an adapter takes roles by class attribute (:mod:`golf_core.eval.adapters`):
    ``provides_plan`` -> ``plan(session)`` (which windows, at most one adapter); ``owns_forward``
    -> ``forward(model, batch)`` (the scored positions' logits, at most one);
    ``changes_distribution`` -> ``adjust_logprobs(logprobs, batch, stream)`` (normalized over the
    vocabulary, from the prefix only: C1, C2); ``learns`` -> ``learn(scored)`` after the step's
    scores are fixed (C3), with ``chunk_tokens`` asking for chunk ends; ``target_only`` ->
    ``adjust_target_logprob(...)``, only for a technique that declares it breaks C2. Each target
    is scored once (C4).

    Convention: every plugin, stack order; the core composes the returned adapters in that order.
    """
