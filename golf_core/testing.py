"""Helpers for testing techniques in isolation (for plugin authors and golf's own tests).

``micro_stack()`` is a resolved stack small enough to train a few steps on CPU in seconds;
``make_ctx()`` a RunContext around it (no data read); ``make_pm()`` a checked plugin manager with
just the techniques you name; ``run_micro()`` a whole run (train, quantize, reload, score) in a
temporary directory, returning the report.

Example, in ``plugins/my_gate/test_my_gate.py``::

    from golf_core.testing import run_micro

    def test_trains_end_to_end(tmp_path):
        report = run_micro(tmp_path, enable=["my_gate"])
        assert report["steps"] == 3 and report["val_bpb"] < 20
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from golf_core.catalog import Catalog, load_catalog
from golf_core.context import RunContext
from golf_core.stack import ResolvedStack, resolve

# Overrides that make any stack a few-second CPU run on the built-in sample corpus.
MICRO_OVERRIDES: tuple[str, ...] = (
    "run.device='cpu'",
    "run.max_wallclock_seconds=0",
    "run.eval_budget_seconds=600",
    "data.dataset='sample'",
    "data.val_tokens_limit=2048",
    "model.vocab_size=1024",
    "model.num_layers=2",
    "model.model_dim=64",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "train.iterations=3",
    "train.train_batch_tokens=1024",
    "train.train_seq_len=128",
    "train.grad_accum_steps=1",
    "train.compile_warmup_steps=0",
    "train.train_log_every=1",
    "train.val_batch_tokens=2048",
)

_CATALOG: Catalog | None = None


def catalog() -> Catalog:
    """The catalog of built-in techniques and core defaults (cached per process)."""
    global _CATALOG
    if _CATALOG is None:
        _CATALOG = load_catalog()
    return _CATALOG


def micro_stack(
    enable: list[str] | tuple[str, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    path: str | Path | None = None,
) -> ResolvedStack:
    """A validated micro stack with ``enable`` switched on and ``overrides`` (``a.b=V``) applied last."""
    return resolve(path, catalog(), overrides=[*MICRO_OVERRIDES, *overrides], enable=list(enable))


def make_pm(stack: ResolvedStack | None = None, extra_plugins: list | tuple = ()):
    """A checked plugin manager for ``stack`` (default: the micro stack) plus throwaway plugins."""
    from golf_core.manager import make_plugin_manager

    return make_plugin_manager(stack or micro_stack(), catalog(), list(extra_plugins))


def make_ctx(stack: ResolvedStack | None = None, pm=None, **fields: Any) -> RunContext:
    """A RunContext on CPU with no data loaded; pass fields (``tokenizer=...``) to fill in more."""
    stack = stack or micro_stack()
    ctx = RunContext(stack=stack, device=torch.device("cpu"), pm=pm if pm is not None else make_pm(stack), log=lambda msg, console=True: None)
    for key, value in fields.items():
        setattr(ctx, key, value)
    return ctx


def build_model(stack: ResolvedStack | None = None, seed: int = 0):
    """Run the model-build hooks of ``stack`` and return ``(model, spec, ctx)`` on CPU, float32."""
    from golf_core.model.spec import ModelSpec

    torch.manual_seed(seed)
    ctx = make_ctx(stack)
    pm = ctx.pm
    spec = ModelSpec.from_config(ctx.cfg.model)
    spec.loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
    pm.hook.golf_model_spec(spec=spec, ctx=ctx)
    model = pm.hook.golf_build_model(spec=spec, ctx=ctx)
    pm.hook.golf_patch_model(model=model, ctx=ctx)
    return model, spec, ctx


def run_micro(
    tmp_path: Path,
    enable: list[str] | tuple[str, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    path: str | Path | None = None,
    extra_plugins: list | tuple = (),
) -> dict[str, Any]:
    """Train, quantize, reload and score a micro stack; returns the report dict."""
    from golf_core.train import train

    stack = micro_stack(enable, [f"run.out_dir='{Path(tmp_path).as_posix()}'", *overrides], path=path)
    run_dir = Path(tmp_path) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(stack, catalog(), run_dir=run_dir, extra_plugins=list(extra_plugins), quiet=True)
